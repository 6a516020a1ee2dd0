"""Electronic digital signatures: detached CMS (CAdES-BES, as NCALayer makes them) on the declaration
and on every supporting document.

The verifier is an interface (``SignatureVerifier``); ``CmsSignatureVerifier`` implements it with
pyHanko (CMS parsing and the signature integrity check), pyhanko-certvalidator (path building and
validation at the submission time) and ``cryptography`` (CRL signatures and look-ups). A Kalkan-based
verifier for GOST 34.310 can be plugged in behind the same interface.

Checks, each failure with a stable reason code:
  SIGNATURE_MISSING, SIGNATURE_INVALID (not CMS, not detached, or the signature value does not
  verify), DIGEST_MISMATCH, SIGNER_CERT_MISSING, SIGNATURE_ALGORITHM_UNSUPPORTED (GOST),
  WEAK_KEY, CERT_UNTRUSTED, CERT_EXPIRED, CERT_NOT_YET_VALID, CRL_MISSING, CRL_INVALID, CRL_STALE,
  CERT_REVOKED, KEY_USAGE, SIGNER_NOT_DECLARANT.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol, Sequence

from asn1crypto import cms as asn1_cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID
from pyhanko.sign.validation.generic_cms import extract_certs_for_validation, extract_signer_info, validate_sig_integrity
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator import errors as cv_errors

from prefect import task
from sqlmodel import select

from customs.db import transaction
from customs.settings import get_settings
from customs.timeutil import utcnow
from models.declaration import Attachment, Declaration, Status
from models.identifiers import is_valid_identifier
from models.reasons import Reason
from tasks.common import DeclarationNotFound, StepOutcome, lock_declaration, outcome_of, retry_on_database_error

log = logging.getLogger(__name__)

# OIDs of Kazakh (1.2.398.3.10) and Russian (1.2.643) GOST algorithms that no maintained Python library verifies.
_GOST_PREFIXES = ("1.2.398.3.10.", "1.2.643.")
_RSA_MIN_BITS = 2048
_SHA256 = hashes.SHA256()
_NAME_LABELS = {NameOID.SERIAL_NUMBER: "SERIALNUMBER", NameOID.GIVEN_NAME: "G", NameOID.SURNAME: "SN"}
_EC_CURVES = {"secp256r1": 256, "secp384r1": 384, "secp521r1": 521, "brainpoolP256r1": 256, "brainpoolP384r1": 384, "brainpoolP512r1": 512}


# ----------------------------------------------------------------------------------------------
# Data in and out


@dataclass(frozen=True)
class SignedDocument:
    """Bytes exactly as received and their detached signature (``None`` when none was given)."""

    label: str  # where it sits: "declaration" or "attachments[0]"
    filename: str
    content: bytes = field(repr=False)
    signature: bytes | None = field(repr=False)


@dataclass(frozen=True)
class SignerIdentity:
    subject: str
    serial_hex: str
    issuer: str
    iin: str | None
    bin: str | None
    not_before: datetime
    not_after: datetime

    def describe(self) -> str:
        return f"certificate {self.subject!r} (serial {self.serial_hex})"


@dataclass(frozen=True)
class DocumentVerdict:
    document: SignedDocument
    signer: SignerIdentity | None
    reasons: tuple[Reason, ...]

    @property
    def valid(self) -> bool:
        return not self.reasons

    def summary(self) -> dict:
        return {
            "document": self.document.label,
            "filename": self.document.filename,
            "sha256": hashlib.sha256(self.document.content).hexdigest(),
            "valid": self.valid,
            "signer": None
            if self.signer is None
            else {
                "subject": self.signer.subject,
                "serial": self.signer.serial_hex,
                "issuer": self.signer.issuer,
                "iin": self.signer.iin,
                "bin": self.signer.bin,
            },
        }


class SignatureVerifier(Protocol):
    """Verifies one signed document for a declarant, as of the submission time."""

    def verify(self, document: SignedDocument, *, declarant_ids: Sequence[str], at: datetime, now: datetime) -> DocumentVerdict: ...


# ----------------------------------------------------------------------------------------------
# Pure helpers on certificates (also used against the real NCA certificates in the tests)


def signer_identity(cert: x509.Certificate) -> SignerIdentity:
    """IIN from SERIALNUMBER (``IIN`` + 12 digits), BIN from OU (``BIN`` + 12 digits), as NCA RK writes them."""
    iin = bin_ = None
    for attr in cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER):
        match = re.fullmatch(r"IIN(\d{12})", str(attr.value))
        if match:
            iin = match.group(1)
    for attr in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME):
        match = re.fullmatch(r"BIN(\d{12})", str(attr.value))
        if match:
            bin_ = match.group(1)
    return SignerIdentity(
        subject=cert.subject.rfc4514_string(_NAME_LABELS),
        serial_hex=format(cert.serial_number, "x"),
        issuer=cert.issuer.rfc4514_string(_NAME_LABELS),
        iin=iin,
        bin=bin_,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def key_algorithm_problem(cert: x509.Certificate) -> tuple[str, str] | None:
    """(code, message) when the signer's key cannot be verified here or is too weak; ``None`` when fine."""
    try:
        key = cert.public_key()
    except (UnsupportedAlgorithm, ValueError):
        oid = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER)).public_key["algorithm"]["algorithm"].dotted
        family = "GOST 34.310" if oid.startswith(_GOST_PREFIXES) else "an unsupported"
        return (
            "SIGNATURE_ALGORITHM_UNSUPPORTED",
            f"{family} key (OID {oid}) cannot be verified by this verifier; a Kalkan-based verifier is needed",
        )
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _RSA_MIN_BITS:
            return "WEAK_KEY", f"RSA key of {key.key_size} bits; at least {_RSA_MIN_BITS} are required"
        return None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _EC_CURVES:
            return "WEAK_KEY", f"ECDSA key on curve {key.curve.name}; P-256 or stronger is required"
        return None
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return None
    return "WEAK_KEY", f"{type(key).__name__} keys are not accepted; RSA 2048+ or ECDSA P-256+ is required"


