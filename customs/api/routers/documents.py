"""Documents the authority signs: is this one genuine (any authenticated client), and the paper copy's QR check
(public: what it answers is no one's private data)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from customs.api.auth import Client
from customs.api.errors import ApiError, errors
from customs.api.schemas import Base64Bytes
from customs.api.uploads import media_type
from customs.core.settings import get_settings
from customs.services.documents import DocumentInputError, VerificationUnavailable, check_declaration, verify_document

router = APIRouter(tags=["documents"])
VERIFY_PATH = "/v1/documents/verify"
CHECK_PATH = "/v1/documents/check"


class DocumentVerifyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", title="DocumentVerification")
    document: Base64Bytes = Field(description="The document's exact bytes, base64: a decision.json or a paper copy's PDF.")
    signature: Base64Bytes | None = Field(
        None,
        description="Its detached CMS signature (decision.json.p7s; a GOST-signed copy's .p7s), base64; "
        "absent for a PDF with its signature embedded.",
    )
    filename: str | None = Field(None, max_length=255, description="The document's file name, for the messages.")


VERIFY_FORM_SCHEMA = {
    "title": "DocumentVerificationForm",
    "type": "object",
    "required": ["document"],
    "properties": {
        "document": {"type": "string", "format": "binary", "description": "decision.json or the paper copy's PDF"},
        "signature": {"type": "string", "format": "binary", "description": "its detached CMS (.p7s), if any"},
    },
}


class ReasonOut(BaseModel):
    code: str
    message: str


class DocumentCheckOut(BaseModel):
    genuine: bool = Field(description="Signed by the authority's service certificate, intact, chain and CRL valid now.")
    kind: str = Field(description="decision (decision.json), paper_copy (PDF) or document")
    sha256: str
    signature: str = Field(description="Which signature was checked: embedded in the PDF, the detached one given, ...")
    reasons: list[ReasonOut] = Field(description="Why it is not genuine (empty when it is).")
    signer: dict[str, Any] | None = Field(description="name, bin, iin, serial, algorithm, subject, issuer, valid_to")
    signed_at: str | None = Field(description="The signing time the signature states (no trusted time-stamp).")
    states: dict[str, Any] | None = Field(description="What a decision.json states: numbers, decision, code, time.")
    database: dict[str, Any] | None = Field(
        description="What the database holds now: found, status, holds (false: no longer so, e.g. a cancelled release), message"
    )


class DeclarationCheckOut(BaseModel):
    found: bool = Field(description="A declaration with this registration number and SHA-256 is held here.")
    registration_number: str
    sha256: str
    message: str
    status: str | None = None
    customs_office: str | None = None
    registered_at: str | None = None
    decision_code: str | None = None
    decided_at: str | None = None
    cancelled_at: str | None = None


async def _read(request: Request) -> tuple[bytes, bytes | None, str, str | None]:
    kind = media_type(request.headers.get("content-type"))
    if kind == "application/json":
        try:
            body = DocumentVerifyIn.model_validate_json(await request.body())
        except ValidationError as exc:
            first = exc.errors()[0]
            path = "$." + ".".join(str(p) for p in first["loc"]) if first["loc"] else "$"
            raise ApiError(422, "REQUEST_INVALID", first["msg"], path) from None
        return body.document, body.signature, body.filename or "document", "signature" if body.signature else None
    if kind == "multipart/form-data":
        from starlette.datastructures import UploadFile as FormFile

        try:
            form = await request.form(max_files=2, max_fields=2)
        except Exception as exc:
            raise ApiError(
                422, "REQUEST_INVALID", f"the multipart/form-data body cannot be read: {getattr(exc, 'detail', None) or exc}"
            ) from None
        try:
            found: dict[str, tuple[bytes, str]] = {}
            for name, value in form.multi_items():
                if name not in ("document", "signature"):
                    raise ApiError(
                        422, "REQUEST_INVALID", f"unknown form field {name!r}; the fields are document, signature", name
                    )
                if name in found:
                    raise ApiError(422, "REQUEST_INVALID", f"the form field {name!r} is given twice", name)
                if isinstance(value, FormFile):
                    found[name] = (await value.read(), value.filename or name)
                else:
                    found[name] = (value.encode("utf-8"), name)
        finally:
            await form.close()
        if "document" not in found:
            raise ApiError(422, "REQUEST_INVALID", "the form has no 'document' file", "document")
        signature = found.get("signature")
        return (
            found["document"][0],
            signature[0] if signature else None,
            found["document"][1],
            signature[1] if signature else None,
        )
    raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE", f"send application/json or multipart/form-data, not {kind or 'nothing'}")


@router.post(
    VERIFY_PATH,
    response_model=DocumentCheckOut,
    summary="Is this document genuine? A decision.json (with its .p7s) or a paper copy's PDF",
    responses=errors(401, 413, 415, 422, 429, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": VERIFY_FORM_SCHEMA},
                "application/json": {"schema": DocumentVerifyIn.model_json_schema()},
            },
        }
    },
)
async def verify(request: Request, client: Client) -> dict[str, Any]:
    """Any authenticated client (declarant, portal, official): 200 with ``genuine`` true or false and why; 422 when
    the input cannot be checked at all (empty, a PDF that cannot be read)."""
    document, signature, filename, signature_name = await _read(request)
    try:
        check = await run_in_threadpool(
            verify_document, document, signature, filename=filename[:255], signature_name=signature_name, settings=get_settings()
        )
    except DocumentInputError as exc:
        raise ApiError(422, "DOCUMENT_INVALID", exc.message, exc.path) from None
    except VerificationUnavailable as exc:
        raise ApiError(503, "VERIFICATION_UNAVAILABLE", str(exc)) from None
    return check.as_dict()


@router.get(
    CHECK_PATH,
    response_model=DeclarationCheckOut,
    summary="The paper copy's QR check: a registration number and the SHA-256 of the declaration (no login)",
    responses=errors(422),
)
async def check(
    number: Annotated[str, Query(max_length=30, description="The registration number printed on the copy.")],
    sha256: Annotated[str, Query(max_length=64, description="The SHA-256 printed on the copy (64 hex characters).")],
) -> dict[str, Any]:
    """Whether a declaration with this number and SHA-256 is held here, and its status now; nothing private (no
    declarant, goods or amounts). An unknown number and a wrong SHA-256 get the same answer."""
    try:
        return await run_in_threadpool(check_declaration, number, sha256)
    except DocumentInputError as exc:
        raise ApiError(422, "REQUEST_INVALID", exc.message, exc.path) from None
