"""Authentication (bearer tokens of `customs clients`) and who may do what.

Who may do what is decided by the client's kind:

- ``declarant``: submits through the electronic channel, only declarations whose declarant (box 14
  IIN/BIN) is one of its identifiers, and sees and asks for paper copies of those only;
- ``portal``: submits through the portal channel for any declarant, sees every declaration;
- ``official``: enters paper declarations, decides, cancels releases, affixes release marks and reads
  the print queue, as the official of reference/officials.json it was created for, within that
  official's office.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from customs.api.errors import BAD_TOKEN, NO_TOKEN, ApiError
from customs.core.db import find_declaration, transaction
from customs.core.reference import load_reference
from customs.core.settings import Settings
from customs.services.clients import authenticate
from models.api_client import ApiClient, ClientKind
from models.document import written_declarant
from models.reference import Official

bearer = HTTPBearer(
    scheme_name="bearer",
    auto_error=False,
    description="A client token from `customs clients add` (shown once when the client is created).",
)


def current_client(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> ApiClient:
    gated = getattr(request.state, "client", None)  # authenticated by the gate before the body was read
    if gated is not None:
        return gated
    if credentials is None:
        raise ApiError(
            401,
            "UNAUTHENTICATED",
            NO_TOKEN,
            "Authorization",
            {"WWW-Authenticate": "Bearer"},
        )
    client = authenticate(credentials.credentials)
    if client is None:
        raise ApiError(
            401,
            "UNAUTHENTICATED",
            BAD_TOKEN,
            "Authorization",
            {"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return client


Client = Annotated[ApiClient, Depends(current_client)]


def require_kind(client: ApiClient, *kinds: ClientKind) -> None:
    if client.kind not in kinds:
        if kinds == (ClientKind.OFFICIAL,):
            raise ApiError(
                403, "NOT_AN_OFFICIAL", f"client {client.name!r} is a {client.kind} client; only official clients do this"
            )
        raise ApiError(
            403,
            "CLIENT_KIND_NOT_ALLOWED",
            f"client {client.name!r} is a {client.kind} client; this is for {' and '.join(k.value for k in kinds)} clients",
        )


def official_of(client: ApiClient, settings: Settings) -> Official:
    official = load_reference(settings.reference_dir).officials.get(client.official_id or "")
    if official is None:
        raise ApiError(
            403,
            "OFFICIAL_UNKNOWN",
            f"client {client.name!r} acts as {client.official_id!r}, who is no longer an authorized "
            "official (reference/officials.json)",
            "official",
        )
    return official


@dataclass(frozen=True)
class DeclarationScope:
    application_id: str
    registration_number: str | None
    office: str | None
    declarant_ids: frozenset[str]


def scope_of(key: str) -> DeclarationScope:
    """Whose declaration it is: its office, and the declarant's IIN and BIN (box 14) as stored."""
    with transaction() as session:
        declaration = find_declaration(session, key)
        ids = {declaration.declarant_id} if declaration.declarant_id else set()
        ids |= written_declarant(declaration.content).ids
        return DeclarationScope(
            declaration.application_id, declaration.registration_number, declaration.customs_office, frozenset(ids)
        )


def check_access(client: ApiClient, scope: DeclarationScope, settings: Settings) -> None:
    """Declarant clients see their own declarations; officials those of their office; the portal all."""
    if client.kind == ClientKind.DECLARANT and not scope.declarant_ids & set(client.identifiers):
        raise ApiError(
            403,
            "NOT_YOURS",
            f"declaration {scope.application_id} is not of a declarant client {client.name!r} acts for "
            f"({', '.join(client.identifiers)})",
            "key",
        )
    if client.kind == ClientKind.OFFICIAL:
        official = official_of(client, settings)
        if official.office != scope.office:
            raise ApiError(
                403,
                "OFFICE_MISMATCH",
                f"official {official.id} acts for customs office {official.office}; "
                f"declaration {scope.application_id} is of office {scope.office}",
                "key",
            )