def key_usage_problem(cert: x509.Certificate, *, require_non_repudiation: bool) -> str | None:
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return "has no keyUsage extension; digitalSignature is required"
    missing = []
    if not usage.digital_signature:
        missing.append("digitalSignature")
    if require_non_repudiation and not usage.content_commitment:
        missing.append("nonRepudiation")
    if missing:
        hint = " (an AUTH certificate cannot sign a declaration; use the SIGN certificate)" if "nonRepudiation" in missing and usage.digital_signature else ""
        return f"keyUsage lacks {' and '.join(missing)}{hint}"
    return None


def _load_certificates(blob: bytes) -> list[x509.Certificate]:
    if b"-----BEGIN" in blob:
        return x509.load_pem_x509_certificates(blob)
    return [x509.load_der_x509_certificate(blob)]


def _load_crl(blob: bytes) -> x509.CertificateRevocationList:
    if b"-----BEGIN" in blob:
        return x509.load_pem_x509_crl(blob)
    return x509.load_der_x509_crl(blob)


def _spki_digest(cert: x509.Certificate) -> bytes:
    spki = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER)).public_key.dump()
    return hashlib.sha256(spki).digest()


def decode_signature(blob: bytes) -> bytes:
    """DER as is; PEM (``-----BEGIN CMS/PKCS7-----``) and bare base64 (NCALayer's output) are decoded."""
    stripped = blob.strip()
    if stripped.startswith(b"-----BEGIN"):
        lines = [line for line in stripped.splitlines() if not line.startswith(b"-----")]
        return base64.b64decode(b"".join(lines), validate=False)
    if stripped[:1] == b"M" and re.fullmatch(rb"[A-Za-z0-9+/=\s]+", stripped):
        try:
            return base64.b64decode(b"".join(stripped.split()), validate=True)
        except binascii.Error:
            return blob
    return blob


# ----------------------------------------------------------------------------------------------
# Trust material: loaded and indexed once


@dataclass
class _CrlEntry:
    path: Path
    crl: x509.CertificateRevocationList
    verified_by: dict[bytes, bool] = field(default_factory=dict)  # issuer key digest -> signature valid

    def signed_by(self, issuer: x509.Certificate) -> bool:
        key = _spki_digest(issuer)
        if key not in self.verified_by:
            self.verified_by[key] = _crl_signed_by(self.crl, issuer)
        return self.verified_by[key]


