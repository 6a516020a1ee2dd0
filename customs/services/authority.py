"""The authority's service certificate: what signs the documents the authority sends (decision.json in every
letter that carries a decision, the paper copies).

Configured like the trust directory: ``CUSTOMS_AUTHORITY_CERT`` (a legal entity certificate of the authority's BIN
in reference/officials.json, no IIN, SIGN usage), ``CUSTOMS_AUTHORITY_KEY`` (mode 0600: a key group or others may
read is refused) and optionally ``CUSTOMS_AUTHORITY_CHAIN`` (its CA certificates, carried in every signature).

Nothing the authority sends waits for it: without a service certificate, or with one that is refused, letters and
copies go out unsigned (and say so), with one warning (or error) in the log of each process.
"""

from __future__ import annotations

import logging
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from customs.core.clock import utcnow
from customs.core.reference import load_reference
from customs.core.settings import Settings
from customs.pki.certificates import key_usage_problem, signer_identity
from customs.pki.signing import CmsSigner
from customs.rules.signers import AuthorityRule, Signer

log = logging.getLogger(__name__)

UNSIGNED_WARNING = (
    "no service certificate is configured (CUSTOMS_AUTHORITY_CERT, CUSTOMS_AUTHORITY_KEY): decision.json in the letters "
    "and the paper copies go out NOT signed by the authority, and verify-document reports them so"
)

# Kinds of a paper copy's signature (models.printing.PrintRequest.copy_signature_kind)
PADES = "pades"  # embedded in the PDF (RSA or EC service key)
DETACHED = "cms"  # a detached CMS of the PDF's bytes (a GOST key: pyHanko cannot sign PDFs with it)
UNSIGNED = "none"


class AuthorityConfigError(ValueError):
    """The service certificate or key is configured but cannot be used; the message says which file and why."""


@dataclass(frozen=True)
class SignedCopy:
    pdf: bytes
    kind: str  # PADES, DETACHED or UNSIGNED
    signature: bytes | None  # the detached CMS (DETACHED)
    signer: str | None  # subject and serial of the service certificate


class AuthoritySigner:
    """The service certificate and its key, checked: the authority's BIN, no IIN, SIGN usage, the key matches."""

    def __init__(self, settings: Settings):
        cert_path, key_path, chain_path = settings.authority_cert, settings.authority_key, settings.authority_chain
        if cert_path is None or key_path is None:
            missing = "CUSTOMS_AUTHORITY_KEY" if key_path is None else "CUSTOMS_AUTHORITY_CERT"
            raise AuthorityConfigError(f"{missing} is not set: the service certificate and its key are configured together")
        for path, what in (
            (cert_path, "CUSTOMS_AUTHORITY_CERT"),
            (key_path, "CUSTOMS_AUTHORITY_KEY"),
            (chain_path, "CUSTOMS_AUTHORITY_CHAIN"),
        ):
            if path is not None and not Path(path).is_file():
                raise AuthorityConfigError(f"{what} {path}: no such file")
        loose = stat.S_IMODE(Path(key_path).stat().st_mode) & 0o077
        if loose:
            mode = stat.S_IMODE(Path(key_path).stat().st_mode)
            raise AuthorityConfigError(
                f"the service key {key_path} is open to group or others (mode {mode:04o}): whoever reads it can sign "
                f"documents as the authority; make it 0600 (chmod 600 {key_path})"
            )
        try:
            self.signer = CmsSigner(cert_path, key_path, (chain_path,) if chain_path else ())
        except Exception as exc:
            raise AuthorityConfigError(
                f"the service certificate {cert_path} or key {key_path} cannot be read ({type(exc).__name__}: {exc})"
            ) from exc
        cert = self.signer.certificate
        if _spki_of(cert) != self.signer.public_key_der:
            raise AuthorityConfigError(f"the service key {key_path} is not the key of the certificate {cert_path}")
        self.identity = signer_identity(cert)
        authority = load_reference(settings.reference_dir).authority
        if authority is None:
            raise AuthorityConfigError(f"{settings.reference_dir}/officials.json names no authority (its BIN) to sign for")
        problem = AuthorityRule(authority.bin).problem(Signer(self.identity.iin, self.identity.bin, self.identity.roles))
        if problem:
            raise AuthorityConfigError(f"the service certificate {cert_path} cannot sign for the authority: {problem}")
        usage = key_usage_problem(cert, require_non_repudiation=True)
        if usage:
            raise AuthorityConfigError(f"the service certificate {cert_path}: {usage}")
        now = utcnow()
        if not (self.identity.not_before <= now <= self.identity.not_after):
            raise AuthorityConfigError(
                f"the service certificate {cert_path} is valid from {self.identity.not_before:%Y-%m-%d} to "
                f"{self.identity.not_after:%Y-%m-%d}, not now"
            )
        self.describe = f"{self.identity.subject} (serial {self.identity.serial_hex}, {self.identity.algorithm})"[:300]
        # as the paper copy names it, in the declarant's language (people read a name, not a distinguished name)
        self.copy_signer = {
            "name": self.identity.name or self.identity.subject,
            "serial": self.identity.serial_hex,
            "algorithm": self.identity.algorithm or "",
        }

    @property
    def is_gost(self) -> bool:
        return self.signer.is_gost

    def sign_detached(self, data: bytes) -> bytes:
        return self.signer.sign(data)

    def sign_copy(self, pdf: bytes) -> SignedCopy:
        """An RSA or EC key signs inside the PDF (PAdES); a GOST key gives a detached CMS of the PDF's bytes."""
        if self.is_gost:
            return SignedCopy(pdf, DETACHED, self.signer.sign(pdf), self.describe)
        signed = self.signer.sign_pdf(pdf, reason="Копия электронной декларации, выданная органом государственных доходов")
        return SignedCopy(signed, PADES, None, self.describe)


