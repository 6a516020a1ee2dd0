"""Official acts as signed documents: the canonical bytes an official signs, and the rules an act must meet.

Plain functions of data (no database, no Prefect): the use cases in customs.services.official_acts apply them.

- ``act_bytes``: the canonical form (UTF-8 JSON, keys sorted, no spaces): the same act is always the same bytes,
  so a CLI, a web page with NCALayer and the service agree on what was signed.
- ``parse_act``: the bytes as received, back into an ``OfficialAct``, with a clear reason when they are not one.
- ``act_problem``: does the signed act say what the request says (the act, the official, the declaration and its
  SHA-256, the choice, the grounds), and is it fresh (signed within ``max_age``, not in the future)?
- ``OfficialRule``: who may sign an official's act: that official, by an NCA certificate of an employee of the
  revenue authority (IIN of the official in SERIALNUMBER, the authority's BIN in OU, the NCA role employee).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from customs.rules.signers import EMPLOYEE, ROLE_NAMES, Signer
from models.official_act import ACT_SCHEMA, OfficialAct
from models.reasons import Detail, Reason

MAX_ACT_BYTES = 16 * 1024
DEFAULT_MAX_AGE = timedelta(minutes=10)
CLOCK_SKEW = timedelta(minutes=2)


def new_act(
    act: str,
    *,
    official_id: str,
    at: datetime,
    subject: dict[str, str] | None = None,
    choice: dict[str, str] | None = None,
    grounds: list[str] | None = None,
    text: str = "",
    nonce: str | None = None,
) -> OfficialAct:
    """An act ready to be signed (a fresh nonce unless one is given)."""
    return OfficialAct(
        schema=ACT_SCHEMA,
        act=act,
        official_id=official_id,
        subject={k: str(v) for k, v in (subject or {}).items() if v is not None},
        choice={k: str(v) for k, v in (choice or {}).items() if v is not None},
        grounds=list(grounds or []),
        text=text,
        at=at.astimezone(UTC).replace(microsecond=0),
        nonce=nonce or secrets.token_hex(16),
    )


def act_bytes(act: OfficialAct) -> bytes:
    """The canonical bytes of an act: what the official signs."""
    values = act.model_dump(mode="json", by_alias=True)
    if act.at.utcoffset() is not None:
        values["at"] = act.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps(values, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _reason(code: str, message: str, path: str = "act") -> Reason:
    return Reason(code=code, path=path, message=message)


def parse_act(raw: bytes) -> OfficialAct | Reason:
    """The signed document back as an act, or why it is not one (ACT_MALFORMED)."""
    if len(raw) > MAX_ACT_BYTES:
        return _reason("ACT_MALFORMED", f"the act is {len(raw)} bytes; an official act is at most {MAX_ACT_BYTES} bytes")
    try:
        values = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _reason("ACT_MALFORMED", f"the act is not UTF-8 JSON: {exc}")
    if not isinstance(values, dict):
        return _reason("ACT_MALFORMED", "the act is not a JSON object")
    try:
        act = OfficialAct.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "act"
        return _reason("ACT_MALFORMED", f"{where}: {first['msg']}", path=f"act.{where}")
    if act.at.utcoffset() is None:
        return _reason("ACT_MALFORMED", "at: the act's time must carry its offset (e.g. 2026-12-07T10:00:00Z)", "act.at")
    if act_bytes(act) != raw:
        return _reason(
            "ACT_MALFORMED",
            "the act is not in its canonical form (UTF-8 JSON, keys sorted, no spaces, time as YYYY-MM-DDTHH:MM:SSZ): "
            "sign the document exactly as the service drafts it",
        )
    return act


@dataclass(frozen=True)
class Expected:
    """What the request says the act is: each field given must be in the signed act, with the same value."""

    act: str
    official_id: str | None = None
    subject: dict[str, str] | None = None
    choice: dict[str, str] | None = None
    grounds: list[str] | None = None


def act_problem(act: OfficialAct, expected: Expected, *, now: datetime, max_age: timedelta = DEFAULT_MAX_AGE) -> Reason | None:
    """Why this signed act cannot stand for the request, or None."""
    if act.act != expected.act:
        return _reason("ACT_MISMATCH", f"the signed act is {act.act!r}, not {expected.act!r}", "act.act")
    if expected.official_id is not None and act.official_id != expected.official_id:
        return _reason(
            "ACT_MISMATCH",
            f"the act is signed as official {act.official_id}, but the request is {expected.official_id}'s",
            "act.official_id",
        )
    for field in ("subject", "choice"):
        wanted: dict[str, Any] = getattr(expected, field) or {}
        signed = getattr(act, field)
        for key, value in wanted.items():
            if value is not None and signed.get(key) != str(value):
                return _reason(
                    "ACT_MISMATCH",
                    f"{field}.{key}: the signed act says {signed.get(key)!r}, the request {str(value)!r}",
                    f"act.{field}.{key}",
                )
    if expected.grounds is not None and sorted(act.grounds) != sorted(expected.grounds):
        return _reason(
            "ACT_MISMATCH", f"grounds: the signed act says {act.grounds}, the request {expected.grounds}", "act.grounds"
        )
    if act.at > now + CLOCK_SKEW:
        return _reason("ACT_STALE", f"the act is dated {act.at.isoformat()}, in the future", "act.at")
    if now - act.at > max_age:
        minutes = int(max_age.total_seconds() // 60)
        return _reason(
            "ACT_STALE",
            f"the act was signed at {act.at.isoformat()}, more than {minutes} minutes ago: sign a fresh one",
            "act.at",
        )
    return None


@dataclass(frozen=True)
class OfficialRule:
    """Only this official may sign their act: an employee's certificate of the revenue authority with their IIN."""

    official_id: str
    official_iin: str
    authority_bin: str
    code: str = "SIGNER_NOT_OFFICIAL"

    def problem(self, signer: Signer) -> Detail | None:
        ids = {"signer_iin": signer.iin or "—", "signer_bin": signer.bin or "—", "official_id": self.official_id}
        if signer.iin != self.official_iin:
            return Detail(
                f"signed by {signer.describe()}, not by official {self.official_id} (the certificate's IIN must be the "
                "official's own)",
                variant="iin_mismatch",
                **ids,
            )
        if signer.bin != self.authority_bin:
            return Detail(
                f"signed by {signer.describe()}: an official signs with a certificate of the revenue authority "
                f"(BIN {self.authority_bin}), not a private or another organisation's one",
                variant="not_authority",
                **ids,
            )
        if EMPLOYEE not in signer.roles:
            return Detail(
                f"signed by {signer.describe()}: the certificate is not an employee's ({ROLE_NAMES[EMPLOYEE]}, {EMPLOYEE})",
                variant="not_employee",
                **ids,
            )
        return None
