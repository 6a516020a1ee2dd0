"""Intake: a declaration is accepted, its submission time fixed and its exact bytes stored, or nothing is."""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
import unicodedata
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from customs.core.clock import kz_local, utcnow
from customs.core.db import transaction
from customs.core.reference import load_reference
from customs.core.settings import Settings, get_settings
from customs.rules import Refused
from customs.rules.official_acts import Expected
from customs.rules.officials import authority_problem
from customs.rules.resubmission import EarlierApplication, is_new_application
from customs.services.official_acts import SignedAct, VerifiedAct, act_checked, record_act, verify_act
from customs.services.officials import act_sha256, refuse_official_act
from models.declaration import Attachment, Declaration, Status
from models.document import written_declarant
from models.official_act import SignedOfficialAct
from models.reasons import UNSAFE_CATEGORIES, Reason

CHANNELS = ("electronic", "portal", "paper")
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
# What new_application_id makes: A, the day of submission (yymmdd, Kazakhstan time), -, ten of _ALPHABET. A
# clearance run's parameter is checked against it (a mistyped id is refused by the run form, not the run).
APPLICATION_ID_PATTERN = r"^A[0-9]{6}-[0-9A-HJKMNP-TV-Z]{10}$"


@dataclass(frozen=True)
class IncomingAttachment:
    filename: str
    content: bytes
    signature: bytes | None


@dataclass(frozen=True)
class Submission:
    application_id: str
    submitted_at: datetime
    status: str
    created: bool  # False when identical bytes had been submitted before


def new_application_id(now: datetime) -> str:
    token = "".join(secrets.choice(_ALPHABET) for _ in range(10))
    return f"A{kz_local(now):%y%m%d}-{token}"


def _refused(code: str, message: str, path: str = "$") -> Refused:
    return Refused.because(code, message, path, kind="too_large" if code == "TOO_LARGE" else "invalid")


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _refused("DUPLICATE_KEY", f"the key {key!r} appears twice in one object; which value counts would be ambiguous")
        seen[key] = value
    return seen


