"""Officials' acts: decisions, cancellation of release, release marks, the print queue."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from starlette.concurrency import run_in_threadpool

from customs.api.auth import Client, official_of, require_kind
from customs.api.errors import errors
from customs.api.hooks import call_hook
from customs.api.schemas import (
    CancellationIn,
    CancellationOut,
    DecisionIn,
    DecisionOut,
    DeclarationKey,
    MarkIn,
    MarkOut,
    PrintQueueItem,
)
from customs.core.settings import get_settings
from customs.services.officials import affix_mark, cancel_release, decide
from customs.services.printing import print_queue
from models.api_client import ClientKind

logger = logging.getLogger("customs.api")
router = APIRouter(tags=["officials"])


@router.post(
    "/v1/declarations/{key:path}/decision",
    response_model=DecisionOut,
    summary="An official's decision on a declaration awaiting one: release or refuse",
    responses=errors(400, 401, 403, 404, 409, 413, 422),
)
async def give_decision(key: DeclarationKey, body: DecisionIn, client: Client, request: Request) -> DecisionOut:
    """As the client's official. Refused (and audited): another office or zone (403), already decided, not
    awaiting an official, or after the deadline by an inspector (409), bad code or grounds (400)."""
    require_kind(client, ClientKind.OFFICIAL)
    decision_id = uuid.uuid4().hex
    decision_code = body.decision_code or ("10" if body.decision == "release" else None)
    result = await run_in_threadpool(
        lambda: decide(
            key,
            decision=body.decision,
            official_id=client.official_id or "",
            decision_code=decision_code,
            grounds=body.grounds,
            grounds_text=body.grounds_text,
            decision_id=decision_id,
        )
    )
    run_input = {
        "decision": body.decision,
        "official_id": client.official_id,
        "decision_code": decision_code,
        "grounds": list(body.grounds),
        "grounds_text": body.grounds_text,
        "decision_id": decision_id,
    }
    try:
        await call_hook(request.app.state.decision_given, result.application_id, run_input)
    except Exception:
        logger.warning(
            "the decision on %s is recorded, but giving it to the waiting flow run failed", result.application_id, exc_info=True
        )
    return DecisionOut(
        application_id=result.application_id,
        registration_number=result.registration_number,
        status=result.status,
        decision_id=decision_id,
    )


@router.post(
    "/v1/declarations/{key:path}/release-cancellation",
    response_model=CancellationOut,
    summary="Cancel a release (automatic or by an official), with cancellation grounds",
    responses=errors(400, 401, 403, 404, 409, 413, 422),
)
def cancel(key: DeclarationKey, body: CancellationIn, client: Client) -> CancellationOut:
    require_kind(client, ClientKind.OFFICIAL)
    result = cancel_release(key, official_id=client.official_id or "", grounds=body.grounds, grounds_text=body.grounds_text)
    return CancellationOut(
        application_id=result.application_id, registration_number=result.registration_number, status=result.status
    )


@router.post(
    "/v1/declarations/{key:path}/release-mark",
    response_model=MarkOut,
    summary="Affix the release mark after an automatic release",
    responses=errors(400, 401, 403, 404, 409, 413, 422),
)
def mark(key: DeclarationKey, client: Client, body: Annotated[MarkIn | None, Body()] = None) -> dict[str, Any]:
    require_kind(client, ClientKind.OFFICIAL)
    return affix_mark(key, official_id=client.official_id or "")


@router.get(
    "/v1/print-queue",
    response_model=list[PrintQueueItem],
    summary="Pending print requests of the official's office, the most urgent first",
    responses=errors(401, 403),
)
def queue(client: Client) -> list[dict[str, Any]]:
    require_kind(client, ClientKind.OFFICIAL)
    return print_queue(office=official_of(client, get_settings()).office)
