"""Alerts from Prefect's automations (customs.orchestration.automations): who is reached is decided in
customs.services.ops_alerts. Authenticated with the operations alert token (CUSTOMS_OPS_ALERT_TOKEN, or the one
`customs serve` keeps in data_dir/ops-alert-token), which the automations' webhook block carries; client tokens
are not accepted here, nor this token anywhere else."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from customs.api.errors import ApiError, errors
from customs.services.ops_alerts import AlertRefused, receive_alert

router = APIRouter(tags=["operations"])
OPS_ALERTS_PATH = "/v1/ops/alerts"


class OpsAlertIn(BaseModel):
    automation: str | None = Field(None, description="The name of the Prefect automation that fired.")
    event: dict[str, Any] = Field(
        description="The Prefect event that triggered it, as Prefect renders it ({{ event | tojson }})."
    )


class OpsAlertOut(BaseModel):
    alert: str = Field(description="The occurrence (one alert each).")
    kind: str = Field(description="clearance_run_failed, deadline_breached or print_overdue")
    created: bool = Field(description="false: this occurrence was received before and nobody was reached again")
    application_id: str | None
    recipients: list[str] = Field(description="Who the alert reaches (by e-mail, through the outbox).")
    details: dict[str, Any]


@router.post(
    OPS_ALERTS_PATH,
    response_model=OpsAlertOut,
    summary="An alert from a Prefect automation (operations alert token only)",
    responses=errors(401, 413, 422),
)
async def alert(body: OpsAlertIn, request: Request) -> dict[str, Any]:
    if not getattr(request.state, "ops_caller", False):  # the gate checked the token; belt and braces
        raise ApiError(401, "UNAUTHENTICATED", "the operations alert token is required", "Authorization")
    try:
        return await run_in_threadpool(receive_alert, body.model_dump())
    except AlertRefused as exc:
        raise ApiError(422, "ALERT_UNKNOWN", str(exc), exc.path) from None
