"""Clients of the intake HTTP API: creating them (the token is shown once), revoking, listing, authenticating.

Only the SHA-256 of a token is stored. A token is 32 random bytes (``secrets.token_urlsafe(32)``), so
a plain hash is enough (no salt or slow hash is needed against guessing a 256-bit secret), and a
token is found by the hash of what the caller presents: the lookup never compares the secret itself.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import date, datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from customs.core.clock import utcnow
from customs.core.db import transaction
from customs.core.reference import load_reference
from customs.core.settings import Settings, get_settings
from models.api_client import ApiClient, ApiClientUsage, ClientKind
from models.identifiers import identifier_problem

KINDS = tuple(k.value for k in ClientKind)
MAX_TOKEN_LENGTH = 200  # ours are 43 characters; anything much longer is not one of ours


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError("a client needs a name (e.g. alatau-import or egov-portal)")
    if name != name.strip():
        raise ValueError(f"the client name {name!r} starts or ends with spaces")
    if len(name) > 80:
        raise ValueError(f"the client name has {len(name)} characters; at most 80")
    if not name.isprintable():
        raise ValueError(f"the client name {name!r} contains control characters")
    return name


def create_client(
    name: str,
    kind: str,
    identifiers: Iterable[str] = (),
    official_id: str | None = None,
    *,
    now: datetime | None = None,
    settings: Settings | None = None,
) -> tuple[ApiClient, str]:
    """Register a client and return it with its bearer token, which is not stored and cannot be shown again.

    A declarant client acts for the IIN/BIN it is given (at least one, check digits verified); a portal
    client for any declarant; an official client as the official ``official_id`` of reference/officials.json.
    """
    settings = settings or get_settings()
    name = _check_name(name)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; {kind!r} given")
    ids: list[str] = []
    for value in identifiers:
        value = (value or "").strip()
        problem = identifier_problem(value)
        if problem:
            raise ValueError(f"IIN/BIN {value!r} {problem}")
        if value not in ids:
            ids.append(value)
    if kind == ClientKind.DECLARANT and not ids:
        raise ValueError("a declarant client acts for at least one IIN or BIN: give --id (repeat it for several)")
    if kind != ClientKind.DECLARANT and ids:
        raise ValueError(f"only declarant clients are limited to IIN/BIN; a {kind} client takes no --id")
    if kind == ClientKind.OFFICIAL:
        if not official_id:
            raise ValueError("an official client acts as one official: give --official with an id from reference/officials.json")
        if official_id not in load_reference(settings.reference_dir).officials:
            raise ValueError(f"{official_id!r} is not an authorized official (reference/officials.json)")
    elif official_id is not None:
        raise ValueError(f"only official clients name an official; a {kind} client takes no --official")

    token = secrets.token_urlsafe(32)
    client = ApiClient(
        name=name,
        kind=ClientKind(kind),
        token_sha256=token_hash(token),
        identifiers=ids,
        official_id=official_id,
        created_at=now or utcnow(),
    )
    try:
        with transaction(settings) as session:
            if session.exec(select(ApiClient).where(ApiClient.name == name)).first() is not None:
                raise ValueError(
                    f"a client named {name!r} exists already (names stay taken after revocation); choose another name"
                )
            session.add(client)
    except IntegrityError:  # the same name created at the same moment elsewhere
        raise ValueError(f"a client named {name!r} exists already; choose another name") from None
    return client, token


class ClientNotFound(LookupError, ValueError):
    """No API client by that name (a ValueError too, as it was before it had a class of its own)."""


def revoke_client(name: str, *, now: datetime | None = None, settings: Settings | None = None) -> ApiClient:
    """Revoke a client's token at once; a client revoked before is returned unchanged."""
    with transaction(settings) as session:
        client = session.exec(select(ApiClient).where(ApiClient.name == name).with_for_update()).first()
        if client is None:
            raise ClientNotFound(f"no API client named {name!r}")
        if client.revoked_at is None:
            client.revoked_at = now or utcnow()
            session.add(client)
        return client


def list_clients(*, include_revoked: bool = True, settings: Settings | None = None) -> list[ApiClient]:
    with transaction(settings) as session:
        query = select(ApiClient).order_by(ApiClient.name)
        if not include_revoked:
            query = query.where(ApiClient.revoked_at.is_(None))
        return list(session.exec(query))


def authenticate(token: str | None, *, settings: Settings | None = None) -> ApiClient | None:
    """The active client whose token this is, or ``None`` (unknown, revoked, or not a token at all)."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    digest = token_hash(token)
    with transaction(settings) as session:
        client = session.exec(select(ApiClient).where(ApiClient.token_sha256 == digest)).first()
    if client is None or not hmac.compare_digest(client.token_sha256, digest) or client.revoked_at is not None:
        return None
    return client


def bytes_sent_on(client_id: int, day: date, *, settings: Settings | None = None) -> int:
    """The body bytes ``client_id`` sent for submissions and verifications on ``day`` (Kazakhstan date), as counted
    by ``count_bytes_sent``: in the database, so a restart or another API process does not forget them."""
    with transaction(settings) as session:
        usage = session.get(ApiClientUsage, (client_id, day))
        return usage.body_bytes if usage is not None else 0


def count_bytes_sent(client_id: int, day: date, body_bytes: int, *, settings: Settings | None = None) -> None:
    """Add one request's body to the client's count for ``day`` (one row per client per day, bumped atomically)."""
    with transaction(settings) as session:
        if session.get_bind().dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        row = insert(ApiClientUsage).values(client_id=client_id, day=day, body_bytes=body_bytes, requests=1)
        session.execute(
            row.on_conflict_do_update(
                index_elements=["client_id", "day"],
                set_={
                    "body_bytes": ApiClientUsage.body_bytes + row.excluded.body_bytes,
                    "requests": ApiClientUsage.requests + 1,
                },
            )
        )
