"""Submissions as they arrive: multipart/form-data or JSON with base64, read into the exact bytes of the
declaration, its signature and its attachments; then the rules of the client's kind, then intake."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from pydantic import ValidationError

from customs.api.errors import ApiError, validation_error_body
from customs.api.schemas import SubmissionIn
from customs.core.settings import Settings
from customs.services.intake import IncomingAttachment, Submission, read_document, submit_declaration
from customs.services.official_acts import SignedAct
from models.api_client import ApiClient, ClientKind
from models.document import written_declarant
from models.reasons import Reason


class Part:
    __slots__ = ("content", "filename", "name")

    def __init__(self, name: str, filename: str | None, content: bytes):
        self.name, self.filename, self.content = name, filename, content


def _form_invalid(message: str, path: str = "$") -> ApiError:
    return ApiError(422, "REQUEST_INVALID", message, path)


async def parts_from_form(request: Request, settings) -> list[Part]:
    """multipart/form-data read by Starlette (python-multipart): each file part's bytes exactly as sent."""
    from starlette.datastructures import UploadFile as FormFile

    limit = 2 * settings.max_attachments + 4
    try:
        form = await request.form(max_files=limit, max_fields=limit)
    except Exception as exc:  # malformed body, too many parts
        raise _form_invalid(f"the multipart/form-data body cannot be read: {getattr(exc, 'detail', None) or exc}") from None
    parts: list[Part] = []
    limits = {"declaration": settings.max_declaration_bytes, "attachments": settings.max_attachment_bytes}
    try:
        for name, value in form.multi_items():
            if isinstance(value, FormFile):
                # Starlette spooled the part to a temporary file as it streamed in: its size is known before
                # its bytes are read into memory, so a part over its limit never is
                limit = limits.get(name, settings.max_declaration_bytes)
                if value.size is not None and value.size > limit:
                    raise ApiError(
                        413, "TOO_LARGE", f"the part {name!r} has {value.size} bytes; at most {limit} are accepted", name
                    )
                # as sent: intake's safe_filename makes the stored name, for this way in and JSON's alike
                parts.append(Part(name, value.filename or "", await value.read()))
            else:
                parts.append(Part(name, None, value.encode("utf-8")))
    finally:
        await form.close()
    return parts


@dataclass
class Upload:
    content: bytes
    signature: bytes | None
    attachments: list[IncomingAttachment]
    act: SignedAct | None = None  # paper entry by an official: the signed act enter_paper_declaration


def _signed_act(act: bytes | str | None, signature: bytes | str | None) -> SignedAct | None:
    """The official's act and its signature as bytes (file parts) or base64 (JSON, text fields), or None."""
    if act is None and signature is None:
        return None
    if act is None or signature is None:
        raise ApiError(400, "ACT_MALFORMED", "act and act_signature go together: the act and its detached signature", "act")
    if isinstance(act, bytes) and isinstance(signature, bytes):
        return SignedAct(act, signature)
    signed = SignedAct.from_base64(
        act if isinstance(act, str) else act.decode("ascii", "replace"),
        signature if isinstance(signature, str) else signature.decode("ascii", "replace"),
    )
    if isinstance(signed, Reason):
        raise ApiError(400, signed.code, signed.message, signed.path)
    return signed


def upload_from_form(parts: list[Part]) -> Upload:
    declaration: list[Part] = []
    signature: list[Part] = []
    attachments: list[Part] = []
    attachment_signatures: list[Part] = []
    act: list[Part] = []
    act_signature: list[Part] = []
    fields = {
        "declaration": declaration,
        "signature": signature,
        "attachments": attachments,
        "attachment_signatures": attachment_signatures,
        "act": act,
        "act_signature": act_signature,
    }
    for part in parts:
        if part.name not in fields:
            raise _form_invalid(f"unknown form field {part.name!r}; the fields are {', '.join(fields)}", part.name)
        if part.filename == "" and not part.content:
            continue  # a file input left empty in a browser form
        fields[part.name].append(part)
    if not declaration:
        raise _form_invalid("the form has no 'declaration' file", "declaration")
    for name, found in (("declaration", declaration), ("signature", signature), ("act", act), ("act_signature", act_signature)):
        if len(found) > 1:
            raise _form_invalid(f"the form field {name!r} is given {len(found)} times; it is given once", name)
    if attachment_signatures and len(attachment_signatures) != len(attachments):
        raise ApiError(
            400,
            "ATTACHMENT_SIGNATURES_MISMATCH",
            f"{len(attachments)} attachments and {len(attachment_signatures)} "
            "attachment_signatures: each attachment has its signature, in the same order",
            "attachment_signatures",
        )
    return Upload(
        content=declaration[0].content,
        signature=signature[0].content if signature else None,
        attachments=[
            IncomingAttachment(
                part.filename or f"attachment-{i + 1}",
                part.content,
                attachment_signatures[i].content if attachment_signatures else None,
            )
            for i, part in enumerate(attachments)
        ],
        act=_signed_act(*(_form_value(found[0]) if found else None for found in (act, act_signature))),
    )