def read_document(content: bytes, settings: Settings) -> dict[str, Any]:
    """Intake's own checks: size, UTF-8, JSON, an object. Raises Refused; stores nothing."""
    if not content:
        raise _refused("EMPTY", "the declaration is empty")
    if len(content) > settings.max_declaration_bytes:
        raise _refused(
            "TOO_LARGE", f"the declaration has {len(content)} bytes; at most {settings.max_declaration_bytes} are accepted"
        )
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _refused(
            "NOT_UTF8", f"the declaration is not UTF-8 text: byte {exc.object[exc.start]:#04x} at offset {exc.start} is invalid"
        ) from None
    try:
        data = json.loads(
            text,
            object_pairs_hook=_reject_duplicate_keys,
            parse_int=_bounded_int,
            parse_float=_finite_float,
            parse_constant=_no_constant,
        )
    except json.JSONDecodeError as exc:
        raise _refused(
            "JSON_INVALID", f"the declaration is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except RecursionError:  # the decoder's own guard, far above MAX_DEPTH
        raise _refused("TOO_DEEP", f"the declaration nests objects and arrays more than {MAX_DEPTH} levels deep") from None
    if not isinstance(data, dict):
        raise _refused("OBJECT_EXPECTED", f"the declaration must be a JSON object, not a {type(data).__name__}")
    depth, where = _depth(data)
    if depth > MAX_DEPTH:
        raise _refused("TOO_DEEP", f"the declaration nests objects and arrays {depth} levels deep; at most {MAX_DEPTH}", where)
    if found := _unstorable_character(data):
        where, char = found
        what = "NUL" if char == "\x00" else "half of a UTF-16 surrogate pair without its other half, not a character"
        raise _refused(
            "CHARACTER_NOT_ALLOWED",
            f"the text at {where} contains \\u{ord(char):04x} ({what}); no field of a declaration allows it "
            "and it cannot be stored",
            where,
        )
    return data


MAX_DEPTH = 32  # the document schema needs 4; anything far deeper is an attack on whatever walks it
MAX_INTEGER_DIGITS = 18  # the largest number a declaration carries (a quantity, a 10-digit HS code) needs far fewer


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INTEGER_DIGITS:
        raise _refused(
            "NUMBER_TOO_LARGE", f"an integer of {digits} digits; a declaration carries none above {MAX_INTEGER_DIGITS} digits"
        )
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _refused("NUMBER_NOT_FINITE", f"the number {text[:40]} is out of range (it reads as infinity)")
    return value


def _no_constant(name: str) -> float:
    raise _refused("NUMBER_NOT_FINITE", f"{name} is not a number JSON allows (RFC 8259); write a finite number")


def _depth(data: Any) -> tuple[int, str]:
    """How deep ``data`` nests (the root object is level 1), and the path of the deepest point; iterative."""
    deepest, where = 0, "$"
    stack = [(data, 1, "$")]
    while stack:
        value, level, path = stack.pop()
        if level > deepest:
            deepest, where = level, path
        if level > MAX_DEPTH:
            continue  # deep enough to refuse: no need to walk further
        if isinstance(value, dict):
            stack.extend((v, level + 1, f"{path}.{k}") for k, v in value.items() if isinstance(v, (dict, list)))
        elif isinstance(value, list):
            stack.extend((v, level + 1, f"{path}[{i}]") for i, v in enumerate(value) if isinstance(v, (dict, list)))
    return deepest, where


# NUL and lone surrogates: JSON text may escape them (\u0000, \ud800); PostgreSQL text cannot hold a NUL, UTF-8 no surrogate
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _unstorable_character(data: Any) -> tuple[str, str] | None:
    """The path of the first key or string holding NUL or a lone surrogate, and that character; iterative."""
    stack = [(data, "$")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if found := _UNSTORABLE.search(value):
                return path, found.group()
        elif isinstance(value, dict):
            for key, child in value.items():
                if found := _UNSTORABLE.search(key):
                    return f"{path}.{key}", found.group()
                stack.append((child, f"{path}.{key}"))
        elif isinstance(value, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(value))
    return None


def safe_filename(given: str | None, index: int) -> str:
    """An attachment's name as stored and shown, whichever way it came in (multipart or JSON): the last part
    of a path only (some browsers send the local path; ``../../etc/passwd`` is a name, not a place), no
    control, separator or format characters (a NUL is refused by PostgreSQL, CR LF would forge header lines),
    no leading dots, at most 255 characters; ``attachment-N`` when nothing is left. The bytes are untouched."""
    name = (given or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(" " if unicodedata.category(c) in UNSAFE_CATEGORIES else c for c in name)
    name = " ".join(name.split()).lstrip(". ")[:255].rstrip()
    return name or f"attachment-{index + 1}"


def _text_field(data: dict[str, Any], key: str, length: int) -> str | None:
    value = data.get(key)
    return value[:length] if isinstance(value, str) and value else None


def submit_declaration(
    content: bytes,
    signature: bytes | None,
    attachments: list[IncomingAttachment] | tuple = (),
    *,
    channel: str = "electronic",
    now: datetime | None = None,
    actor: str = "declarant",
    official_id: str | None = None,
    act: SignedAct | None = None,
) -> Submission:
    """Accept a declaration: fix the submission time, store the exact bytes with their SHA-256, audit it.

    Identical bytes submitted again return the existing application, never a second one, unless it was refused
    for its signatures alone and the signatures are new (customs.rules.resubmission). A paper
    declaration is entered by an official of the office it is addressed to, by a signed act
    (``enter_paper_declaration``: the SHA-256 of the declaration's bytes and its customs office); it carries no
    electronic signature, the act is kept with the new application, and the official the act proves is the
    submission's actor in the audit chain. ``official_id``, when given, is who the caller authenticated (an API
    client's official): the act must be theirs. A refused act is audited and stores nothing.
    """
    settings = get_settings()
    if channel not in CHANNELS:
        raise _refused("CHANNEL_UNKNOWN", f"channel must be one of {', '.join(CHANNELS)}; {channel!r} given", "channel")
    data = read_document(content, settings)
    if channel == "paper":
        if signature or any(a.signature for a in attachments):
            raise _refused(
                "PAPER_SIGNED",
                "a paper declaration is entered by an official and carries no electronic signature; "
                "submit a signed declaration through the electronic channel instead",
                "signature",
            )
    elif official_id is not None or act is not None:
        raise _refused(
            "OFFICIAL_NOT_EXPECTED", "only paper declarations are entered by an official (--channel paper)", "official"
        )
    if len(attachments) > settings.max_attachments:
        raise _refused(
            "TOO_MANY_ATTACHMENTS", f"{len(attachments)} attachments; at most {settings.max_attachments}", "attachments"
        )
    attachments = [replace(a, filename=safe_filename(a.filename, i)) for i, a in enumerate(attachments)]
    for index, attachment in enumerate(attachments):
        where = f"attachments[{index}]"
        if not attachment.content:
            raise _refused("EMPTY", f"attachment {attachment.filename!r} is empty", where)
        if len(attachment.content) > settings.max_attachment_bytes:
            raise _refused(
                "TOO_LARGE",
                f"attachment {attachment.filename!r} has {len(attachment.content)} bytes; "
                f"at most {settings.max_attachment_bytes}",
                where,
            )
    digest = hashlib.sha256(content).hexdigest()

    now = now or utcnow()
    checked = _paper_act(act, now, settings) if channel == "paper" else None
    declarant_id = written_declarant(data).identifier
    signatures = (signature or None, *(a.signature or None for a in attachments))
    refused: Refused | None = None
    try:
        with transaction() as session:
            attempt, resubmission_of = 1, None
            existing = _latest_with(session, digest)
            entry = None
            if channel == "paper":  # the act first: these bytes entered before are no reason to take any act
                entry = _paper_entry_official(session, checked, act, official_id, data, digest, now, settings, existing)
                if isinstance(entry, Refused):  # audited in this transaction; raised once it is committed
                    refused, entry = entry, None
                else:
                    actor = entry.official_id
            if refused is None and existing is not None:
                if not is_new_application(
                    _earlier(session, existing), signatures, limit=settings.max_applications_per_declaration
                ):
                    return Submission(existing.application_id, existing.submitted_at, str(existing.status), created=False)
                attempt, resubmission_of = existing.attempt + 1, existing.application_id
            if refused is None:
                declaration = Declaration(
                    application_id=new_application_id(now),
                    channel=channel,
                    submitted_at=now,
                    updated_at=now,
                    content=content,
                    content_sha256=digest,
                    attempt=attempt,
                    resubmission_of=resubmission_of,
                    signature=signature or None,
                    schema_id=_text_field(data, "schema", 80),
                    customs_office=_text_field(data, "customs_office", 20),
                    declarant_id=declarant_id[:20] if declarant_id else None,
                    entered_by=actor if channel == "paper" else None,
                )
                session.add(declaration)
                session.flush()
                for position, attachment in enumerate(attachments):
                    session.add(
                        Attachment(
                            declaration_id=declaration.id,
                            position=position,
                            filename=attachment.filename[:255],
                            content=attachment.content,
                            content_sha256=hashlib.sha256(attachment.content).hexdigest(),
                            signature=attachment.signature or None,
                        )
                    )
                signed_act = {}
                if entry is not None:
                    record = record_act(session, entry, application_id=declaration.application_id, now=now)
                    signed_act = {"signed_act": record.reference()}
                declaration.record_submission(
                    session,
                    actor=actor,
                    details={
                        "channel": channel,
                        "sha256": digest,
                        "bytes": len(content),
                        "attachments": len(attachments),
                        **({"resubmission_of": resubmission_of, "attempt": attempt} if resubmission_of else {}),
                        **signed_act,
                    },
                )
    except IntegrityError as exc:
        # the same bytes (or the same resubmission) raced in from elsewhere; any other conflict is an error
        existing = find_by_sha256(digest) if _same_bytes_conflict(exc) else None
        if existing is None:
            raise
        return Submission(existing.application_id, existing.submitted_at, str(existing.status), created=False)
    if refused is not None:
        raise refused
    return Submission(declaration.application_id, declaration.submitted_at, Status.SUBMITTED.value, created=True)


def paper_act_subject(content: bytes, settings: Settings | None = None) -> dict[str, str]:
    """How an official's act names a paper declaration to enter: the SHA-256 of its bytes and its customs office."""
    data = read_document(content, settings or get_settings())
    return {
        "declaration_sha256": hashlib.sha256(content).hexdigest(),
        "customs_office": _text_field(data, "customs_office", 80) or "",
    }


def _paper_act(act: SignedAct | None, now: datetime, settings: Settings) -> VerifiedAct | tuple[Reason, str]:
    """The paper entry's act, its signature checked (before the transaction: a CRL read is no time to hold locks)."""
    if act is None:
        return Reason(
            code="SIGNATURE_MISSING",
            path="act",
            message="a paper declaration is entered by an official's signed act (enter_paper_declaration): "
            "give the act and its signature",
        ), "unknown"
    return verify_act(act, now=now, settings=settings)


def _paper_entry_official(
    session: Session,
    checked: VerifiedAct | tuple[Reason, str],
    act: SignedAct | None,
    official_id: str | None,
    data: dict[str, Any],
    digest: str,
    now: datetime,
    settings: Settings,
    existing: Declaration | None,
) -> VerifiedAct | Refused:
    """The official entering a paper declaration proves it by a signed act about these bytes, and is one of the
    office the declaration is addressed to; else the refusal, audited in the caller's transaction (under
    ``paper:<SHA-256>``: the declaration is not stored). The act that entered ``existing`` (these bytes, entered
    before), given again, is a retried call, not a replay: the caller answers with that application."""
    office = _text_field(data, "customs_office", 80)
    expected = Expected(
        act="enter_paper_declaration",
        official_id=official_id,
        subject={"declaration_sha256": digest, "customs_office": office or ""},
    )
    signed, problem, acting = act_checked(session, checked, expected, now=now, settings=settings)
    if problem is not None and problem.code == "ACT_REPLAYED" and existing is not None:
        earlier = session.exec(select(SignedOfficialAct).where(SignedOfficialAct.nonce == signed.act.nonce)).first()
        if earlier.application_id == existing.application_id and earlier.act == "enter_paper_declaration":
            problem = None
    if problem is None:
        official = load_reference(settings.reference_dir).officials.get(acting)
        problem = authority_problem(official, acting, office=office, zone=None)
        if problem is not None and problem.code == "OFFICE_MISMATCH":
            problem = Reason(
                code="OFFICE_MISMATCH",
                path="customs_office",
                message=f"official {official.id} is of customs office {official.office}; "
                f"the declaration is addressed to office {office}",
            )
    if problem is None:
        return signed
    return refuse_official_act(
        session,
        f"paper:{digest[:34]}",
        office,
        acting,
        "enter_paper_declaration",
        problem,
        now,
        {"declaration_sha256": digest, **({"act_sha256": act_sha256(act)} if act is not None else {})},
    )


def _same_bytes_conflict(exc: IntegrityError) -> bool:
    """The unique (content_sha256, attempt) refused the row: on PostgreSQL by its name, on SQLite by its columns."""
    constraint = getattr(getattr(exc.orig, "diag", None), "constraint_name", None)
    return constraint == "uq_declaration_content_attempt" or "declaration.content_sha256, declaration.attempt" in str(exc.orig)


def _latest_with(session, digest: str) -> Declaration | None:
    query = select(Declaration).where(Declaration.content_sha256 == digest).order_by(Declaration.attempt.desc())
    return session.exec(query).first()


def _earlier(session, declaration: Declaration) -> EarlierApplication:
    attachments = session.exec(
        select(Attachment.signature).where(Attachment.declaration_id == declaration.id).order_by(Attachment.position)
    ).all()
    return EarlierApplication(
        application_id=declaration.application_id,
        status=str(declaration.status),
        attempt=declaration.attempt,
        signature_valid=declaration.signature_valid,
        reasons=declaration.reasons,
        signature_reasons=declaration.signature_reasons,
        signatures=(declaration.signature, *attachments),
    )


def find_by_sha256(digest: str) -> Declaration | None:
    """The latest application made of these bytes."""
    with transaction() as session:
        return _latest_with(session, digest)
