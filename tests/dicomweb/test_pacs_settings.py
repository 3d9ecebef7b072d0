"""The ``pacs:`` section: typed, validated, outside the analysis hash, and the beat schedule."""

from __future__ import annotations

import pytest

from workers.celery_app import POLL_PACS_TASK, celery_config
from workers.settings import SettingsError, load_settings

LAB = {"name": "lab", "base_url": "http://pacs:8042/dicom-web/", "username": "atc"}


def test_archives_load_into_typed_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_PW", "s3cret")
    archive = {**LAB, "password_env": "LAB_PW", "filters": {"StudyDescription": "thyroid*"}}
    settings = load_settings(environ={}, overrides={"pacs": {"archives": [archive]}})
    lab = settings.pacs.archive(None)
    assert lab.base_url == "http://pacs:8042/dicom-web" and lab.password() == "s3cret"
    assert lab.filters == {"StudyDescription": "thyroid*"} and lab.store_results
    assert settings.config_hash() == load_settings(environ={}).config_hash()  # not analysis


@pytest.mark.parametrize(
    ("archives", "message"),
    [
        ([{**LAB, "pasword_env": "X"}], "pasword_env"),
        ([LAB, LAB], "unique"),
        ([{**LAB, "base_url": "pacs:8042"}], "http://"),
        ([{**LAB, "name": "a b"}], "name"),
    ],
)
def test_bad_archive_settings_are_refused(archives: list[dict[str, str]], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(environ={}, overrides={"pacs": {"archives": archives}})


def test_stable_polls_needs_two_polls() -> None:
    with pytest.raises(SettingsError, match="stable_polls"):
        load_settings(environ={}, overrides={"pacs": {"stable_polls": 1}})


def test_beat_polls_only_configured_archives() -> None:
    none = load_settings(environ={})
    assert celery_config(none.service, none.pacs)["beat_schedule"] == {}
    lab = load_settings(environ={}, overrides={"pacs": {"archives": [LAB], "poll_s": 30}})
    (entry,) = celery_config(lab.service, lab.pacs)["beat_schedule"].values()
    assert entry["task"] == POLL_PACS_TASK and entry["schedule"] == 30
    assert entry["options"]["queue"] == lab.service.io_queue