def _form_value(part: Part) -> bytes | str:
    """A file part's exact bytes; a text field's text (base64)."""
    return part.content if part.filename is not None else part.content.decode("utf-8", "replace")


def upload_from_json(body: bytes, settings: Settings | None = None) -> Upload:
    """The JSON envelope; a base64 field whose decoded bytes would pass its limit is refused before it is
    decoded (413 TOO_LARGE at its path)."""
    try:
        envelope = SubmissionIn.model_validate_json(body, context={"settings": settings} if settings else None)
    except ValidationError as exc:
        errors = exc.errors()
        too_large = next((e for e in errors if e["type"] == "too_large"), None)
        if too_large is not None:
            path = _first(validation_error_body([too_large], in_body=True))["path"]
            raise ApiError(413, "TOO_LARGE", too_large["msg"], path) from None
        raise ApiError(422, "REQUEST_INVALID", **_first(validation_error_body(errors, in_body=True))) from None
    return Upload(
        envelope.declaration,
        envelope.signature,
        [IncomingAttachment(a.filename, a.content, a.signature) for a in envelope.attachments],
        act=_signed_act(envelope.act, envelope.act_signature),
    )


def _first(body: dict[str, Any]) -> dict[str, str]:
    return {"message": body["error"]["message"], "path": body["error"]["path"]}


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def status_url(request: Request, application_id: str) -> str:
    return f"{request.scope.get('root_path', '').rstrip('/')}/v1/declarations/{application_id}"


def submit_for(client: ApiClient, upload: Upload, settings: Settings) -> Submission:
    """The rules of the client's kind, then intake itself (which stores the exact bytes or nothing)."""
    if client.kind == ClientKind.OFFICIAL:  # the client's official, and the act signed with that official's own key
        return submit_declaration(
            upload.content,
            upload.signature,
            upload.attachments,
            channel="paper",
            official_id=client.official_id or "",
            act=upload.act,
        )
    if upload.act is not None:
        raise ApiError(400, "OFFICIAL_NOT_EXPECTED", "an official's act enters a paper declaration: for official clients", "act")
    if not upload.signature:
        raise ApiError(
            400,
            "SIGNATURE_MISSING",
            "a declaration submitted electronically carries the declarant's detached CMS signature",
            "signature",
        )
    for index, attachment in enumerate(upload.attachments):
        if not attachment.signature:
            raise ApiError(
                400,
                "SIGNATURE_MISSING",
                f"attachment {attachment.filename!r} has no signature; each attachment is signed",
                f"attachments[{index}].signature",
            )
    if client.kind == ClientKind.DECLARANT:
        document = read_document(upload.content, settings)  # intake's own checks first (EMPTY, TOO_LARGE, JSON_INVALID, ...)
        named = written_declarant(document).ids
        if not named & set(client.identifiers):
            raise ApiError(
                403,
                "DECLARANT_NOT_YOURS",
                f"the declaration's declarant ({', '.join(sorted(named)) or 'none given'}) is not one "
                f"client {client.name!r} acts for ({', '.join(client.identifiers)})",
                "$.declarant",
            )
    channel = "electronic" if client.kind == ClientKind.DECLARANT else "portal"
    return submit_declaration(
        upload.content, upload.signature, upload.attachments, channel=channel, actor=f"api:{client.name}"[:60]
    )
