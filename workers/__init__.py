"""atc-wsi service layer: Celery workers, job store, HTTP API, watch folder and CLI."""
