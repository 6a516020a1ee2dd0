"""Trust material: the trusted CA certificates and their CRLs from ``trust_dir``/``crl_dir``, parsed and
indexed once, and the revocation status of a certificate at a given time."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from customs.core.clock import kz_display
from customs.pki.certificates import NAME_LABELS, crl_signed_by, load_certificates, load_crl, spki_digest
from models.reasons import Detail

log = logging.getLogger(__name__)


@dataclass
class CrlEntry:
    path: Path
    crl: x509.CertificateRevocationList
    verified_by: dict[bytes, bool] = field(default_factory=dict)  # issuer key digest -> signature valid

    def signed_by(self, issuer: x509.Certificate) -> bool:
        key = spki_digest(issuer)
        if key not in self.verified_by:
            self.verified_by[key] = crl_signed_by(self.crl, issuer)
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
    crls_by_issuer: dict[bytes, list[CrlEntry]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, trust_dir: Path | None, crl_dir: Path | None) -> TrustMaterial:
        material = cls()
        if trust_dir is not None and Path(trust_dir).is_dir():
            for path in sorted(p for p in Path(trust_dir).iterdir() if p.is_file()):
                try:
                    certs = load_certificates(path.read_bytes())
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
                    crl = load_crl(path.read_bytes())
                except ValueError as exc:
                    material.problems.append(f"{path}: not a CRL ({exc})")
                    continue
                material.crls_by_issuer.setdefault(crl.issuer.public_bytes(), []).append(CrlEntry(path, crl))
        for problem in material.problems:
            log.warning("trust material: %s", problem)
        return material

    def asn1_roots(self) -> list[asn1_x509.Certificate]:
        return [asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in self.roots]

    def asn1_intermediates(self) -> list[asn1_x509.Certificate]:
        return [asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in self.intermediates]

    def crls_of(self, issuer: x509.Certificate) -> tuple[list[CrlEntry], list[CrlEntry]]:
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
                newest[ca.subject.rfc4514_string(NAME_LABELS)] = max(entries, key=lambda e: e.crl.last_update_utc).crl
        return newest

    def revocation_problem(
        self, cert: x509.Certificate, issuer: x509.Certificate, *, at: datetime, now: datetime, required: bool
    ) -> tuple[str, Detail] | None:
        """Revocation status of ``cert`` (issued by ``issuer``) at the submission time ``at``, using CRLs current at ``now``."""
        issuer_name = issuer.subject.rfc4514_string(NAME_LABELS)
        entries, bad = self.crls_of(issuer)
        if bad:
            files = ", ".join(e.path.name for e in bad)
            return "CRL_INVALID", Detail(
                f"CRL {files} names {issuer_name!r} as issuer but is not signed by its key", files=files, issuer=issuer_name
            )
        if not entries:
            if required:
                return "CRL_MISSING", Detail(
                    f"no CRL of {issuer_name!r} in the CRL directory; revocation cannot be checked", issuer=issuer_name
                )
            return None
        newest = max(entries, key=lambda e: e.crl.last_update_utc)
        if newest.crl.next_update_utc is not None and newest.crl.next_update_utc < now:
            return "CRL_STALE", Detail(
                f"the newest CRL of {issuer_name!r} ({newest.path.name}) expired at "
                f"{newest.crl.next_update_utc.isoformat()}; a current CRL is needed",
                issuer=issuer_name,
                expired_at=kz_display(newest.crl.next_update_utc),
            )
        revoked = newest.crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if revoked is not None and revoked.revocation_date_utc <= at:
            try:
                why = revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason.value
            except x509.ExtensionNotFound:
                why = "unspecified"
            return (
                "CERT_REVOKED",
                Detail(
                    f"revoked at {revoked.revocation_date_utc.isoformat()} (reason {why}), "
                    f"before the submission at {at.isoformat()}",
                    revoked_at=kz_display(revoked.revocation_date_utc),
                    reason=why,
                    at=kz_display(at),
                ),
            )
        return None
