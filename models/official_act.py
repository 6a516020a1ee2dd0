"""An official's act as a signed document: what was done, on what, by whom, proven by the official's EDS.

Every official act (a decision, a cancellation of release, a release mark, a copy printed, a paper declaration
entered, a re-run, a notice requeued) is a small canonical JSON document (``OfficialAct``) that the official signs
with the SIGN key of their NCA RK certificate, as NCALayer does: a detached CMS over the document's bytes, RSA or
GOST. The service verifies it (customs.services.official_acts) and keeps both, document and signature, exactly as
received (``SignedOfficialAct``); the audit event of the act names the row, the document's SHA-256 and the
certificate's serial, so `customs audit verify` can show who acted and prove it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import JSON, Column, LargeBinary
from sqlmodel import Field as ColumnField
from sqlmodel import SQLModel

from models.types import UTCDateTime

ACT_SCHEMA = "kz.customs/official-act@1"

ActKind = Literal[
    "decide",
    "cancel_release",
    "affix_release_mark",
    "mark_printed",
    "enter_paper_declaration",
    "rerun",
    "requeue_notice",
]
ACT_KINDS: tuple[str, ...] = ActKind.__args__  # type: ignore[attr-defined]


class OfficialAct(BaseModel):
    """The document an official signs. ``subject`` names what the act is about (the declaration's registration
    number and SHA-256, a print request, a notice); ``choice`` what was chosen (a decision and its code, a step to
    re-run from); ``grounds`` and ``text`` why. ``at`` and ``nonce`` make every act a new document: a signature
    cannot be replayed for a second act, nor kept for later."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_id: Literal["kz.customs/official-act@1"] = Field(ACT_SCHEMA, alias="schema")
    act: ActKind
    official_id: str = Field(pattern=r"^[A-Z0-9-]{3,40}$")
    subject: dict[str, str] = Field(default_factory=dict)
    choice: dict[str, str] = Field(default_factory=dict)
    grounds: list[str] = Field(default_factory=list, max_length=20)
    text: str = Field("", max_length=2000)
    at: datetime
    nonce: str = Field(pattern=r"^[0-9a-f]{32}$")


class SignedOfficialAct(SQLModel, table=True):
    """An official act as received: the document's bytes, the signature, who signed (from the certificate), and
    the act it was applied to. One row per nonce: the same signed document is never taken twice."""

    __tablename__ = "official_act"

    id: int | None = ColumnField(default=None, primary_key=True)
    nonce: str = ColumnField(unique=True, max_length=32)
    act: str = ColumnField(max_length=40, index=True)
    official_id: str = ColumnField(max_length=40, index=True)
    application_id: str | None = ColumnField(default=None, max_length=40, index=True)
    sha256: str = ColumnField(max_length=64, description="SHA-256 of the document as signed")
    signer_iin: str | None = ColumnField(default=None, max_length=12)
    cert_serial: str = ColumnField(max_length=80)
    cert_subject: str = ColumnField(max_length=1000)
    cert_issuer: str = ColumnField(max_length=1000)
    algorithm: str | None = ColumnField(default=None, max_length=60)
    signed_at: datetime = ColumnField(sa_type=UTCDateTime, description="the act's own time (``at``)")
    recorded_at: datetime = ColumnField(sa_type=UTCDateTime, index=True)
    document: bytes = ColumnField(sa_column=Column(LargeBinary, nullable=False))
    signature: bytes = ColumnField(sa_column=Column(LargeBinary, nullable=False))
    outcome: dict[str, Any] = ColumnField(default_factory=dict, sa_column=Column(JSON, nullable=False))

    def reference(self) -> dict[str, Any]:
        """What the act's audit event carries of it (no IIN: the history of a declaration is shown to its declarant;
        the certificate's serial names the certificate, the row keeps the rest)."""
        return {"id": self.id, "sha256": self.sha256, "cert_serial": self.cert_serial, "algorithm": self.algorithm}
