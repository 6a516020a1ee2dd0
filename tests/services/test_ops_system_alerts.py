"""Issue 26: alerts about the service itself reach a person. Prefect's lost state (rebuilt by a host) and a
restore found at start were recorded in `customs ops` only; they now go to the operations mailbox too, once each,
through the outbox like every letter (rendered from their facts: there is no declaration)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

from customs.core.clock import utcnow
from customs.core.db import transaction
from customs.services.ops_alerts import record_prefect_state_missing
from customs.services.outbox import dispatch_due_sync
from models.outbox import Notice, NoticeKind


def _alerts(smtp_server) -> list:
    return [m["message"] for m in smtp_server.received if m["message"]["X-Customs-Notice"].startswith("ops_system_alert")]


def test_prefect_state_lost_is_mailed_to_operations_once(smtp_settings, smtp_server):
    now = utcnow()
    missing = ["deployment clearance/clearance", "automation customs: clearance run failed"]
    first = record_prefect_state_missing(missing, noticed_by="the job gate of host-a", now=now)
    again = record_prefect_state_missing(missing, noticed_by="the periodic check of host-b", now=now + timedelta(seconds=5))
    assert first["created"] and not again["created"]
    assert dispatch_due_sync().sent == 1
    (message,) = _alerts(smtp_server)
    assert message["To"] == smtp_settings.ops_address
    assert message["Subject"] == "Prefect потерял объекты проекта: восстановлено автоматически"
    text = message.get_body(("plain",)).get_content()
    assert "- deployment clearance/clearance" in text and "- automation customs: clearance run failed" in text
    assert "the job gate of host-a" in text and "GET /v1/health/ready" in text
    html = message.get_body(("html",)).get_content()
    assert "<li" in html and "deployment clearance/clearance" in html


@pytest.mark.parametrize("language", ["kk", "en"])
def test_the_alert_is_in_the_support_language(smtp_settings, smtp_server, language):
    from customs.core.settings import configure

    configure(smtp_settings.model_copy(update={"support_language": language}))
    record_prefect_state_missing(["work pool customs"], noticed_by="a host", now=utcnow())
    dispatch_due_sync()
    (message,) = _alerts(smtp_server)
    expected = {"kk": "Prefect жоба нысандарын жоғалтты", "en": "Prefect lost the project's objects"}[language]
    assert message["Subject"].startswith(expected) and message["Content-Language"] == language
    with transaction() as session:
        (notice,) = session.exec(select(Notice).where(Notice.kind == NoticeKind.OPS_SYSTEM_ALERT)).all()
        assert notice.application_id == "-" and notice.language == language
