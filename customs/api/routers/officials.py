"""Officials' acts: decisions, cancellation of release, release marks, the print queue."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from customs.api.auth import Client, official_of, require_kind
from customs.api.errors import errors
from customs.api.hooks import call_hook
from customs.api.schemas import (
    ActDraftIn,
    ActDraftOut,
    CancellationIn,
    CancellationOut,
    DecisionIn,
    DecisionOut,
    DeclarationKey,
    MarkIn,
    MarkOut,
    PrintQueueItem,
    SignedActIn,
)
from customs.core.settings import get_settings
from customs.rules import Refused
from customs.services.official_acts import SignedAct, draft_act
from customs.services.officials import affix_mark, cancel_release, decide
from customs.services.printing import print_queue
from models.api_client import ClientKind
from models.reasons import Reason

logger = logging.getLogger("customs.api")
router = APIRouter(tags=["officials"])


def _signed(body: SignedActIn) -> SignedAct:
    signed = SignedAct.from_base64(body.act, body.signature)
    if isinstance(signed, Reason):
        raise Refused(signed)
    return signed


@router.post(
    "/v1/official-acts/draft",
    response_model=ActDraftOut,
    summary="The canonical document of an official act, to sign with the official's NCA key",
    responses=errors(400, 401, 403, 404, 413, 422),
)
def draft(body: ActDraftIn, client: Client) -> ActDraftOut:
    """The act in the words the service signs: the client's official, the declaration's number and SHA-256, the
    time and a fresh nonce. Sign the returned bytes (NCALayer: createCMSSignatureFromBase64 with the SIGN key) within
    10 minutes and send both to the act's endpoint."""
    require_kind(client, ClientKind.OFFICIAL)
    document = draft_act(
        body.act,
        official_id=client.official_id or "",
        declaration_key=body.declaration,
        subject=dict(body.subject),
        choice=dict(body.choice),
        grounds=list(body.grounds),
        text=body.text,
    )
    return ActDraftOut(
        document=base64.b64encode(document).decode(),
        sha256=hashlib.sha256(document).hexdigest(),
        act=json.loads(document),
    )


@router.post(
    "/v1/declarations/{key:path}/decision",
    response_model=DecisionOut,
    summary="An official's signed decision on a declaration awaiting one: release or refuse",
    responses=errors(400, 401, 403, 404, 409, 413, 422),
)
async def give_decision(key: DeclarationKey, body: DecisionIn, client: Client, request: Request) -> DecisionOut:
    """The act (a `decide` act: choice decision release/refuse and decision_code, grounds, text) signed by the
    client's official. Refused (and audited): a signature that does not prove that official, or an act that is not
    this decision on this declaration (403/400); another office or zone (403); already decided, not awaiting an
    official, or after the deadline by an inspector (409); bad code or grounds (400)."""
    require_kind(client, ClientKind.OFFICIAL)
    signed = _signed(body)
    result = await run_in_threadpool(lambda: decide(key, act=signed, official_id=client.official_id or ""))
    try:
        await call_hook(request.app.state.decision_given, result.application_id)
    except Exception:
        logger.warning(
            "the decision on %s is recorded, but waking the waiting flow run failed", result.application_id, exc_info=True
        )
    return DecisionOut(
        application_id=result.application_id,
        registration_number=result.registration_number,
        status=result.status,
        decision_id=result.decision_id,
    )


@router.post(
    "/v1/declarations/{key:path}/release-cancellation",
    response_model=CancellationOut,
    summary="Cancel a release (automatic or by an official): a signed act with cancellation grounds",
    responses=errors(400, 401, 403, 404, 409, 413, 422),
)
def cancel(key: DeclarationKey, body: CancellationIn, client: Client) -> CancellationOut:
    require_kind(client, ClientKind.OFFICIAL)
    result = cancel_release(key, act=_signed(body), official_id=client.official_id or "")
    return CancellationOut(
        application_id=result.application_id, registration_number=result.registration_number, status=result.status
    )


@router.post(
    "/v1/declarations/{key:path}/release-mark",
    response_model=MarkOut,
    summary="Affix the release mark after an automatic release: a signed act",
    responses=errors(400, 401, 403, 404, 409, 413, 422),
)
def mark(key: DeclarationKey, body: MarkIn, client: Client) -> dict[str, Any]:
    require_kind(client, ClientKind.OFFICIAL)
    return affix_mark(key, act=_signed(body), official_id=client.official_id or "")


@router.get(
    "/v1/print-queue",
    response_model=list[PrintQueueItem],
    summary="Pending print requests of the official's office, the most urgent first",
    responses=errors(401, 403),
)
def queue(client: Client) -> list[dict[str, Any]]:
    require_kind(client, ClientKind.OFFICIAL)
    return print_queue(office=official_of(client, get_settings()).office)