@dataclass
class TrustMaterial:
    """Trust anchors, intermediates and CRLs from ``trust_dir``/``crl_dir``, parsed and indexed once.

    CRLs are indexed by issuer name; each CRL's signature is verified once per issuing key (the
    result is kept). A CRL that names a CA as its issuer but is not signed by that CA's key makes
    every check of that CA's certificates fail with CRL_INVALID: a forged or broken CRL never passes
    silently.
    """

    roots: list[x509.Certificate] = field(default_factory=list)
    intermediates: list[x509.Certificate] = field(default_factory=list)
    crls_by_issuer: dict[bytes, list[_CrlEntry]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, trust_dir: Path | None, crl_dir: Path | None) -> TrustMaterial:
        material = cls()
        if trust_dir is not None and Path(trust_dir).is_dir():
            for path in sorted(p for p in Path(trust_dir).iterdir() if p.is_file()):
                try:
                    certs = _load_certificates(path.read_bytes())
                except ValueError as exc:
                    material.problems.append(f"{path}: not a certificate ({exc})")
                    continue
                for cert in certs:
                    (material.roots if cert.subject == cert.issuer else material.intermediates).append(cert)
        elif trust_dir is not None:
            material.problems.append(f"trust directory {trust_dir} does not exist")
        if crl_dir is not None and Path(crl_dir).is_dir():
            for path in sorted(p for p in Path(crl_dir).iterdir() if p.is_file()):
                try:
                    crl = _load_crl(path.read_bytes())
                except ValueError as exc:
                    material.problems.append(f"{path}: not a CRL ({exc})")
                    continue
                material.crls_by_issuer.setdefault(crl.issuer.public_bytes(), []).append(_CrlEntry(path, crl))
        for problem in material.problems:
            log.warning("trust material: %s", problem)
        return material

    def asn1_roots(self) -> list[asn1_x509.Certificate]:
        return [asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in self.roots]

    def asn1_intermediates(self) -> list[asn1_x509.Certificate]:
        return [asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in self.intermediates]

    def crls_of(self, issuer: x509.Certificate) -> tuple[list[_CrlEntry], list[_CrlEntry]]:
        """(CRLs signed by ``issuer``'s key, CRLs that claim ``issuer``'s name but are not)."""
        entries = self.crls_by_issuer.get(issuer.subject.public_bytes(), [])
        good = [e for e in entries if e.signed_by(issuer)]
        return good, [e for e in entries if e not in good]

    def newest_crls(self) -> dict[str, x509.CertificateRevocationList]:
        """The newest CRL signed by each known CA, keyed by the CA's name as signer summaries write it."""
        newest: dict[str, x509.CertificateRevocationList] = {}
        for ca in self.roots + self.intermediates:
            entries, _ = self.crls_of(ca)
            if entries:
                newest[ca.subject.rfc4514_string(_NAME_LABELS)] = max(entries, key=lambda e: e.crl.last_update_utc).crl
        return newest

    def revocation_problem(self, cert: x509.Certificate, issuer: x509.Certificate, *, at: datetime, now: datetime, required: bool) -> tuple[str, str] | None:
        """Revocation status of ``cert`` (issued by ``issuer``) at the submission time ``at``, using CRLs current at ``now``."""
        issuer_name = issuer.subject.rfc4514_string(_NAME_LABELS)
        entries, bad = self.crls_of(issuer)
        if bad:
            files = ", ".join(e.path.name for e in bad)
            return "CRL_INVALID", f"CRL {files} names {issuer_name!r} as issuer but is not signed by its key"
        if not entries:
            if required:
                return "CRL_MISSING", f"no CRL of {issuer_name!r} in the CRL directory; revocation cannot be checked"
            return None
        newest = max(entries, key=lambda e: e.crl.last_update_utc)
        if newest.crl.next_update_utc is not None and newest.crl.next_update_utc < now:
            return "CRL_STALE", (
                f"the newest CRL of {issuer_name!r} ({newest.path.name}) expired at "
                f"{newest.crl.next_update_utc.isoformat()}; a current CRL is needed"
            )
        revoked = newest.crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if revoked is not None and revoked.revocation_date_utc <= at:
            try:
                why = revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason.value
            except x509.ExtensionNotFound:
                why = "unspecified"
            return "CERT_REVOKED", f"revoked at {revoked.revocation_date_utc.isoformat()} (reason {why}), before the submission at {at.isoformat()}"
        return None


