"""What to set when signatures are refused because of the trust configuration, not the signature.

After `make run`, the next thing a newcomer does is sign a declaration with the demo's keys and submit it from
another shell (`customs submit`, or the API of `customs serve`). Without CUSTOMS_TRUST_DIR no CA is trusted, and
the refusal (CERT_UNTRUSTED) is right: a back office must never trust a test PKI because it happens to lie
under its data directory. So nothing is trusted silently; the command says which setting to set instead, and
when the demo's PKI is there, the exact line that trusts it (for tests and demos only).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from customs.core.settings import Settings

TRUST_CODES = frozenset({"CERT_UNTRUSTED", "CRL_MISSING"})


def demo_trust_line(settings: Settings) -> str:
    pki = settings.demo_pki_dir
    return (
        "to trust the demo's test PKI (tests and demos only, never in production): "
        f"export CUSTOMS_TRUST_DIR={pki / 'trust'} CUSTOMS_CRL_DIR={pki / 'crl'}"
    )


def _demo_subjects(settings: Settings) -> set[str]:
    from customs.pki.certificates import NAME_LABELS, load_certificates

    subjects = set()
    for path in sorted((settings.demo_pki_dir / "trust").glob("*.pem")):
        try:
            subjects |= {cert.subject.rfc4514_string(NAME_LABELS) for cert in load_certificates(path.read_bytes())}
        except (OSError, ValueError):
            continue
    return subjects


def trust_hint(reasons: Iterable[dict], settings: Settings) -> str | None:
    """The setting to set when ``reasons`` (a declaration's) refuse a signature for want of trust material, or
    ``None`` when they do not, or the trust configuration is not the likely cause."""
    reasons = [r for r in reasons if r.get("code") in TRUST_CODES]
    if not reasons:
        return None
    demo = (settings.demo_pki_dir / "trust").is_dir()
    if settings.trust_dir is None:
        return (
            "CUSTOMS_TRUST_DIR is not set, so no CA is trusted and every signature is refused (CERT_UNTRUSTED): set "
            "it to the directory of NCA RK's root and issuing CA certificates, and CUSTOMS_CRL_DIR to their CRLs"
            + (f"; {demo_trust_line(settings)}" if demo else "")
        )
    if settings.crl_dir is None and any(r["code"] == "CRL_MISSING" for r in reasons):
        return "CUSTOMS_CRL_DIR is not set: the signer's CA has no CRL to check it against (set it to the CAs' CRLs)"
    if demo and Path(settings.trust_dir).resolve() != (settings.demo_pki_dir / "trust").resolve():
        missing = {(r.get("params") or {}).get("missing") for r in reasons}
        if missing & _demo_subjects(settings):
            return (
                f"the signer's CA is the demo's test PKI ({settings.demo_pki_dir / 'trust'}), not one of "
                f"CUSTOMS_TRUST_DIR={settings.trust_dir}; {demo_trust_line(settings)}"
            )
    return None


def trust_summary(settings: Settings) -> str:
    """One line for a service's start: what it trusts, or that it trusts nothing and which setting to set."""
    if settings.trust_dir is None:
        demo = (settings.demo_pki_dir / "trust").is_dir()
        return "none: CUSTOMS_TRUST_DIR is not set, every signature will be refused (CERT_UNTRUSTED)" + (
            f"; {demo_trust_line(settings)}" if demo else ""
        )
    crls = f"CRLs in {settings.crl_dir}" if settings.crl_dir else "no CUSTOMS_CRL_DIR"
    return f"the CA certificates in {settings.trust_dir}, {crls}"
