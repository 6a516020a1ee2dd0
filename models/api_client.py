"""Clients of the intake HTTP API: who may call it, for whom, and the hash of their bearer token.

Tokens are long random strings (``secrets.token_urlsafe(32)``: 256 bits) shown once when the client is
created; only their SHA-256 is stored, so a copy of the database gives nobody a usable token. A
revoked client keeps its row (and its name) for the record; its token no longer authenticates.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime


class ClientKind(StrEnum):
    DECLARANT = "declarant"  # a declarant's own system (ASTANA-1 style): acts for the IIN/BIN in ``identifiers`` only
    PORTAL = "portal"  # the eGov portal: submits for any declarant it has authenticated itself
    OFFICIAL = "official"  # an official's workstation: paper entry and decisions, as ``official_id``


class ApiClient(SQLModel, table=True):
    __tablename__ = "api_client"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=80)
    kind: ClientKind = Field(max_length=20)
    token_sha256: str = Field(
        unique=True, max_length=64, description="SHA-256 (hex) of the bearer token; the token itself is never stored."
    )
    identifiers: list[str] = Field(
        default_factory=list,
        sa_column=Column(JSON, nullable=False),
        description="IIN/BIN a declarant client may act for; empty for portal and official clients.",
    )
    official_id: str | None = Field(
        default=None, max_length=40, description="For official clients: an id from reference/officials.json."
    )
    created_at: datetime = Field(sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def summary(self) -> dict[str, Any]:
        """What may be shown about a client (never the token's hash)."""
        return {
            "name": self.name,
            "kind": str(self.kind),
            "identifiers": list(self.identifiers),
            "official_id": self.official_id,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


class ApiClientUsage(SQLModel, table=True):
    """The request bodies a client sent for submissions and verifications on one Kazakhstan calendar day: what
    ``api_client_bytes_per_day`` is counted against. Kept in the database, so the count survives a restart and
    holds across API processes; a row per client per day, bumped once per request when its body is read."""

    __tablename__ = "api_client_usage"

    client_id: int = Field(primary_key=True, foreign_key="api_client.id")
    day: date = Field(primary_key=True, description="Kazakhstan (Asia/Almaty) date")
    body_bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
    requests: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
