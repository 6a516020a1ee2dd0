"""Official acts proven by the official's EDS: draft one, verify one, keep it.

Every surface (the CLI, the API, the officials' pages) takes an official's act the same way:

1. ``draft_act`` writes the canonical document of the act (customs.rules.official_acts), naming the declaration by
   its registration number and the SHA-256 of its bytes, with the time and a fresh nonce;
2. the official signs those bytes with the SIGN key of their NCA certificate (NCALayer's CMS, or `customs sign`);
3. ``verify_act`` checks the signature with the verifier declarants' signatures go through (chain to NCA's
   roots, CRL, key usage, algorithm, RSA or GOST) and that the signer is the official named in the act
   (``OfficialRule``: their IIN, the authority's BIN, an employee's certificate); then the use case checks, under
   the declaration's row lock, that the act says what is being done (``act_problem``) and may be done;
4. ``record_act`` keeps the document and the signature exactly as received, once per nonce (a replayed act is
   refused), and the use case's audit event carries ``SignedOfficialAct.reference()``.

A refused act is audited by the use case (``official_action_refused``) and changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from customs.core.clock import utcnow
from customs.core.db import find_declaration, transaction
from customs.core.reference import load_reference
from customs.core.settings import Settings, get_settings
from customs.pki.certificates import SignerIdentity
from customs.pki.verify import SignedDocument, configured_verifier
from customs.rules.official_acts import Expected, OfficialRule, act_bytes, act_problem, new_act, parse_act
from models.audit import AuditEvent
from models.declaration import Declaration
from models.official_act import OfficialAct, SignedOfficialAct
from models.reasons import Reason
from models.reference import ReferenceData

MAX_SIGNATURE_BYTES = 64 * 1024


@dataclass(frozen=True)
class SignedAct:
    """An act as the official gives it: the document's bytes and the detached CMS over them."""

    document: bytes
    signature: bytes

    @classmethod
    def from_base64(cls, document: str, signature: str) -> SignedAct | Reason:
        """As the API and the officials' pages receive them (NCALayer answers base64)."""
        try:
            return cls(base64.b64decode(document, validate=True), base64.b64decode(signature, validate=True))
        except (binascii.Error, ValueError) as exc:
            return Reason(code="ACT_MALFORMED", path="act", message=f"the act or its signature is not base64: {exc}")


@dataclass(frozen=True)
class VerifiedAct:
    """A signed act whose signature holds and whose signer is the official it names."""

    act: OfficialAct
    signed: SignedAct
    signer: SignerIdentity

    @property
    def official_id(self) -> str:
        return self.act.official_id


def declaration_subject(declaration: Declaration) -> dict[str, str]:
    """How an act names a declaration: its application id, registration number and the SHA-256 of its bytes."""
    subject = {"application_id": declaration.application_id, "declaration_sha256": declaration.content_sha256}
    if declaration.registration_number:
        subject["registration_number"] = declaration.registration_number
    return subject


def draft_act(
    act: str,
    *,
    official_id: str,
    declaration_key: str | None = None,
    subject: dict[str, str] | None = None,
    choice: dict[str, str] | None = None,
    grounds: list[str] | None = None,
    text: str = "",
    now: datetime | None = None,
) -> bytes:
    """The canonical document of an act, to be signed by the official (about a declaration when a key is given)."""
    subject = dict(subject or {})
    if declaration_key is not None:
        with transaction() as session:
            subject = declaration_subject(find_declaration(session, declaration_key)) | subject
    return act_bytes(
        new_act(
            act,
            official_id=official_id,
            at=now or utcnow(),
            subject=subject,
            choice=choice,
            grounds=grounds,
            text=text,
        )
    )


def verify_act(
    signed: SignedAct,
    *,
    now: datetime | None = None,
    settings: Settings | None = None,
    reference: ReferenceData | None = None,
) -> VerifiedAct | tuple[Reason, str]:
    """The act, its signature checked and its signer bound to the official it names; or why not, with the official
    id to audit the refusal under (the one the act names, or ``unknown``). Nothing is written here."""
    settings = settings or get_settings()
    reference = reference or load_reference(settings.reference_dir)
    now = now or utcnow()
    if not signed.signature:
        return Reason(code="SIGNATURE_MISSING", path="signature", message="an official act must be signed"), "unknown"
    if len(signed.signature) > MAX_SIGNATURE_BYTES:
        return (
            Reason(
                code="SIGNATURE_INVALID",
                path="signature",
                message=f"the signature is {len(signed.signature)} bytes; at most {MAX_SIGNATURE_BYTES}",
            ),
            "unknown",
        )
    act = parse_act(signed.document)
    if isinstance(act, Reason):
        return act, "unknown"
    official = reference.officials.get(act.official_id)
    if official is None:
        return (
            Reason(
                code="OFFICIAL_UNKNOWN",
                path="act.official_id",
                message=f"{act.official_id!r} is not an authorized official (reference/officials.json)",
            ),
            act.official_id,
        )
    if reference.authority is None:
        raise RuntimeError(f"{settings.reference_dir / 'officials.json'} names no authority: officials cannot be verified")
    verifier = configured_verifier(
        settings.trust_dir, settings.crl_dir, require_non_repudiation=True, require_crl=settings.require_crl
    )
    verdict = verifier.verify(
        SignedDocument("act", "official-act.json", signed.document, signed.signature),
        at=act.at if act.at <= now else now,
        now=now,
        rule=OfficialRule(official.id, official.iin, reference.authority.bin),
    )
    if not verdict.valid:
        return verdict.reasons[0], official.id
    return VerifiedAct(act, signed, verdict.signer)