def _crl_signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(ca.public_key())
    except (UnsupportedAlgorithm, ValueError, TypeError):
        return False


# ----------------------------------------------------------------------------------------------
# The verifier


class CmsSignatureVerifier:
    """Detached CMS verification with pyHanko and pyhanko-certvalidator."""

    def __init__(self, trust: TrustMaterial, *, require_non_repudiation: bool = True, require_crl: bool = True):
        self.trust = trust
        self.require_non_repudiation = require_non_repudiation
        self.require_crl = require_crl
        self._roots = trust.asn1_roots()
        self._intermediates = trust.asn1_intermediates()
        self._chain_cache: dict[tuple, list[tuple[str, str]]] = {}

    def verify(self, document: SignedDocument, *, declarant_ids: Sequence[str], at: datetime, now: datetime) -> DocumentVerdict:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.averify(document, declarant_ids=declarant_ids, at=at, now=now))
        raise RuntimeError("inside an event loop: await averify() instead")

    async def averify(self, document: SignedDocument, *, declarant_ids: Sequence[str], at: datetime, now: datetime) -> DocumentVerdict:
        where = f"{document.label} ({document.filename})"

        def reason(code: str, message: str, signer: SignerIdentity | None = None) -> Reason:
            about = f"; {signer.describe()}" if signer else ""
            return Reason(code=code, path=document.label, message=f"signature of {document.filename}: {message}{about}")

        if not document.signature:
            return DocumentVerdict(document, None, (reason("SIGNATURE_MISSING", "no signature was given; every document must be signed by the declarant"),))

        # 1. The CMS parses and is a detached SignedData with one signer.
        try:
            info = asn1_cms.ContentInfo.load(decode_signature(document.signature))
            if info["content_type"].native != "signed_data":
                raise ValueError(f"content type is {info['content_type'].native}, not signed_data")
            signed_data = info["content"]
            signer_info = extract_signer_info(signed_data)
            encapsulated = signed_data["encap_content_info"]["content"]
            certs = extract_certs_for_validation(signed_data)
        except Exception as exc:  # asn1crypto raises many types on garbage
            return DocumentVerdict(document, None, (reason("SIGNATURE_INVALID", f"not a readable CMS SignedData signature ({exc.__class__.__name__}: {exc})"),))
        if encapsulated.native is not None:
            return DocumentVerdict(document, None, (reason("SIGNATURE_INVALID", "the CMS carries its own content; a detached signature over the document is required"),))
        signer_asn1 = certs.signer_cert
        if signer_asn1 is None:
            return DocumentVerdict(document, None, (reason("SIGNER_CERT_MISSING", "the signer's certificate is not included in the CMS"),))
        cert = x509.load_der_x509_certificate(signer_asn1.dump())
        signer = signer_identity(cert)

        # 2. Algorithm and key strength: GOST is refused as unsupported, weak keys as weak.
        problem = key_algorithm_problem(cert)
        if problem:
            return DocumentVerdict(document, signer, (reason(*problem, signer=signer),))

        reasons: list[Reason] = []
        # 3. The signature covers exactly these bytes.
        digest_name = signer_info["digest_algorithm"]["algorithm"].native
        try:
            digest = hashlib.new(digest_name, document.content).digest()
        except (ValueError, TypeError):
            return DocumentVerdict(document, signer, (reason("SIGNATURE_ALGORITHM_UNSUPPORTED", f"digest algorithm {digest_name} is not supported", signer),))
        try:
            intact, valid = validate_sig_integrity(signer_info, signer_asn1, expected_content_type="data", actual_digest=digest)
        except Exception as exc:
            intact, valid = True, False
            log.info("%s: signature integrity check raised %r", where, exc)
        if not intact:
            reasons.append(reason("DIGEST_MISMATCH", "the signature was made over other bytes than the document received (message digest differs)", signer))
        elif not valid:
            reasons.append(reason("SIGNATURE_INVALID", "the signature value does not verify with the signer's public key", signer))

        # 4. Key usage allows signing.
        usage = key_usage_problem(cert, require_non_repudiation=self.require_non_repudiation)
        if usage:
            reasons.append(reason("KEY_USAGE", usage, signer))

        # 5. The signer is the declarant.
        ids = {i for i in declarant_ids if i}
        if not ids:
            reasons.append(reason("SIGNER_NOT_DECLARANT", "the declaration names no valid declarant IIN/BIN to compare the signer with", signer))
        elif not ({signer.iin, signer.bin} & ids):
            who = ", ".join(f"{k} {v}" for k, v in (("IIN", signer.iin), ("BIN", signer.bin)) if v) or "no IIN or BIN"
            reasons.append(reason("SIGNER_NOT_DECLARANT", f"signed by {who}, not by the declarant ({', '.join(sorted(ids))})", signer))

        # 6. Chain to a trust anchor, valid at the submission time, and not revoked then.
        for code, message in await self.chain_problems(cert, at=at, now=now, embedded=certs.other_certs):
            reasons.append(reason(code, message, signer))
        return DocumentVerdict(document, signer, tuple(reasons))

    async def chain_problems(self, cert: x509.Certificate, *, at: datetime, now: datetime, embedded: Sequence = ()) -> list[tuple[str, str]]:
        """(code, message) for a certificate that does not chain to a trust anchor at ``at`` or was revoked by then.

        The answer depends only on the certificate, the certificates the CMS carried and the two times,
        so it is remembered: a declaration and its attachments signed by one certificate cost one
        path validation, not three.
        """
        key = (cert.fingerprint(_SHA256), tuple(c.dump() for c in embedded), at, now)
        cached = self._chain_cache.get(key)
        if cached is None:
            cached = await self._chain_problems(cert, at=at, now=now, embedded=embedded)
            if len(self._chain_cache) >= 1024:
                self._chain_cache.clear()
            self._chain_cache[key] = cached
        return list(cached)

    async def _chain_problems(self, cert: x509.Certificate, *, at: datetime, now: datetime, embedded: Sequence = ()) -> list[tuple[str, str]]:
        signer_asn1 = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
        issuer = cert.issuer.rfc4514_string(_NAME_LABELS)
        context = ValidationContext(
            trust_roots=self._roots,
            other_certs=list(self._intermediates) + list(embedded),
            moment=at,
            allow_fetching=False,
            revocation_mode="soft-fail",
        )
        validator = CertificateValidator(signer_asn1, intermediate_certs=list(embedded), validation_context=context)
        try:
            path = await validator.async_validate_path()
        except cv_errors.PathBuildingError as exc:
            return [("CERT_UNTRUSTED", f"no chain to a trusted root: issuer {issuer!r} or its CA chain is not among the trusted certificates ({exc})")]
        except cv_errors.ExpiredError as exc:
            return [("CERT_EXPIRED", f"expired before the submission at {at.isoformat()} ({exc})")]
        except cv_errors.NotYetValidError as exc:
            return [("CERT_NOT_YET_VALID", f"not yet valid at the submission at {at.isoformat()} ({exc})")]
        except (cv_errors.PathValidationError, cv_errors.InvalidCertificateError) as exc:
            return [("CERT_UNTRUSTED", f"the certificate chain does not validate ({exc})")]
        chain = [x509.load_der_x509_certificate(c.dump()) for c in path.iter_certs(include_root=True)]
        # the chain runs from the trust anchor to the signer; each non-root certificate is checked against its issuer's CRL
        for issuer_cert, subject in zip(chain, chain[1:]):
            is_signer = subject is chain[-1]
            problem = self.trust.revocation_problem(subject, issuer_cert, at=at, now=now, required=self.require_crl and is_signer)
            if problem:
                code, message = problem
                if not is_signer:
                    message = f"CA certificate {subject.subject.rfc4514_string(_NAME_LABELS)!r}: {message}"
                return [(code, message)]
        return []


