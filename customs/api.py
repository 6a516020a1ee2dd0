"""The intake HTTP API: submissions, status, print requests and officials' acts over HTTPS + bearer tokens.

``create_app()`` builds the FastAPI application; ``customs serve`` runs it under uvicorn. Everything
the API does is a use case of ``customs.services``, ``tasks.officials`` or ``tasks.printing``: the
same functions the CLI calls, so the rules, the audit chain and the notices are the same whichever
way a declaration comes in.

Who may do what is decided by the client's kind (``customs clients add``):

- ``declarant``: submits through the electronic channel, only declarations whose declarant (box 14
  IIN/BIN) is one of its identifiers, and sees and asks for paper copies of those only;
- ``portal``: submits through the portal channel for any declarant, sees every declaration;
- ``official``: enters paper declarations, decides, cancels releases, affixes release marks and reads
  the print queue, as the official of reference/officials.json it was created for, within that
  official's office.

Two hooks connect the API to whatever runs the clearance (set on ``app.state``, default no-ops):
``start_clearance(application_id)`` after a new declaration is committed, and
``decision_given(application_id, run_input)`` after an official's decision is committed (to resume a
flow run waiting for it). A hook that fails is logged; the committed act stands either way.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Callable, Literal

from fastapi import BackgroundTasks, Body, Depends, FastAPI, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from customs.api_clients import authenticate
from customs.db import transaction
from customs.reference import load_reference
from customs.services import IncomingAttachment, IntakeError, declaration_status, get_declaration, read_document, submit_declaration
from customs.settings import Settings, get_settings
from customs.timeutil import kz_display
from models.api_client import ApiClient, ClientKind
from models.declaration import Status
from models.reasons import json_path
from models.reference import Official
from tasks.common import DeclarationNotFound
from tasks.officials import OfficialActionRefused, affix_mark, cancel_release, decide
from tasks.printing import PrintRefused, print_queue, request_print

logger = logging.getLogger("customs.api")

API_TITLE = "Customs clearance intake API"
API_VERSION = "1"

# ----------------------------------------------------------------------------------------------
# Errors: every 4xx (and 5xx) body is {"error": {"code", "path", "message"}}


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, machine-readable code, e.g. UNAUTHENTICATED, DECLARANT_NOT_YOURS, JSON_INVALID.")
    path: str = Field(description="Where the problem is: a JSON path, a form field or a parameter; '$' for the request as a whole.")
    message: str = Field(description="What is wrong, for a person.")


class ErrorBody(BaseModel):
    error: ErrorDetail


class ApiError(Exception):
    """A refusal with its HTTP status, code, path and message."""

    def __init__(self, status: int, code: str, message: str, path: str = "$", headers: dict[str, str] | None = None):
        super().__init__(f"{status} {code} at {path}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.path = path
        self.headers = headers


class RequestTooLarge(StarletteHTTPException):
    """Raised while the body streams in, once it passes ``api_max_request_bytes``.

    An HTTPException, so that FastAPI's body reading lets it through to the handlers unchanged."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than {limit} bytes, the most this API accepts")


def error_response(status: int, code: str, message: str, path: str = "$", headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "path": path, "message": message}}, status_code=status, headers=headers)