def _spki_of(cert: x509.Certificate) -> bytes:
    from asn1crypto import x509 as asn1_x509

    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))["tbs_certificate"][
        "subject_public_key_info"
    ].dump()


_lock = threading.Lock()
_cached: dict[tuple, AuthoritySigner] = {}
_told: set[str] = set()  # what this process logged already: one warning (or error) per cause, not one per letter


def _file_key(path: Path | None) -> tuple:
    if path is None:
        return (None,)
    try:
        info = Path(path).stat()
    except OSError:
        return (str(path), None)
    return (str(path), info.st_mtime_ns, info.st_size, info.st_mode)


def _tell_once(level: int, message: str) -> None:
    with _lock:
        if message in _told:
            return
        _told.add(message)
    log.log(level, "%s", message)


def authority_signer(settings: Settings) -> AuthoritySigner | None:
    """The configured signer, or ``None`` when there is none (unset: a warning; refused: an error, each logged once per
    process). Reloaded when a file changes."""
    if settings.authority_cert is None and settings.authority_key is None:
        _tell_once(logging.WARNING, UNSIGNED_WARNING)
        return None
    try:
        return checked_authority_signer(settings)
    except AuthorityConfigError as exc:
        _tell_once(logging.ERROR, f"the service certificate is refused, documents go out unsigned: {exc}")
        return None


def checked_authority_signer(settings: Settings) -> AuthoritySigner:
    """The configured signer; ``AuthorityConfigError`` saying what is wrong (nothing configured included)."""
    key = (
        _file_key(settings.authority_cert),
        _file_key(settings.authority_key),
        _file_key(settings.authority_chain),
        str(settings.reference_dir),
    )
    with _lock:
        found = _cached.get(key)
    if found is not None:
        return found
    signer = AuthoritySigner(settings)
    with _lock:
        _cached.clear()
        _cached[key] = signer
    return signer


def announce(settings: Settings) -> str:
    """At start (``customs serve``, a worker): one line on what signs the authority's documents, logged."""
    if settings.authority_cert is None and settings.authority_key is None:
        _tell_once(logging.WARNING, UNSIGNED_WARNING)
        return UNSIGNED_WARNING
    try:
        signer = checked_authority_signer(settings)
    except AuthorityConfigError as exc:
        message = f"the service certificate is refused, documents go out unsigned: {exc}"
        _tell_once(logging.ERROR, message)
        return message
    return f"documents are signed by the service certificate {signer.describe}"