# ----------------------------------------------------------------------------------------------
# Configured verifier (cached per trust material on disk)

_cache_lock = threading.Lock()
_cache: dict[tuple, CmsSignatureVerifier] = {}


def _fingerprint(directory: Path | None) -> tuple:
    if directory is None or not Path(directory).is_dir():
        return (str(directory), None)
    return (str(directory),) + tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in Path(directory).iterdir() if p.is_file()))


def configured_verifier(trust_dir: Path | None, crl_dir: Path | None, *, require_non_repudiation: bool, require_crl: bool) -> CmsSignatureVerifier:
    """The verifier for these directories; reloaded only when a file in them changes."""
    key = (_fingerprint(trust_dir), _fingerprint(crl_dir), require_non_repudiation, require_crl)
    with _cache_lock:
        verifier = _cache.get(key)
        if verifier is None:
            verifier = CmsSignatureVerifier(TrustMaterial.load(trust_dir, crl_dir), require_non_repudiation=require_non_repudiation, require_crl=require_crl)
            _cache.clear()
            _cache[key] = verifier
        return verifier


def verify_documents(verifier: SignatureVerifier, documents: Sequence[SignedDocument], *, declarant_ids: Sequence[str], at: datetime, now: datetime) -> list[DocumentVerdict]:
    """Verify the declaration and each attachment; every document gets its own verdict."""
    return [verifier.verify(doc, declarant_ids=declarant_ids, at=at, now=now) for doc in documents]


