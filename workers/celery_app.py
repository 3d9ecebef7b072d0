"""The Celery application: Redis broker and result backend, JSON only, crash-safe delivery.

Start a worker with ``atc-wsi worker`` or ``celery -A workers.celery_app worker -Q analysis,io``.
The configuration is read from ``workers.settings.load_settings()`` (YAML + ``ATC_*``
environment) the first time the app needs it.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu.entity import Exchange, Queue

from workers.pacs_settings import PacsSettings
from workers.service_settings import ServiceSettings

#: Task names (the API and CLI send tasks by name, so they never import the worker code).
ANALYZE_TASK = "atc.analyze"
THUMBNAIL_TASK = "atc.thumbnail"
EXPAND_BATCH_TASK = "atc.expand_batch"
POLL_PACS_TASK = "atc.poll_pacs"


def beat_schedule(service: ServiceSettings, pacs: PacsSettings | None) -> dict[str, Any]:
    """Return the beat schedule: poll the DICOMweb archives every ``pacs.poll_s`` (io queue)."""
    if pacs is None or not pacs.beat or not pacs.archives:
        return {}
    options = {"queue": service.io_queue}
    return {"atc-poll-pacs": {"task": POLL_PACS_TASK, "schedule": pacs.poll_s, "options": options}}


def celery_config(service: ServiceSettings, pacs: PacsSettings | None = None) -> dict[str, Any]:
    """Return the Celery configuration for these service settings (and PACS polling)."""
    transport = {
        "visibility_timeout": service.visibility_timeout_s,
        "global_keyprefix": service.key_prefix,  # one Redis, many deployments, no shared keys
    }
    return {
        "broker_url": service.broker_url,
        "result_backend": service.result_backend,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": transport,
        "result_backend_transport_options": transport,
        "task_soft_time_limit": service.soft_time_limit_s,
        "task_time_limit": service.hard_time_limit_s,
        "task_default_queue": service.analysis_queue,
        "task_queues": tuple(
            Queue(q, Exchange(q, type="direct"), routing_key=q)
            for q in (service.analysis_queue, service.io_queue)
        ),
        "task_routes": {
            ANALYZE_TASK: {"queue": service.analysis_queue},
            THUMBNAIL_TASK: {"queue": service.io_queue},
            EXPAND_BATCH_TASK: {"queue": service.io_queue},
            POLL_PACS_TASK: {"queue": service.io_queue},
        },
        "beat_schedule": beat_schedule(service, pacs),
        "task_ignore_result": True,  # the job store is the record of outcomes
        "result_expires": 24 * 3600,
        "worker_concurrency": service.worker_concurrency,
        "worker_send_task_events": True,  # Flower
        "task_send_sent_event": True,
        "broker_connection_retry_on_startup": True,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "enable_utc": True,
    }


def create_app(service: ServiceSettings | None = None) -> Celery:
    """Create a Celery app; without ``service`` it configures itself from ``load_settings()``."""
    app = Celery("atc_wsi", include=["workers.tasks"])
    if service is not None:
        app.conf.update(celery_config(service))
        return app

    def _lazy_config() -> dict[str, Any]:
        # Evaluated by Celery while it loads its configuration (the first send or worker start).
        # An ``on_configure`` handler that updates ``conf`` re-enters that loading and raised
        # RecursionError on the first submission of ``serve`` and ``watch``.
        from workers.jobs import get_context

        ctx = get_context()
        return celery_config(ctx.service, ctx.settings.pacs)

    app.add_defaults(_lazy_config)
    return app


app = create_app()
