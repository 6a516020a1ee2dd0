"""Readiness (`/v1/health/ready`) over real HTTP: an SMTP server that accepts connections but never speaks, a
working one, and a disk whose free space is below the threshold; always answered within 1 s."""

from __future__ import annotations

import time

import pytest

from customs.api import create_app
from customs.api.routers import service
from customs.core.settings import configure
from tests.helpers import SilentListener, SmtpServer, served_api


@pytest.fixture
def api(settings):
    service._smtp_seen.clear()
    with served_api(create_app()) as client:
        yield client
    service._smtp_seen.clear()


def _ready(api) -> tuple[dict, float]:
    started = time.perf_counter()
    response = api.get("/v1/health/ready")
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    return response.json(), elapsed


def test_an_smtp_server_that_accepts_but_never_greets_is_down_within_the_second(settings, api):
    hung = SilentListener()
    try:
        configure(settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": hung.port}))
        body, elapsed = _ready(api)
        assert elapsed < 1.0, elapsed
        assert body["status"] == "degraded"
        assert body["dependencies"]["smtp"]["state"] == "down"
        assert "no SMTP greeting" in body["dependencies"]["smtp"]["detail"]
        again, elapsed = _ready(api)  # remembered for a few seconds: the next probe costs nothing
        assert elapsed < 0.3 and again["dependencies"]["smtp"] == body["dependencies"]["smtp"]
    finally:
        hung.close()


def test_an_smtp_server_that_answers_is_up(settings, api):
    server = SmtpServer().start()
    try:
        configure(settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": server.port}))
        body, _ = _ready(api)
        assert body["status"] == "ready", body
        assert body["dependencies"]["smtp"]["state"] == "up"
    finally:
        server.stop()


def test_low_free_space_on_the_outbox_or_data_disk_is_degraded_with_the_figure(settings, api):
    body, _ = _ready(api)
    disk = body["dependencies"]["disk"]
    assert body["status"] == "ready" and disk["state"] == "up"
    free = min(disk["free_mb"].values())
    configure(settings.model_copy(update={"health_min_free_mb": int(free) + 1024 * 1024}))  # more than this disk has
    body, elapsed = _ready(api)
    assert elapsed < 1.0
    disk = body["dependencies"]["disk"]
    assert body["status"] == "degraded" and disk["state"] == "low"
    assert "MiB free, below" in disk["detail"] and disk["threshold_mb"] == int(free) + 1024 * 1024
    assert str(settings.data_dir) in disk["free_mb"]
