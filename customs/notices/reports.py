"""What the support report attaches as its "screenshots": the declaration's state at the time of the
failure, rendered as an HTML page (templates/reports/)."""

from __future__ import annotations

from typing import Any

from customs.core.clock import kz_display
from customs.notices.render import template_environment
from models.audit import AuditEvent
from models.declaration import Declaration


def state_snapshot(declaration: Declaration, events: list[AuditEvent]) -> dict[str, Any]:
    return {
        "application_id": declaration.application_id,
        "registration_number": declaration.registration_number,
        "status": str(declaration.status),
        "channel": declaration.channel,
        "customs_office": declaration.customs_office,
        "declarant_id": declaration.declarant_id,
        "submitted_at": kz_display(declaration.submitted_at),
        "updated_at": kz_display(declaration.updated_at),
        "lane": declaration.lane,
        "signature_valid": declaration.signature_valid,
        "sha256": declaration.content_sha256,
        "reasons": declaration.reasons,
        "history": [
            {"seq": e.seq, "at": kz_display(e.at), "event": e.event, "from": e.from_status, "to": e.to_status, "actor": e.actor}
            for e in events
        ],
    }


def render_state(snapshot: dict[str, Any], report_id: str) -> str:
    return template_environment().get_template("reports/declaration_state.html.j2").render(state=snapshot, report_id=report_id)