def expected_problem(verified: VerifiedAct, expected: Expected, *, now: datetime, settings: Settings) -> Reason | None:
    return act_problem(verified.act, expected, now=now, max_age=settings.official_act_max_age)


def replayed(session: Session, verified: VerifiedAct) -> Reason | None:
    """The same act (its nonce) was taken before: a signature serves one act, once."""
    earlier = session.exec(select(SignedOfficialAct).where(SignedOfficialAct.nonce == verified.act.nonce)).first()
    if earlier is None:
        return None
    return Reason(
        code="ACT_REPLAYED",
        path="act.nonce",
        message=f"this signed act (nonce {verified.act.nonce}) was already taken at {earlier.recorded_at.isoformat()}; "
        "every act is signed anew",
    )


def record_act(
    session: Session,
    verified: VerifiedAct,
    *,
    application_id: str | None,
    now: datetime,
    outcome: dict[str, Any] | None = None,
) -> SignedOfficialAct:
    """Keep the signed act exactly as received, in the caller's transaction (its audit event names the row)."""
    signer = verified.signer
    row = SignedOfficialAct(
        nonce=verified.act.nonce,
        act=verified.act.act,
        official_id=verified.act.official_id,
        application_id=application_id,
        sha256=hashlib.sha256(verified.signed.document).hexdigest(),
        signer_iin=signer.iin,
        cert_serial=signer.serial_hex,
        cert_subject=signer.subject[:1000],
        cert_issuer=signer.issuer[:1000],
        algorithm=signer.algorithm,
        signed_at=verified.act.at,
        recorded_at=now,
        document=verified.signed.document,
        signature=verified.signed.signature,
        outcome=outcome or {},
    )
    session.add(row)
    session.flush()
    return row


def act_checked(
    session: Session,
    checked: VerifiedAct | tuple[Reason, str],
    expected: Expected,
    *,
    now: datetime,
    settings: Settings,
) -> tuple[VerifiedAct | None, Reason | None, str]:
    """As ``customs.services.officials.act_on_declaration`` for an act that is not about one declaration (a paper
    declaration not stored yet, a bulk requeue of notices): the signed act if it proves its official, says what
    ``expected`` says and was not taken before; else the reason. Returns (act, problem, official id to audit)."""
    if isinstance(checked, tuple):
        return None, checked[0], checked[1]
    problem = expected_problem(checked, expected, now=now, settings=settings) or replayed(session, checked)
    return checked, problem, checked.official_id


# ----------------------------------------------------------------------------------------------
# The proof, for `customs audit verify`

OFFICIAL_DECISIONS = ("released", "release_refused", "release_cancelled")


@dataclass
class ActsCheck:
    """Every official act in the audit trail, with who signed it and whether the signature still proves it."""

    acts: list[dict[str, Any]]
    problems: list[str]  # an act whose stored document or signature no longer proves its audit event
    unsigned: list[str]  # official decisions recorded before acts were signed (no signed act to show)


def verify_official_acts(*, settings: Settings | None = None, now: datetime | None = None) -> ActsCheck:
    """For each audit event that names a signed act: the act's row is there, its document's SHA-256 is the one the
    (hash-chained) event recorded, the document names the event's official and act, and its signature verifies
    again with that official's certificate as of its signing (chain, CRL, key usage). An official's decision with
    no signed act is listed apart (decided before this release)."""
    settings = settings or get_settings()
    reference = load_reference(settings.reference_dir)
    now = now or utcnow()
    check = ActsCheck([], [], [])
    with transaction(settings) as session:
        events = session.exec(select(AuditEvent).order_by(AuditEvent.seq)).all()
        rows = {r.id: r for r in session.exec(select(SignedOfficialAct)).all()}
        numbers = dict(session.exec(select(Declaration.application_id, Declaration.registration_number)).all())
    for event in events:
        reference_of = (event.details or {}).get("signed_act")
        decision = event.to_status in OFFICIAL_DECISIONS and not (event.details or {}).get("automatic", False)
        if reference_of is None:
            if decision and event.actor != "system":
                check.unsigned.append(f"event {event.seq} ({event.application_id}: {event.to_status} by {event.actor})")
            continue
        where = f"event {event.seq} ({event.application_id}, {event.to_status or event.event} by {event.actor})"
        row = rows.get(reference_of.get("id"))
        entry = {
            "seq": event.seq,
            "application_id": event.application_id,
            "registration_number": numbers.get(event.application_id),
            "what": event.to_status or event.event,
            "official_id": event.actor,
            "cert_serial": reference_of.get("cert_serial"),
            "algorithm": reference_of.get("algorithm"),
            "at": event.at,
            "proven": False,
        }
        check.acts.append(entry)
        if row is None:
            check.problems.append(f"{where}: its signed act {reference_of.get('id')} is missing from the database")
            continue
        if hashlib.sha256(row.document).hexdigest() != reference_of.get("sha256"):
            check.problems.append(f"{where}: the stored act is not the document the audit event recorded (SHA-256 differs)")
            continue
        act = parse_act(row.document)
        if isinstance(act, Reason) or act.official_id != event.actor:
            check.problems.append(f"{where}: the stored act does not name official {event.actor}")
            continue
        verified = verify_act(SignedAct(row.document, row.signature), now=now, settings=settings, reference=reference)
        if isinstance(verified, tuple):
            check.problems.append(f"{where}: the stored signature no longer proves the act: {verified[0].message}")
            continue
        if verified.signer.serial_hex != reference_of.get("cert_serial"):
            check.problems.append(f"{where}: signed with certificate {verified.signer.serial_hex}, the audit says another")
            continue
        entry["proven"] = True
    return check
