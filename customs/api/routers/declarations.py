"""Declarations: submission, status, paper copies."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Body, Request, Response
from starlette.concurrency import run_in_threadpool

from customs.api.auth import Client, check_access, require_kind, scope_of
from customs.api.errors import ApiError, errors
from customs.api.hooks import call_hook_sync, start_clearance_after_answer
from customs.api.schemas import (
    DeclarationKey,
    DeclarationStatusOut,
    PrintRequestIn,
    PrintRequestOut,
    SubmissionOut,
)
from customs.api.uploads import media_type, parts_from_form, status_url, submit_for, upload_from_form, upload_from_json
from customs.core.clock import kz_display
from customs.core.settings import get_settings
from customs.services.printing import request_print
from customs.services.queries import declaration_status
from models.api_client import ClientKind

logger = logging.getLogger("customs.api")
router = APIRouter(tags=["declarations"])


@router.post(
    "/v1/declarations",
    status_code=202,
    response_model=SubmissionOut,
    summary="Submit a declaration (multipart/form-data or JSON with base64)",
    responses={
        202: {
            "description": "Accepted: a new application; its clearance has started.",
            "headers": {"Location": {"description": "The status URL of the application.", "schema": {"type": "string"}}},
        },
        200: {"model": SubmissionOut, "description": "These exact bytes were submitted before: the existing application."},
        **errors(400, 401, 403, 413, 415, 422, 429),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": {"$ref": "#/components/schemas/DeclarationSubmissionForm"}},
                "application/json": {"schema": {"$ref": "#/components/schemas/DeclarationSubmission"}},
            },
        }
    },
)
async def submit(request: Request, response: Response, client: Client, background: BackgroundTasks) -> SubmissionOut:
    """Declarant clients submit through the electronic channel, and only for the IIN/BIN they act for (403
    DECLARANT_NOT_YOURS); portal clients through the portal channel for anyone; official clients enter paper
    declarations of their office (no signature on the declaration), each by the act `enter_paper_declaration`
    signed with the client's official's own NCA key (`act` and `act_signature`; refused and audited otherwise:
    403 SIGNATURE_MISSING, SIGNER_NOT_OFFICIAL, OFFICE_MISMATCH; 400 ACT_MISMATCH). The bytes are stored exactly as
    received."""
    settings = get_settings()
    kind = media_type(request.headers.get("content-type"))
    if kind == "multipart/form-data":
        upload = upload_from_form(await parts_from_form(request, settings))
    elif kind == "application/json":
        upload = upload_from_json(await request.body(), settings)
    else:
        raise ApiError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            f"send multipart/form-data or application/json, not {kind or 'no Content-Type'}",
            "Content-Type",
        )
    submission = await run_in_threadpool(submit_for, client, upload, settings)
    url = status_url(request, submission.application_id)
    if submission.created:
        response.headers["Location"] = url
        # After the answer: the declaration is committed; a slow or unavailable Prefect must not hold the 202 back.
        background.add_task(start_clearance_after_answer, request.app, submission.application_id)
    else:
        response.status_code = 200
    return SubmissionOut(
        application_id=submission.application_id, submitted_at=submission.submitted_at, status=submission.status, status_url=url
    )


@router.get(
    "/v1/declarations/{key:path}",
    response_model=DeclarationStatusOut,
    summary="Status, registration number, lane, reasons and history",
    responses=errors(401, 403, 404, 422),
)
def get_status(key: DeclarationKey, client: Client) -> dict[str, Any]:
    """Declarant clients read their own declarations (403 NOT_YOURS), official clients those of their office
    (403 OFFICE_MISMATCH), portal clients all."""
    check_access(client, scope_of(key), get_settings())
    return declaration_status(key)


@router.post(
    "/v1/declarations/{key:path}/print-requests",
    status_code=202,
    response_model=PrintRequestOut,
    summary="Ask for a paper copy of a registered declaration (printed within 30 minutes)",
    responses={
        202: {"description": "A new request in the office's print queue."},
        200: {"model": PrintRequestOut, "description": "A request for this declaration was already waiting."},
        **errors(400, 401, 403, 404, 409, 413, 422),
    },
)
def ask_for_print(
    key: DeclarationKey,
    client: Client,
    response: Response,
    request: Request,
    body: Annotated[PrintRequestIn | None, Body()] = None,
) -> PrintRequestOut:
    settings = get_settings()
    require_kind(client, ClientKind.DECLARANT, ClientKind.PORTAL)
    scope = scope_of(key)
    check_access(client, scope, settings)
    requested_by = body.requested_by if body else None
    if requested_by is None and client.kind == ClientKind.DECLARANT:
        requested_by = next((i for i in client.identifiers if i in scope.declarant_ids), None)
    result = request_print(key, requested_by=requested_by)
    if not result.created:
        response.status_code = 200
    else:
        try:  # precise deadline timers; the every-minute print-deadlines pass covers a failure here
            call_hook_sync(
                request.app.state.print_requested,
                result.request_id,
                result.requested_at + settings.print_alert_after,
                result.due_at,
            )
        except Exception:
            logger.warning(
                "print request %s: its deadline timers could not be scheduled; print-deadlines watches it",
                result.request_id,
                exc_info=True,
            )
    return PrintRequestOut(
        request_id=result.request_id,
        application_id=result.application_id,
        registration_number=result.registration_number,
        office=result.office,
        requested_at=result.requested_at,
        due_at=result.due_at,
        due_at_kz=kz_display(result.due_at),
        created=result.created,
    )
