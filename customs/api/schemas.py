"""What the API reads and answers: the request and response models (and so the OpenAPI document)."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, WithJsonSchema
from pydantic_core import PydanticCustomError

from models.declaration import Status

DeclarationKey = Annotated[
    str,
    Path(min_length=1, max_length=40, description="Application id (A261126-…) or registration number (50101/261126/0000001)."),
]


def _decode_base64(value: str) -> bytes:
    compact = "".join(value.split())  # line breaks, as in PEM bodies and NCALayer output
    if "=" not in compact:
        compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, altchars=b"-_" if ("-" in compact or "_" in compact) else None, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not base64") from None


Base64Bytes = Annotated[
    str, AfterValidator(_decode_base64), WithJsonSchema({"type": "string", "format": "byte", "description": "base64"})
]


def _within(limit_setting: str, what: str):
    """Refuse a base64 field whose decoded bytes would pass the setting's limit, before it is decoded (the
    settings come in the validation context; without them nothing is checked here, intake checks later)."""

    def check(value: Any, info: ValidationInfo) -> Any:
        settings = (info.context or {}).get("settings")
        if settings is not None and isinstance(value, str):
            limit = getattr(settings, limit_setting)
            decoded = len(value) * 3 // 4
            if decoded > limit + 2:
                raise PydanticCustomError(
                    "too_large", f"{what} has about {decoded} bytes once decoded; at most {limit} are accepted"
                )
        return value

    return BeforeValidator(check)


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filename: str = Field(min_length=1, max_length=255)
    content: Annotated[Base64Bytes, _within("max_attachment_bytes", "the attachment")] = Field(
        description="The attachment's exact bytes, base64."
    )
    signature: Base64Bytes | None = Field(
        None,
        description="Detached CMS signature of the attachment (DER, PEM or base64), base64; "
        "required for declarant and portal clients.",
    )


class SubmissionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", title="DeclarationSubmission")
    declaration: Annotated[Base64Bytes, _within("max_declaration_bytes", "the declaration")] = Field(
        description="The declaration document (JSON, UTF-8), its exact bytes, base64."
    )
    signature: Base64Bytes | None = Field(
        None,
        description="Detached CMS signature of the declaration (DER, PEM or base64), base64; "
        "required for declarant and portal clients, absent for paper entry by officials.",
    )
    attachments: list[AttachmentIn] = Field(default_factory=list)
    act: str | None = Field(
        None,
        max_length=64 * 1024,
        description="Paper entry by an official: the official's act enter_paper_declaration (its canonical JSON, base64), "
        "naming the declaration's SHA-256 and customs office; required for official clients, absent otherwise.",
    )
    act_signature: str | None = Field(
        None,
        max_length=128 * 1024,
        description="The detached CMS signature of `act` by the official's own NCA SIGN key (as NCALayer answers), base64.",
    )


SUBMISSION_FORM_SCHEMA = {
    "title": "DeclarationSubmissionForm",
    "type": "object",
    "properties": {
        "declaration": {"type": "string", "format": "binary", "description": "The declaration document (JSON, UTF-8)."},
        "signature": {
            "type": "string",
            "format": "binary",
            "description": "Detached CMS signature of the declaration; required for "
            "declarant and portal clients, absent for paper entry by officials.",
        },
        "attachments": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "Supporting documents (repeat the field).",
        },
        "attachment_signatures": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "Detached signature of each attachment, in the same order.",
        },
        "act": {
            "type": "string",
            "format": "binary",
            "description": "Paper entry by an official: the official's act enter_paper_declaration, as signed (a file "
            "part; a text field is read as base64); required for official clients.",
        },
        "act_signature": {
            "type": "string",
            "format": "binary",
            "description": "The detached CMS signature of `act` by the official's own NCA key (a file part, or base64).",
        },
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
    resubmission_of: str | None = Field(
        None, description="The application refused for its signatures whose declaration bytes this one submits again."
    )
    resubmitted_as: str | None = Field(None, description="The application that submitted these bytes again, corrected.")
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
    requested_by: str | None = Field(
        None,
        description="IIN or BIN of the applicant asking (the declarant or a signer); "
        "for declarant clients, default: the client's identifier that is the declarant's.",
    )


class PrintRequestOut(BaseModel):
    request_id: str
    application_id: str
    registration_number: str
    office: str
    requested_at: datetime
    due_at: datetime
    due_at_kz: str
    created: bool = Field(description="False: a request for this declaration was already waiting in the office's queue.")


class SignedActIn(BaseModel):
    """An official's act signed with the official's own NCA key (NCALayer's createCMSSignatureFromBase64): the act's
    bytes as drafted by `POST /v1/official-acts/draft` and the detached CMS over them, both base64. The act says what
    is done (a decision and its code, grounds, text); the client's official must be the act's and its signer."""

    model_config = ConfigDict(extra="forbid")
    act: str = Field(min_length=1, max_length=22_000, description="base64 of the act document's bytes, exactly as signed")
    signature: str = Field(min_length=1, max_length=90_000, description="base64 of the detached CMS (RSA or GOST)")


class ActDraftIn(BaseModel):
    """What an act is to say; the service writes it in its canonical form, names the declaration (registration
    number, SHA-256 of its bytes), the client's official, the time and a fresh nonce."""

    model_config = ConfigDict(extra="forbid")
    act: Literal["decide", "cancel_release", "affix_release_mark", "mark_printed", "rerun", "requeue_notice"]
    declaration: str | None = Field(None, max_length=80, description="Application id or registration number.")
    subject: dict[Annotated[str, Field(max_length=40)], Annotated[str, Field(max_length=200)]] = Field(
        default_factory=dict, max_length=10, description="e.g. print_request, notice_id"
    )
    choice: dict[Annotated[str, Field(max_length=40)], Annotated[str, Field(max_length=200)]] = Field(
        default_factory=dict, max_length=10, description="decide: decision (release/refuse), decision_code (10, 11, 12)"
    )
    grounds: list[Annotated[str, Field(max_length=40)]] = Field(default_factory=list, max_length=20)
    text: str = Field("", max_length=2000)


class ActDraftOut(BaseModel):
    document: str = Field(description="base64 of the act's bytes: sign exactly these (NCALayer: createCMSSignatureFromBase64)")
    sha256: str
    act: dict = Field(description="the act, for the official to read before signing")


DecisionIn = SignedActIn


class DecisionOut(BaseModel):
    application_id: str
    registration_number: str | None
    status: Status
    decision_id: str


CancellationIn = SignedActIn


class CancellationOut(BaseModel):
    application_id: str
    registration_number: str | None
    status: Status


MarkIn = SignedActIn


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


class DependencyOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    state: Literal["up", "degraded", "down", "low", "not used"]
    detail: str | None = None


class ReadinessOut(BaseModel):
    status: Literal["ready", "degraded", "unavailable"]
    dependencies: dict[str, DependencyOut]