_HTTP_CODES = {400: "BAD_REQUEST", 401: "UNAUTHENTICATED", 403: "FORBIDDEN", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED",
               406: "NOT_ACCEPTABLE", 413: "TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}

_OFFICIAL_FORBIDDEN = {"OFFICIAL_UNKNOWN", "OFFICE_MISMATCH", "ZONE_MISMATCH"}
_OFFICIAL_CONFLICT = {"ALREADY_DECIDED", "NOT_AWAITING_OFFICIAL", "DEADLINE_PASSED", "ALREADY_CANCELLED", "NOT_RELEASED",
                      "NO_RELEASE_MARK", "MARK_ALREADY_AFFIXED", "RELEASE_CANCELLED"}


def official_refusal_status(code: str) -> int:
    if code in _OFFICIAL_FORBIDDEN:
        return 403
    if code in _OFFICIAL_CONFLICT:
        return 409
    return 400


def _loc_path(loc: tuple | list, *, in_body: bool) -> str:
    """A pydantic error location as the API names it: ``$.grounds[0]`` in a JSON body, the name of a parameter elsewhere."""
    loc = list(loc)
    if not in_body:
        if loc and loc[0] == "body":
            in_body, loc = True, loc[1:]
        elif loc and loc[0] in ("path", "query", "header", "cookie"):
            return ".".join(str(p) for p in loc[1:]) or str(loc[0])
    return json_path([p for p in loc if isinstance(p, (str, int))]) if in_body else "$"


def validation_error_body(errors: list[dict[str, Any]], *, in_body: bool = False) -> dict[str, Any]:
    """Pydantic's errors as one error: the first one's path, every problem in the message."""
    problems = []
    first_path = None
    for error in errors:
        if error.get("type") == "json_invalid":
            path = "$"
            reason = f"the body is not valid JSON: {(error.get('ctx') or {}).get('error', error.get('msg'))}"
        else:
            path = _loc_path(error.get("loc", ()), in_body=in_body)
            reason = error.get("msg", "invalid")
        first_path = first_path or path
        problems.append(f"{path}: {reason}")
    return {"error": {"code": "REQUEST_INVALID", "path": first_path or "$", "message": "; ".join(problems) or "the request is invalid"}}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.path, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"HTTP_{exc.status_code}")
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, ensure_ascii=False)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no endpoint {request.url.path}; the API lives under /v1 (see /docs)"
        elif exc.status_code == 400 and message == "There was an error parsing the body":  # FastAPI's, e.g. JSON that is not UTF-8
            code, message = "REQUEST_INVALID", "the body could not be read as JSON (UTF-8 JSON is expected)"
        headers = dict(exc.headers or {})
        if exc.status_code == 401:
            headers.setdefault("WWW-Authenticate", "Bearer")
        return error_response(exc.status_code, code, message, "$", headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_error_body(list(exc.errors())), status_code=422)

    @app.exception_handler(IntakeError)
    async def _intake_error(request: Request, exc: IntakeError) -> JSONResponse:
        return error_response(413 if exc.code == "TOO_LARGE" else 400, exc.code, exc.message, exc.where)

    @app.exception_handler(DeclarationNotFound)
    async def _not_found(request: Request, exc: DeclarationNotFound) -> JSONResponse:
        return error_response(404, "DECLARATION_NOT_FOUND", f"no declaration with application id or registration number {exc.key!r}", "key")

    @app.exception_handler(OfficialActionRefused)
    async def _official_refused(request: Request, exc: OfficialActionRefused) -> JSONResponse:
        reason = exc.as_dict()
        return error_response(official_refusal_status(exc.code), reason["code"], reason["message"], reason["path"])

    @app.exception_handler(PrintRefused)
    async def _print_refused(request: Request, exc: PrintRefused) -> JSONResponse:
        return error_response(409 if exc.code == "NOT_REGISTERED" else 400, exc.code, exc.message, exc.where)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:  # logged (with the traceback) by the server
        return error_response(500, "INTERNAL_ERROR", "the server failed to handle the request; it was logged, nothing was half-done "
                              "(every act is one transaction): try again, or report it with the time of the request")


_DESCRIPTIONS = {
    400: "The request was understood but refused (see error.code); nothing was stored.",
    401: "No bearer token, or an unknown or revoked one.",
    403: "The client may not do this (wrong kind, another declarant's declaration, another office or zone).",
    404: "No declaration with that application id or registration number.",
    409: "The declaration is not in a state that allows this (already decided, not registered, ...).",
    413: "The request body, the declaration or an attachment is larger than accepted.",
    415: "The body is neither application/json nor multipart/form-data.",
    422: "The request does not match this operation's schema (code REQUEST_INVALID).",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        documented[status] = {"model": ErrorBody, "description": _DESCRIPTIONS[status]}
        if status == 401:
            documented[status]["headers"] = {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}}
    return documented


