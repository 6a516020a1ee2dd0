"""Certificates as NCA RK issues them: who the signer is (IIN in SERIALNUMBER, BIN in OU), whether the
key and key usage allow signing, and reading certificates, CRLs and signatures in their usual encodings.

Pure functions of certificates and bytes (also used against the real NCA certificates in the tests).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from customs.pki.gost import algorithms as gost
from models.reasons import Detail

RSA_MIN_BITS = 2048
# How names are written in messages and signer summaries (NCA's SERIALNUMBER, G and SN attributes by name).
NAME_LABELS = {NameOID.SERIAL_NUMBER: "SERIALNUMBER", NameOID.GIVEN_NAME: "G", NameOID.SURNAME: "SN"}
EC_CURVES = {
    "secp256r1": 256,
    "secp384r1": 384,
    "secp521r1": 521,
    "brainpoolP256r1": 256,
    "brainpoolP384r1": 384,
    "brainpoolP512r1": 512,
}


def describe_name(name: x509.Name) -> str:
    return name.rfc4514_string(NAME_LABELS)


@dataclass(frozen=True)
class SignerIdentity:
    subject: str
    serial_hex: str
    issuer: str
    iin: str | None
    bin: str | None
    not_before: datetime
    not_after: datetime
    roles: frozenset[str] = frozenset()  # the NCA role OIDs of its extended key usage (customs.rules.signers)
    name: str | None = None  # the holder's name (CN)
    algorithm: str | None = None  # the key's algorithm as people name it: "GOST 34.310-2004", "RSA 2048", ...

    def describe(self) -> str:
        return f"certificate {self.subject!r} (serial {self.serial_hex})"


NCA_ROLE_ARC = "1.2.398.3.3.4."  # NCA RK's holder roles in the extended key usage


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
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        roles = frozenset(u.dotted_string for u in usages if u.dotted_string.startswith(NCA_ROLE_ARC))
    except (x509.ExtensionNotFound, ValueError):
        roles = frozenset()
    return SignerIdentity(
        subject=cert.subject.rfc4514_string(NAME_LABELS),
        serial_hex=format(cert.serial_number, "x"),
        issuer=cert.issuer.rfc4514_string(NAME_LABELS),
        iin=iin,
        bin=bin_,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        roles=roles,
        name=next((str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)), None),
        algorithm=key_algorithm_name(cert),
    )


def key_algorithm_name(cert: x509.Certificate) -> str | None:
    """ "GOST 34.310-2004", "GOST 34.10-2015 (512 bits)", "RSA 2048", "ECDSA secp256r1", ...; None when unknown."""
    try:
        key = gost_key_of(cert)
        if key is not None:
            return key.title
        public = cert.public_key()
    except (UnsupportedAlgorithm, ValueError):
        return None
    if isinstance(public, rsa.RSAPublicKey):
        return f"RSA {public.key_size}"
    if isinstance(public, ec.EllipticCurvePublicKey):
        return f"ECDSA {public.curve.name}"
    return type(public).__name__.removesuffix("PublicKey").removeprefix("_")


def spki_der(cert: x509.Certificate) -> bytes:
    """The certificate's SubjectPublicKeyInfo as DER (readable whatever the key's algorithm)."""
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))["tbs_certificate"][
        "subject_public_key_info"
    ].dump()


def gost_key_of(cert: x509.Certificate) -> gost.GostPublicKey | None:
    """The certificate's GOST key, None when its key is not GOST; GostError when it is a GOST key that cannot be used."""
    spki = spki_der(cert)
    if not gost.is_gost(spki):
        return None
    return gost.public_key(spki)


def key_algorithm_problem(cert: x509.Certificate) -> tuple[str, str] | None:
    """(code, message) when the signer's key cannot be verified here or is too weak; ``None`` when fine.

    NCA RK's GOST keys (GOST 34.310-2004, GOST 34.10-2015 of 256 and 512 bits) are verified by customs.pki.gost;
    a GOST key of another kind (another parameter set, a Russian key) is refused as unsupported, with its OID."""
    try:
        key = cert.public_key()
    except (UnsupportedAlgorithm, ValueError):
        spki = spki_der(cert)
        oid = gost.spki_algorithm(spki)
        if gost.is_gost(spki):
            try:
                gost.public_key(spki)
                return None
            except gost.GostError as exc:
                return (
                    "SIGNATURE_ALGORITHM_UNSUPPORTED",
                    Detail(
                        f"{exc} (OID {oid}); NCA RK's GOST 34.310-2004 and GOST 34.10-2015 keys are accepted",
                        variant="gost_key",
                        oid=oid,
                    ),
                )
        return (
            "SIGNATURE_ALGORITHM_UNSUPPORTED",
            Detail(f"an unsupported key (OID {oid}) cannot be verified", variant="key", oid=oid),
        )
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < RSA_MIN_BITS:
            return "WEAK_KEY", Detail(
                f"RSA key of {key.key_size} bits; at least {RSA_MIN_BITS} are required",
                variant="rsa",
                bits=key.key_size,
                min_bits=RSA_MIN_BITS,
            )
        return None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in EC_CURVES:
            return "WEAK_KEY", Detail(
                f"ECDSA key on curve {key.curve.name}; P-256 or stronger is required", variant="ec", curve=key.curve.name
            )
        return None
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return None
    return "WEAK_KEY", Detail(
        f"{type(key).__name__} keys are not accepted; RSA 2048+ or ECDSA P-256+ is required",
        variant="other",
        key_type=type(key).__name__,
    )


def key_usage_problem(cert: x509.Certificate, *, require_non_repudiation: bool) -> Detail | None:
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return Detail("has no keyUsage extension; digitalSignature is required", variant="no_extension")
    missing = []
    if not usage.digital_signature:
        missing.append("digitalSignature")
    if require_non_repudiation and not usage.content_commitment:
        missing.append("nonRepudiation")
    if missing:
        auth = "nonRepudiation" in missing and usage.digital_signature
        hint = " (an AUTH certificate cannot sign a declaration; use the SIGN certificate)" if auth else ""
        return Detail(
            f"keyUsage lacks {' and '.join(missing)}{hint}", variant="auth" if auth else "missing", missing=", ".join(missing)
        )
    return None


def load_certificates(blob: bytes) -> list[x509.Certificate]:
    if b"-----BEGIN" in blob:
        return x509.load_pem_x509_certificates(blob)
    return [x509.load_der_x509_certificate(blob)]


def load_crl(blob: bytes) -> x509.CertificateRevocationList:
    if b"-----BEGIN" in blob:
        return x509.load_pem_x509_crl(blob)
    return x509.load_der_x509_crl(blob)


def spki_digest(cert: x509.Certificate) -> bytes:
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


def crl_signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    try:
        key = gost_key_of(ca)
        if key is not None:  # a GOST CA's CRL: its signature algorithm must go with the key, and the value verify
            gost.check_pairing(key, signature_oid=crl.signature_algorithm_oid.dotted_string)
            return key.verify(crl.tbs_certlist_bytes, crl.signature)
        return crl.is_signature_valid(ca.public_key())
    except (UnsupportedAlgorithm, ValueError, TypeError):
        return False