# ----------------------------------------------------------------------------------------------
# The step


def _declarant_ids(content: bytes) -> list[str]:
    """The declarant's IIN/BIN as written in the document, read leniently (the full check is registration's)."""
    try:
        declarant = json.loads(content.decode("utf-8-sig")).get("declarant") or {}
    except (ValueError, AttributeError):
        return []
    if not isinstance(declarant, dict):
        return []
    return [v for v in (declarant.get("iin"), declarant.get("bin")) if isinstance(v, str) and is_valid_identifier(v)]


def check_signatures(application_id: str, *, now: datetime | None = None) -> StepOutcome:
    """Verify the declaration's and each attachment's signature as of the submission time, and record it."""
    settings = get_settings()
    with transaction() as session:  # read what is to be checked without holding the lock during the crypto
        declaration = session.exec(select(Declaration).where(Declaration.application_id == application_id)).first()
        if declaration is None:
            raise DeclarationNotFound(application_id)
        if declaration.status != Status.SUBMITTED:
            return outcome_of(declaration, acted=False)
        attachments = session.exec(select(Attachment).where(Attachment.declaration_id == declaration.id).order_by(Attachment.position)).all()
        documents = [SignedDocument("declaration", "declaration.json", declaration.content, declaration.signature)]
        documents += [SignedDocument(f"attachments[{a.position}]", a.filename, a.content, a.signature) for a in attachments]
        channel, submitted_at, content = declaration.channel, declaration.submitted_at, declaration.content

    now = now or utcnow()
    if channel == "paper":
        verdicts = []
    else:
        verifier = configured_verifier(settings.trust_dir, settings.crl_dir,
                                       require_non_repudiation=settings.require_non_repudiation, require_crl=settings.require_crl)
        verdicts = verify_documents(verifier, documents, declarant_ids=_declarant_ids(content), at=submitted_at, now=now)
    reasons = [r for v in verdicts for r in v.reasons]

    with transaction() as session:
        declaration = lock_declaration(session, application_id)
        if declaration.status != Status.SUBMITTED:  # another run got here first
            return outcome_of(declaration, acted=False)
        declaration.signature_valid = not reasons if verdicts else None
        declaration.signature_reasons = [r.model_dump() for r in reasons]
        declaration.signers = [v.summary() for v in verdicts]
        declaration.move_to(
            session, Status.SIGNATURES_CHECKED, actor="system", at=now, reasons=reasons,
            details={"documents": len(documents), "verified": len(verdicts), "valid": not reasons, "channel": channel},
        )
        return outcome_of(declaration, acted=True)


@task(name="signature-check", retries=3, retry_delay_seconds=[1, 2, 4], retry_condition_fn=retry_on_database_error, timeout_seconds=120)
def signature_check(application_id: str) -> StepOutcome:
    """Detached CMS signatures on the declaration and every attachment, as of the submission time."""
    return check_signatures(application_id)