# ----------------------------------------------------------------------------------------------
# Request size: a pure ASGI middleware (before authentication and before any body is read)


class BodySizeLimit:
    """413 when Content-Length says the body is too large; otherwise counts the body as it streams in.

    ``limit`` of ``None``: ``api_max_request_bytes`` of the settings in force at each request.
    """

    def __init__(self, app: Callable, limit: int | None = None):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit or get_settings().api_max_request_bytes
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._refuse(send, 400, "BAD_REQUEST", "the Content-Length header is not a number")
                    return
        if declared is not None and declared > limit:
            await self._refuse(send, 413, "TOO_LARGE", f"the request body has {declared} bytes; at most {limit} are accepted")
            return

        received = 0
        started = False

        async def counting_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise RequestTooLarge(limit)
            return message

        async def watching_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except RequestTooLarge as exc:  # only when nothing inside turned it into a response
            if started:
                raise
            await self._refuse(send, 413, "TOO_LARGE", exc.detail)

    @staticmethod
    async def _refuse(send: Callable, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": {"code": code, "path": "$", "message": message}}, ensure_ascii=False).encode("utf-8")
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


# ----------------------------------------------------------------------------------------------
# Authentication and who may do what

bearer = HTTPBearer(scheme_name="bearer", auto_error=False,
                    description="A client token from `customs clients add` (shown once when the client is created).")


def current_client(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> ApiClient:
    if credentials is None:
        raise ApiError(401, "UNAUTHENTICATED", "send the client's token as 'Authorization: Bearer <token>'", "Authorization",
                       {"WWW-Authenticate": "Bearer"})
    client = authenticate(credentials.credentials)
    if client is None:
        raise ApiError(401, "UNAUTHENTICATED", "the bearer token is unknown or was revoked", "Authorization",
                       {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return client


Client = Annotated[ApiClient, Depends(current_client)]


def require_kind(client: ApiClient, *kinds: ClientKind) -> None:
    if client.kind not in kinds:
        if kinds == (ClientKind.OFFICIAL,):
            raise ApiError(403, "NOT_AN_OFFICIAL", f"client {client.name!r} is a {client.kind} client; only official clients do this")
        raise ApiError(403, "CLIENT_KIND_NOT_ALLOWED",
                       f"client {client.name!r} is a {client.kind} client; this is for {' and '.join(k.value for k in kinds)} clients")


def official_of(client: ApiClient, settings: Settings) -> Official:
    official = load_reference(settings.reference_dir).officials.get(client.official_id or "")
    if official is None:
        raise ApiError(403, "OFFICIAL_UNKNOWN", f"client {client.name!r} acts as {client.official_id!r}, who is no longer an authorized "
                       "official (reference/officials.json)", "official")
    return official


@dataclass(frozen=True)
class DeclarationScope:
    application_id: str
    registration_number: str | None
    office: str | None
    declarant_ids: frozenset[str]


def declarant_ids_of(document: Any) -> set[str]:
    """The declarant's IIN and BIN as the document gives them (box 14), read leniently."""
    declarant = document.get("declarant") if isinstance(document, dict) else None
    if not isinstance(declarant, dict):
        return set()
    return {declarant[k] for k in ("bin", "iin") if isinstance(declarant.get(k), str) and declarant[k]}


def scope_of(key: str) -> DeclarationScope:
    with transaction() as session:
        declaration = get_declaration(session, key)
        ids = {declaration.declarant_id} if declaration.declarant_id else set()
        try:
            ids |= declarant_ids_of(json.loads(declaration.content.decode("utf-8-sig")))
        except (UnicodeDecodeError, ValueError):
            pass
        return DeclarationScope(declaration.application_id, declaration.registration_number, declaration.customs_office, frozenset(ids))


def check_access(client: ApiClient, scope: DeclarationScope, settings: Settings) -> None:
    """Declarant clients see their own declarations; officials those of their office; the portal all."""
    if client.kind == ClientKind.DECLARANT and not scope.declarant_ids & set(client.identifiers):
        raise ApiError(403, "NOT_YOURS", f"declaration {scope.application_id} is not of a declarant client {client.name!r} acts for "
                       f"({', '.join(client.identifiers)})", "key")
    if client.kind == ClientKind.OFFICIAL:
        official = official_of(client, settings)
        if official.office != scope.office:
            raise ApiError(403, "OFFICE_MISMATCH", f"official {official.id} acts for customs office {official.office}; "
                           f"declaration {scope.application_id} is of office {scope.office}", "key")


async def call_hook(hook: Callable, *args: Any) -> None:
    result = hook(*args) if inspect.iscoroutinefunction(hook) else await run_in_threadpool(hook, *args)
    if inspect.isawaitable(result):
        await result


async def _start_clearance(app, application_id: str) -> None:
    try:
        await call_hook(app.state.start_clearance, application_id)
    except Exception:
        logger.warning("declaration %s is stored, but starting its clearance failed; batch-recheck will pick it up",
                       application_id, exc_info=True)


def _no_hook(*args: Any) -> None:
    return None


# ----------------------------------------------------------------------------------------------
# Request and response models

DeclarationKey = Annotated[str, Path(min_length=1, max_length=40, description="Application id (A261126-…) or registration number (50101/261126/0000001).")]


def _decode_base64(value: str) -> bytes:
    compact = "".join(value.split())  # line breaks, as in PEM bodies and NCALayer output
    if "=" not in compact:
        compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, altchars=b"-_" if ("-" in compact or "_" in compact) else None, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not base64") from None


Base64Bytes = Annotated[str, AfterValidator(_decode_base64), WithJsonSchema({"type": "string", "format": "byte", "description": "base64"})]


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filename: str = Field(min_length=1, max_length=255)
    content: Base64Bytes = Field(description="The attachment's exact bytes, base64.")
    signature: Base64Bytes | None = Field(None, description="Detached CMS signature of the attachment (DER, PEM or base64), base64; "
                                          "required for declarant and portal clients.")


class SubmissionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", title="DeclarationSubmission")
    declaration: Base64Bytes = Field(description="The declaration document (JSON, UTF-8), its exact bytes, base64.")
    signature: Base64Bytes | None = Field(None, description="Detached CMS signature of the declaration (DER, PEM or base64), base64; "
                                          "required for declarant and portal clients, absent for paper entry by officials.")
    attachments: list[AttachmentIn] = Field(default_factory=list)


SUBMISSION_FORM_SCHEMA = {
    "title": "DeclarationSubmissionForm",
    "type": "object",
    "properties": {
        "declaration": {"type": "string", "format": "binary", "description": "The declaration document (JSON, UTF-8)."},
        "signature": {"type": "string", "format": "binary", "description": "Detached CMS signature of the declaration; required for "
                      "declarant and portal clients, absent for paper entry by officials."},
        "attachments": {"type": "array", "items": {"type": "string", "format": "binary"}, "description": "Supporting documents (repeat the field)."},
        "attachment_signatures": {"type": "array", "items": {"type": "string", "format": "binary"},
                                  "description": "Detached signature of each attachment, in the same order."},
    },
    "required": ["declaration"],
    "additionalProperties": False,
}


class SubmissionOut(BaseModel):
    application_id: str
    submitted_at: datetime = Field(description="The submission time fixed at intake (UTC).")
    status: Status
    status_url: str = Field(description="Where the declaration's status is read (also the Location header of a 202).")


class ReasonOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    code: str
    path: str
    message: str


class HistoryEventOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    seq: int
    at: datetime
    at_kz: str
    event: str
    from_status: Status | None = Field(None, alias="from")
    to_status: Status | None = Field(None, alias="to")
    actor: str
    reasons: list[ReasonOut]
    details: dict[str, Any]


class DeclarationStatusOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    application_id: str
    status: Status
    channel: str
    schema_id: str | None = Field(None, alias="schema")
    customs_office: str | None
    submitted_at: datetime
    submitted_at_kz: str
    sha256: str
    registration_number: str | None
    registered_at: datetime | None
    lane: str | None
    risk_profiles: list[str]
    decision_code: str | None
    decided_at: datetime | None
    decided_by: str | None
    zone: str | None
    entered_by: str | None
    release_due_at: datetime | None
    release_due_at_kz: str | None
    release_breached_at: datetime | None
    signature_valid: bool | None
    signers: list[dict[str, Any]]
    reasons: list[ReasonOut]
    history: list[HistoryEventOut]


class PrintRequestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    requested_by: str | None = Field(None, description="IIN or BIN of the applicant asking (the declarant or a signer); "
                                     "for declarant clients, default: the client's identifier that is the declarant's.")


class PrintRequestOut(BaseModel):
    request_id: str
    application_id: str
    registration_number: str
    office: str
    requested_at: datetime
    due_at: datetime
    due_at_kz: str
    created: bool = Field(description="False: a request for this declaration was already waiting in the office's queue.")


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["release", "refuse"]
    decision_code: Literal["10", "11", "12"] | None = Field(None, description="For a release: 10 (default) release permitted, "
                                                             "11 against security, 12 under EAEU CC art. 121.")
    grounds: list[Annotated[str, Field(max_length=40)]] = Field(default_factory=list, max_length=50,
                                                                description="For a refusal: ground codes (reference/release_grounds.json).")
    grounds_text: str = Field("", max_length=2000, description="The official's own words on the decision.")


class DecisionOut(BaseModel):
    application_id: str
    registration_number: str | None
    status: Status
    decision_id: str


class CancellationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grounds: list[Annotated[str, Field(max_length=40)]] = Field(default_factory=list, max_length=50,
                                                                description="Cancellation ground codes (reference/release_grounds.json).")
    grounds_text: str = Field("", max_length=2000)


class CancellationOut(BaseModel):
    application_id: str
    registration_number: str | None
    status: Status


class MarkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MarkOut(BaseModel):
    application_id: str
    registration_number: str | None
    zone: str
    affixed_at: datetime
    affixed_by: str


class PrintQueueItem(BaseModel):
    request_id: str
    registration_number: str
    application_id: str
    office: str
    requested_at_kz: str
    due_at_kz: str
    minutes_left: int = Field(description="Negative: overdue.")
    alerted: bool
    breached: bool


class HealthOut(BaseModel):
    status: Literal["ok"]


# ----------------------------------------------------------------------------------------------
# Submissions


class _Part:
    __slots__ = ("name", "filename", "content")

    def __init__(self, name: str, filename: str | None, content: bytes):
        self.name, self.filename, self.content = name, filename, content


def _form_invalid(message: str, path: str = "$") -> ApiError:
    return ApiError(422, "REQUEST_INVALID", message, path)


async def parts_from_form(request: Request, settings) -> list[_Part]:
    """multipart/form-data read by Starlette (python-multipart): each file part's bytes exactly as sent."""
    from starlette.datastructures import UploadFile as FormFile

    limit = 2 * settings.max_attachments + 4
    try:
        form = await request.form(max_files=limit, max_fields=limit)
    except Exception as exc:  # malformed body, too many parts
        raise _form_invalid(f"the multipart/form-data body cannot be read: {getattr(exc, 'detail', None) or exc}") from None
    parts: list[_Part] = []
    try:
        for name, value in form.multi_items():
            if isinstance(value, FormFile):
                filename = (value.filename or "").replace("\\", "/").rsplit("/", 1)[-1]  # some browsers send the local path
                parts.append(_Part(name, filename, await value.read()))
            else:
                parts.append(_Part(name, None, value.encode("utf-8")))
    finally:
        await form.close()
    return parts


@dataclass
class _Upload:
    content: bytes
    signature: bytes | None
    attachments: list[IncomingAttachment]


def upload_from_form(parts: list[_Part]) -> _Upload:
    declaration: list[_Part] = []
    signature: list[_Part] = []
    attachments: list[_Part] = []
    attachment_signatures: list[_Part] = []
    fields = {"declaration": declaration, "signature": signature, "attachments": attachments, "attachment_signatures": attachment_signatures}
    for part in parts:
        if part.name not in fields:
            raise _form_invalid(f"unknown form field {part.name!r}; the fields are {', '.join(fields)}", part.name)
        if part.filename == "" and not part.content:
            continue  # a file input left empty in a browser form
        fields[part.name].append(part)
    if not declaration:
        raise _form_invalid("the form has no 'declaration' file", "declaration")
    for name, found in (("declaration", declaration), ("signature", signature)):
        if len(found) > 1:
            raise _form_invalid(f"the form field {name!r} is given {len(found)} times; it is given once", name)
    if attachment_signatures and len(attachment_signatures) != len(attachments):
        raise ApiError(400, "ATTACHMENT_SIGNATURES_MISMATCH", f"{len(attachments)} attachments and {len(attachment_signatures)} "
                       "attachment_signatures: each attachment has its signature, in the same order", "attachment_signatures")
    return _Upload(
        content=declaration[0].content,
        signature=signature[0].content if signature else None,
        attachments=[IncomingAttachment(part.filename or f"attachment-{i + 1}", part.content,
                                        attachment_signatures[i].content if attachment_signatures else None)
                     for i, part in enumerate(attachments)],
    )


def upload_from_json(body: bytes) -> _Upload:
    try:
        envelope = SubmissionIn.model_validate_json(body)
    except ValidationError as exc:
        raise ApiError(422, "REQUEST_INVALID", **_first(validation_error_body(exc.errors(), in_body=True))) from None
    return _Upload(envelope.declaration, envelope.signature,
                   [IncomingAttachment(a.filename, a.content, a.signature) for a in envelope.attachments])


def _first(body: dict[str, Any]) -> dict[str, str]:
    return {"message": body["error"]["message"], "path": body["error"]["path"]}


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _status_url(request: Request, application_id: str) -> str:
    return f"{request.scope.get('root_path', '').rstrip('/')}/v1/declarations/{application_id}"


def _submit(client: ApiClient, upload: _Upload, settings: Settings):
    """The rules of the client's kind, then intake itself (which stores the exact bytes or nothing)."""
    if client.kind == ClientKind.OFFICIAL:
        return submit_declaration(upload.content, upload.signature, upload.attachments, channel="paper", official_id=client.official_id)
    if not upload.signature:
        raise ApiError(400, "SIGNATURE_MISSING", "a declaration submitted electronically carries the declarant's detached CMS signature", "signature")
    for index, attachment in enumerate(upload.attachments):
        if not attachment.signature:
            raise ApiError(400, "SIGNATURE_MISSING", f"attachment {attachment.filename!r} has no signature; each attachment is signed",
                           f"attachments[{index}].signature")
    if client.kind == ClientKind.DECLARANT:
        document = read_document(upload.content, settings)  # intake's own checks first (EMPTY, TOO_LARGE, JSON_INVALID, ...)
        named = declarant_ids_of(document)
        if not named & set(client.identifiers):
            raise ApiError(403, "DECLARANT_NOT_YOURS", f"the declaration's declarant ({', '.join(sorted(named)) or 'none given'}) is not one "
                           f"client {client.name!r} acts for ({', '.join(client.identifiers)})", "$.declarant")
    channel = "electronic" if client.kind == ClientKind.DECLARANT else "portal"
    return submit_declaration(upload.content, upload.signature, upload.attachments, channel=channel, actor=f"api:{client.name}"[:60])


# ----------------------------------------------------------------------------------------------
# The application


def call_hook_sync(hook: Callable[..., Any], *args: Any) -> None:
    """Call a hook from a sync endpoint (which runs in a worker thread); an async hook gets its own loop."""
    result = hook(*args)
    if inspect.isawaitable(result):
        import asyncio

        asyncio.run(result)


def create_app(*, start_clearance: Callable[[str], Any] | None = None,
               decision_given: Callable[[str, dict[str, Any]], Any] | None = None) -> FastAPI:
    """The intake API. The hooks may also be set later on ``app.state`` (sync or async callables)."""
    app = FastAPI(
        title=API_TITLE,
        version=API_VERSION,
        description="Submission of customs declarations (electronic, portal, paper entry), their status, paper copies, "
                    "and officials' decisions. Authenticate with `Authorization: Bearer <token>` (tokens from `customs clients add`). "
                    "Every error is `{\"error\": {\"code\", \"path\", \"message\"}}`.",
    )
    app.state.start_clearance = start_clearance or _no_hook
    app.state.decision_given = decision_given or _no_hook
    app.state.print_requested = _no_hook  # (request_id, alert_at, due_at): `customs serve` schedules the deadline timers
    app.add_middleware(BodySizeLimit)
    _install_error_handlers(app)

    @app.get("/v1/health", response_model=HealthOut, tags=["service"], summary="Liveness (no authentication)")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(
        "/v1/declarations",
        status_code=202,
        response_model=SubmissionOut,
        tags=["declarations"],
        summary="Submit a declaration (multipart/form-data or JSON with base64)",
        responses={
            202: {"description": "Accepted: a new application; its clearance has started.",
                  "headers": {"Location": {"description": "The status URL of the application.", "schema": {"type": "string"}}}},
            200: {"model": SubmissionOut, "description": "These exact bytes were submitted before: the existing application."},
            **errors(400, 401, 403, 413, 415, 422),
        },
        openapi_extra={"requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": {"$ref": "#/components/schemas/DeclarationSubmissionForm"}},
            "application/json": {"schema": {"$ref": "#/components/schemas/DeclarationSubmission"}},
        }}},
    )
    async def submit(request: Request, response: Response, client: Client, background: BackgroundTasks) -> SubmissionOut:
        """Declarant clients submit through the electronic channel, and only for the IIN/BIN they act for (403
        DECLARANT_NOT_YOURS); portal clients through the portal channel for anyone; official clients enter paper
        declarations of their office (no signature). The bytes are stored exactly as received."""
        settings = get_settings()
        media_type = _media_type(request.headers.get("content-type"))
        if media_type == "multipart/form-data":
            upload = upload_from_form(await parts_from_form(request, settings))
        elif media_type == "application/json" or media_type.endswith("+json"):
            upload = upload_from_json(await request.body())
        else:
            raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE", f"send multipart/form-data or application/json, not {media_type or 'no Content-Type'}",
                           "Content-Type")
        submission = await run_in_threadpool(_submit, client, upload, settings)
        status_url = _status_url(request, submission.application_id)
        if submission.created:
            response.headers["Location"] = status_url
            # After the answer: the declaration is committed; a slow or unavailable Prefect must not hold the 202 back.
            background.add_task(_start_clearance, request.app, submission.application_id)
        else:
            response.status_code = 200
        return SubmissionOut(application_id=submission.application_id, submitted_at=submission.submitted_at,
                             status=submission.status, status_url=status_url)

    @app.get("/v1/declarations/{key:path}", response_model=DeclarationStatusOut, tags=["declarations"],
             summary="Status, registration number, lane, reasons and history", responses=errors(401, 403, 404, 422))
    def get_status(key: DeclarationKey, client: Client) -> dict[str, Any]:
        """Declarant clients read their own declarations (403 NOT_YOURS), official clients those of their office
        (403 OFFICE_MISMATCH), portal clients all."""
        check_access(client, scope_of(key), get_settings())
        return declaration_status(key)

    @app.post("/v1/declarations/{key:path}/print-requests", status_code=202, response_model=PrintRequestOut, tags=["declarations"],
              summary="Ask for a paper copy of a registered declaration (printed within 30 minutes)",
              responses={202: {"description": "A new request in the office's print queue."},
                         200: {"model": PrintRequestOut, "description": "A request for this declaration was already waiting."},
                         **errors(400, 401, 403, 404, 409, 413, 422)})
    def ask_for_print(key: DeclarationKey, client: Client, response: Response, request: Request,
                      body: Annotated[PrintRequestIn | None, Body()] = None) -> PrintRequestOut:
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
                call_hook_sync(request.app.state.print_requested, result.request_id, result.requested_at + settings.print_alert_after, result.due_at)
            except Exception:
                logger.warning("print request %s: its deadline timers could not be scheduled; print-deadlines watches it", result.request_id,
                               exc_info=True)
        return PrintRequestOut(request_id=result.request_id, application_id=result.application_id,
                               registration_number=result.registration_number, office=result.office, requested_at=result.requested_at,
                               due_at=result.due_at, due_at_kz=kz_display(result.due_at), created=result.created)

    @app.post("/v1/declarations/{key:path}/decision", response_model=DecisionOut, tags=["officials"],
              summary="An official's decision on a declaration awaiting one: release or refuse",
              responses=errors(400, 401, 403, 404, 409, 413, 422))
    async def give_decision(key: DeclarationKey, body: DecisionIn, client: Client, request: Request) -> DecisionOut:
        """As the client's official. Refused (and audited): another office or zone (403), already decided, not
        awaiting an official, or after the deadline by an inspector (409), bad code or grounds (400)."""
        require_kind(client, ClientKind.OFFICIAL)
        decision_id = uuid.uuid4().hex
        decision_code = body.decision_code or ("10" if body.decision == "release" else None)
        result = await run_in_threadpool(
            lambda: decide(key, decision=body.decision, official_id=client.official_id or "", decision_code=decision_code,
                           grounds=body.grounds, grounds_text=body.grounds_text, decision_id=decision_id))
        run_input = {"decision": body.decision, "official_id": client.official_id, "decision_code": decision_code,
                     "grounds": list(body.grounds), "grounds_text": body.grounds_text, "decision_id": decision_id}
        try:
            await call_hook(request.app.state.decision_given, result.application_id, run_input)
        except Exception:
            logger.warning("the decision on %s is recorded, but giving it to the waiting flow run failed", result.application_id, exc_info=True)
        return DecisionOut(application_id=result.application_id, registration_number=result.registration_number,
                           status=result.status, decision_id=decision_id)

    @app.post("/v1/declarations/{key:path}/release-cancellation", response_model=CancellationOut, tags=["officials"],
              summary="Cancel a release (automatic or by an official), with cancellation grounds",
              responses=errors(400, 401, 403, 404, 409, 413, 422))
    def cancel(key: DeclarationKey, body: CancellationIn, client: Client) -> CancellationOut:
        require_kind(client, ClientKind.OFFICIAL)
        result = cancel_release(key, official_id=client.official_id or "", grounds=body.grounds, grounds_text=body.grounds_text)
        return CancellationOut(application_id=result.application_id, registration_number=result.registration_number, status=result.status)

    @app.post("/v1/declarations/{key:path}/release-mark", response_model=MarkOut, tags=["officials"],
              summary="Affix the release mark after an automatic release", responses=errors(400, 401, 403, 404, 409, 413, 422))
    def mark(key: DeclarationKey, client: Client, body: Annotated[MarkIn | None, Body()] = None) -> dict[str, Any]:
        require_kind(client, ClientKind.OFFICIAL)
        return affix_mark(key, official_id=client.official_id or "")

    @app.get("/v1/print-queue", response_model=list[PrintQueueItem], tags=["officials"],
             summary="Pending print requests of the official's office, the most urgent first", responses=errors(401, 403))
    def queue(client: Client) -> list[dict[str, Any]]:
        require_kind(client, ClientKind.OFFICIAL)
        return print_queue(office=official_of(client, get_settings()).office)

    _document_submission_schemas(app)
    return app


def _document_submission_schemas(app: FastAPI) -> None:
    """The two bodies of POST /v1/declarations are read by hand (one endpoint, two media types): name their schemas."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if "DeclarationSubmission" not in components:
            submission = SubmissionIn.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(submission.pop("$defs", {}))
            components["DeclarationSubmission"] = submission
            components["DeclarationSubmissionForm"] = SUBMISSION_FORM_SCHEMA
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
