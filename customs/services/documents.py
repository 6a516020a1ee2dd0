"""Is this document genuine? The check a declarant, a bank or a border post makes of what the authority sent:
a letter's decision.json (with its detached decision.json.p7s) or a paper copy's PDF (its embedded PAdES signature,
or for a GOST service certificate the detached CMS kept with the print request), and whether what it states still
holds in the database. Also the paper copy's QR check (a registration number and a SHA-256).

The signature goes through ``customs.pki.verify.CmsSignatureVerifier`` (chain, CRL, key usage, algorithm, RSA and
GOST alike) with ``AuthorityRule``: only a legal entity certificate of the authority's BIN signs for it. There is no
trusted time-stamp in these signatures, so the service certificate must be valid, and not revoked, now.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from asn1crypto import cms as asn1_cms
from sqlmodel import select

from customs.core.clock import kz_display, utcnow
from customs.core.db import DeclarationNotFound, find_declaration, transaction
from customs.core.reference import load_reference
from customs.core.settings import Settings, get_settings
from customs.notices.render import DECISION_SCHEMA
from customs.pki.certificates import decode_signature
from customs.pki.signing import PdfUnreadable, pdf_signatures
from customs.pki.verify import SignedDocument, configured_verifier
from customs.rules.signers import AuthorityRule
from customs.services.authority import DETACHED, UNSIGNED
from models.audit import AuditEvent
from models.declaration import Declaration
from models.printing import PrintRequest

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
NUMBER = re.compile(r"^[0-9A-Za-z/\-]{1,30}$")

# What a decision states, and the status the declaration has while it holds
DECISION_STATUS = {"release": "released", "release_refusal": "release_refused", "release_cancellation": "release_cancelled"}


class DocumentInputError(ValueError):
    """The input cannot be checked at all (empty, not a PDF that can be read...); ``path`` says which input."""

    def __init__(self, message: str, path: str = "document"):
        super().__init__(message)
        self.message, self.path = message, path


class VerificationUnavailable(RuntimeError):
    """Nothing can be verified here: no trust directory, or no authority in the reference data."""


@dataclass
class DocumentCheck:
    genuine: bool
    kind: str  # "decision" (decision.json), "paper_copy" (a PDF) or "document"
    sha256: str
    signature: str  # where the signature came from: "embedded in the PDF", "decision.json.p7s", ...
    reasons: list[dict[str, Any]] = field(default_factory=list)
    signer: dict[str, Any] | None = None
    signed_at: str | None = None
    states: dict[str, Any] | None = None  # what a decision.json says
    database: dict[str, Any] | None = None  # what the database holds now

    def as_dict(self) -> dict[str, Any]:
        return {
            "genuine": self.genuine,
            "kind": self.kind,
            "sha256": self.sha256,
            "signature": self.signature,
            "reasons": self.reasons,
            "signer": self.signer,
            "signed_at": self.signed_at,
            "states": self.states,
            "database": self.database,
        }


def _reason(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


def _signing_time(signature: bytes) -> datetime | None:
    try:
        info = asn1_cms.ContentInfo.load(decode_signature(signature))
        for attribute in info["content"]["signer_infos"][0]["signed_attrs"]:
            if attribute["type"].native == "signing_time":
                return attribute["values"][0].native
    except Exception:
        return None
    return None


def _decision_states(content: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("schema") != DECISION_SCHEMA:
        return None
    keys = ("application_id", "registration_number", "decision", "decision_code", "decided_at", "declaration_sha256")
    return {k: document.get(k) for k in keys}


def verify_document(
    content: bytes,
    signature: bytes | None = None,
    *,
    filename: str = "document",
    signature_name: str | None = None,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> DocumentCheck:
    """Check one document the authority signed. ``signature``: a detached CMS over ``content`` (decision.json's
    .p7s, or a GOST-signed copy's); a PDF without one is checked by its embedded signature."""
    settings = settings or get_settings()
    now = now or utcnow()
    if not content:
        raise DocumentInputError(f"{filename} is empty: nothing to check")
    digest = hashlib.sha256(content).hexdigest()
    is_pdf = content.startswith(b"%PDF-")
    states = None if is_pdf else _decision_states(content)
    kind = "paper_copy" if is_pdf else "decision" if states else "document"
    check = DocumentCheck(False, kind, digest, "none", states=states)
    request = _print_request_of(digest, settings) if is_pdf else None

    signed_bytes = content
    if signature is not None:
        if not signature.strip():
            raise DocumentInputError(f"the signature {signature_name or ''} is empty".replace("  ", " "), "signature")
        check.signature = f"detached CMS ({signature_name or 'given'})"
    elif is_pdf:
        try:
            embedded = pdf_signatures(content)
        except PdfUnreadable as exc:
            raise DocumentInputError(f"{filename}: {exc}") from None
        if embedded:
            last = embedded[-1]
            signature, signed_bytes = last.cms, last.signed_bytes
            check.signature = f"embedded in the PDF (field {last.field_name})"
            if not last.covers_whole_file:
                check.reasons.append(
                    _reason(
                        "CHANGED_AFTER_SIGNING",
                        f"{filename}: bytes were added to the PDF after its signature (an incremental update): "
                        "what it shows now is not what was signed",
                    )
                )
        elif request is not None and request.copy_signature_kind == DETACHED and request.copy_signature:
            signature = request.copy_signature
            check.signature = f"detached CMS kept with print request {request.request_id}"
    if signature is None:
        if request is not None and request.copy_signature_kind == UNSIGNED:
            why = (
                f"copy of print request {request.request_id}, issued unsigned (no service certificate was configured "
                "then): only its number and SHA-256 can be checked"
            )
        elif is_pdf:
            why = "no signature is embedded in the PDF and none was given (a copy signed with a GOST key has a detached .p7s)"
        else:
            why = f"no signature was given: the letter carries it next to the file ({filename}.p7s)"
        check.reasons.append(_reason("NOT_SIGNED", f"{filename} is not signed by the authority: {why}"))
        check.database = _database(check, request, settings)
        return check

    if settings.trust_dir is None:
        raise VerificationUnavailable("no trust directory is configured (CUSTOMS_TRUST_DIR): no signature can be verified")
    authority = load_reference(settings.reference_dir).authority
    if authority is None:
        raise VerificationUnavailable(f"{settings.reference_dir}/officials.json names no authority: whose signature to expect?")
    verifier = configured_verifier(
        settings.trust_dir, settings.crl_dir, require_non_repudiation=True, require_crl=settings.require_crl
    )
    verdict = verifier.verify(
        SignedDocument(kind, filename, signed_bytes, signature), at=now, now=now, rule=AuthorityRule(authority.bin)
    )
    check.reasons += [_reason(r.code, r.message) for r in verdict.reasons]
    if verdict.signer is not None:
        s = verdict.signer
        check.signer = {
            "name": s.name,
            "bin": s.bin,
            "iin": s.iin,
            "serial": s.serial_hex,
            "algorithm": s.algorithm,
            "subject": s.subject,
            "issuer": s.issuer,
            "valid_to": s.not_after.isoformat(),
        }
    signed_at = _signing_time(signature)
    check.signed_at = signed_at.isoformat() if signed_at else None
    check.genuine = not check.reasons
    check.database = _database(check, request, settings)
    return check


def _print_request_of(digest: str, settings: Settings) -> PrintRequest | None:
    with transaction(settings) as session:
        request = session.exec(select(PrintRequest).where(PrintRequest.pdf_sha256 == digest)).first()
        if request is not None:
            session.expunge(request)
        return request


def _cancellation(session, application_id: str) -> datetime | None:
    event = session.exec(
        select(AuditEvent)
        .where(AuditEvent.application_id == application_id, AuditEvent.to_status == "release_cancelled")
        .order_by(AuditEvent.seq.desc())
    ).first()
    return event.at if event else None


def _database(check: DocumentCheck, request: PrintRequest | None, settings: Settings) -> dict[str, Any] | None:
    """What the database holds now about what the document states: found, the current status, whether it still holds."""
    if check.kind == "decision":
        key = check.states.get("application_id") or check.states.get("registration_number")
        if not isinstance(key, str) or not key:
            return {"found": False, "holds": False, "message": "the document names no application id or registration number"}
        with transaction(settings) as session:
            try:
                declaration = find_declaration(session, key)
            except DeclarationNotFound:
                return {"found": False, "holds": False, "message": f"no declaration {key} in this system's database"}
            return _compare_decision(check.states, declaration, _cancellation(session, declaration.application_id))
    if check.kind == "paper_copy":
        if request is None:
            return {"found": False, "holds": False, "message": "no paper copy with these exact bytes was issued by this system"}
        with transaction(settings) as session:
            declaration = find_declaration(session, request.application_id)
            cancelled = _cancellation(session, declaration.application_id)
            answer = {
                "found": True,
                "request_id": request.request_id,
                "registration_number": request.registration_number,
                "rendered_at": request.rendered_at.isoformat() if request.rendered_at else None,
                "status": str(declaration.status),
                "holds": True,
                "message": f"copy of print request {request.request_id} ({request.registration_number}); "
                f"the declaration is {declaration.status} now",
            }
            if cancelled is not None:
                answer["holds"] = False
                answer["message"] = (
                    f"the copy is genuine, but the release of {request.registration_number} was cancelled on "
                    f"{kz_display(cancelled)}"
                )
            return answer
    return None


def _compare_decision(states: dict[str, Any], declaration: Declaration, cancelled: datetime | None) -> dict[str, Any]:
    status = str(declaration.status)
    answer: dict[str, Any] = {
        "found": True,
        "application_id": declaration.application_id,
        "registration_number": declaration.registration_number,
        "status": status,
    }
    problems = []
    if states.get("declaration_sha256") != declaration.content_sha256:
        problems.append("the declaration's SHA-256 differs from the one stored")
    if states.get("registration_number") != declaration.registration_number:
        problems.append(f"the registration number stored is {declaration.registration_number}")
    expected_code = declaration.decision_code if states.get("decision") == "release" else None
    if expected_code and states.get("decision_code") != expected_code:
        problems.append(f"the decision code stored is {expected_code}, not {states.get('decision_code')}")
    expected = DECISION_STATUS.get(str(states.get("decision")))
    if problems:
        answer.update(holds=False, message="the document does not match the database: " + "; ".join(problems))
    elif expected == status:
        answer.update(holds=True, message=f"the database agrees: {declaration.registration_number} is {status}")
    elif states.get("decision") == "release" and status == "release_cancelled":
        when = f" on {kz_display(cancelled)}" if cancelled else ""
        answer.update(
            holds=False,
            cancelled_at=cancelled.isoformat() if cancelled else None,
            message=f"the document is genuine, but the release was cancelled{when}",
        )
    else:
        answer.update(holds=False, message=f"the document states {states.get('decision')}; the declaration is {status} now")
    return answer


def check_declaration(number: str, sha256: str, *, settings: Settings | None = None) -> dict[str, Any]:
    """The paper copy's QR check: is there a declaration with this registration number and SHA-256, and its status.
    Nothing private: no declarant, goods or amounts. An unknown number and a wrong hash answer alike."""
    settings = settings or get_settings()
    number, sha256 = number.strip(), sha256.strip().lower()
    if not NUMBER.match(number):
        raise DocumentInputError(f"number {number[:40]!r} is not a registration number", "number")
    if not SHA256_HEX.match(sha256):
        raise DocumentInputError("sha256 must be 64 hexadecimal characters (the SHA-256 printed on the copy)", "sha256")
    with transaction(settings) as session:
        declaration = session.exec(select(Declaration).where(Declaration.registration_number == number)).first()
        if declaration is None or declaration.content_sha256 != sha256:
            return {
                "found": False,
                "registration_number": number,
                "sha256": sha256,
                "message": f"no declaration {number} with this SHA-256 is held here: the copy was not made from a "
                "declaration of this system, or its number or sum was altered",
            }
        cancelled = _cancellation(session, declaration.application_id)
        answer = {
            "found": True,
            "registration_number": number,
            "sha256": sha256,
            "status": str(declaration.status),
            "customs_office": declaration.customs_office,
            "registered_at": declaration.registered_at.isoformat() if declaration.registered_at else None,
            "decision_code": declaration.decision_code,
            "decided_at": declaration.decided_at.isoformat() if declaration.decided_at else None,
            "message": f"declaration {number} is held here with this SHA-256; its status is {declaration.status}",
        }
        if cancelled is not None:
            answer["cancelled_at"] = cancelled.isoformat()
            answer["message"] += f" (its release was cancelled on {kz_display(cancelled)})"
        return answer
