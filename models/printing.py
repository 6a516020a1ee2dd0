"""Print requests: a paper copy of an electronic declaration, due 30 minutes after the request.

Every time is stored (requested, rendered, alert, due, printed), so the deadline machinery holds nothing in
memory: whatever watches the deadlines can stop and start again and will find the same state.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, Index, LargeBinary
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime


class PrintStatus(StrEnum):
    PENDING = "pending"  # in the office's print queue
    PRINTED = "printed"  # printed and handed over (in time or late)


class PrintRequest(SQLModel, table=True):
    __tablename__ = "print_request"
    __table_args__ = (Index("ix_print_request_queue", "status", "office", "due_at"),)

    id: int | None = Field(default=None, primary_key=True)
    request_id: str = Field(unique=True, max_length=30)
    application_id: str = Field(index=True, max_length=40)
    registration_number: str = Field(max_length=30)
    office: str = Field(max_length=5, description="The office that registered the declaration: its print queue.")
    requested_at: datetime = Field(sa_type=UTCDateTime, index=True)
    requested_by: str | None = Field(default=None, max_length=20, description="IIN or BIN of the applicant who asked.")
    alert_at: datetime = Field(sa_type=UTCDateTime)
    due_at: datetime = Field(sa_type=UTCDateTime)
    status: PrintStatus = Field(default=PrintStatus.PENDING, max_length=10)

    # The copy, rendered in the background after the request is recorded (customs.services.printing):
    # NULL until then. The 30 minutes run from requested_at either way.
    pdf: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    pdf_sha256: str | None = Field(default=None, max_length=64)
    declaration_sha256: str = Field(max_length=64)
    goods_items: int | None = Field(
        default=None, description="Goods items of the declaration: how large the copy is (which renders first). NULL before."
    )
    rendered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    render_seconds: float | None = None
    render_claimed_until: datetime | None = Field(
        default=None, sa_type=UTCDateTime, description="Whoever renders the copy holds it until then (one renderer at a time)."
    )
    render_failures: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    render_error: str | None = Field(default=None, max_length=300)
    # The authority's signature of the copy (customs.services.authority), fixed with the copy: "pades" (embedded in
    # ``pdf``: an RSA or EC service key), "cms" (a detached CMS of ``pdf``'s bytes in ``copy_signature``: a GOST key,
    # which pyHanko cannot sign a PDF with) or "none" (no service certificate was configured: the copy is unsigned).
    # NULL for copies rendered before the authority signed them. New nullable columns: customs.core.db adds them.
    copy_signature_kind: str | None = Field(default=None, max_length=10)
    copy_signature: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    copy_signer: str | None = Field(default=None, max_length=300, description="The service certificate's subject and serial.")

    alerted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    breached_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    printed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    printed_by: str | None = Field(default=None, max_length=60)
    late: bool | None = None
