"""A test PKI shaped like NCA RK's, and detached CMS signing as NCALayer does it.

``TestPki`` makes a root CA, an issuing CA and their CRLs as files that ``trust_dir`` and
``crl_dir`` can point at, for each algorithm family asked for (RSA, and NCA's GOST families: GOST 34.310-2004,
GOST 34.10-2015 of 512 or 256 bits, each its own root and issuing CA signed with GOST, with GOST-signed CRLs),
and issues signer certificates like NCA's: the IIN in SERIALNUMBER
(``IIN`` + 12 digits), the BIN in OU (``BIN`` + 12 digits), keyUsage digitalSignature +
nonRepudiation for SIGN certificates and digitalSignature + keyEncipherment for AUTH ones.
It is for tests, the demo and declarants' integration testing; it is not a CA to run in production.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from asn1crypto import crl as asn1_crl
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from customs.core.clock import utcnow
from customs.pki.gost import algorithms as gost
from customs.pki.signing import CmsSigner, load_private_key

__all__ = ["CmsSigner", "IssuedSigner", "TestPki", "load_private_key", "sign_file"]

ROOT_NAME = "НЕГІЗГІ КО TEST (RSA) CUSTOMS"
ISSUING_NAME = "ҰКО TEST (RSA) CUSTOMS"
# Algorithm families of the test PKI: "rsa" (RSA 2048 with SHA-256), and NCA's GOST ones, each with its own CAs
FAMILIES = {
    "rsa": None,
    "gost2004": gost.GOST2004,  # GOST 34.310-2004 with GOST 34.311-95: the keys of NCA's legal-entity certificates
    "gost2015": gost.GOST2015_512,  # GOST 34.10-2015 (512 bits) with GOST 34.11-2015: what NCA issues now
    "gost2015-256": gost.GOST2015_256,
}
FAMILY_TITLES = {"rsa": "RSA", "gost2004": "GOST 2004", "gost2015": "GOST 2015", "gost2015-256": "GOST 2015-256"}
AUTHORITY_CN = "КГД МФ РК"  # the service certificate's CN (at most 64 bytes); the authority's full name goes in O
HOLDER_INDIVIDUAL = ObjectIdentifier("1.2.398.3.3.4.1.1")
HOLDER_LEGAL_ENTITY = ObjectIdentifier("1.2.398.3.3.4.1.2")
# The holder's role in a legal entity, as NCA RK writes it under HOLDER_LEGAL_ENTITY (customs.rules.signers)
ENTITY_ROLES = {
    "head": ObjectIdentifier("1.2.398.3.3.4.1.2.1"),
    "signatory": ObjectIdentifier("1.2.398.3.3.4.1.2.2"),
    "financial": ObjectIdentifier("1.2.398.3.3.4.1.2.3"),
    "hr": ObjectIdentifier("1.2.398.3.3.4.1.2.4"),
    "employee": ObjectIdentifier("1.2.398.3.3.4.1.2.5"),
}


def new_key(kind: str):
    if FAMILIES.get(kind):
        return gost.GostPrivateKey.generate(FAMILIES[kind])
    if kind == "rsa2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "rsa1024":
        return rsa.generate_private_key(public_exponent=65537, key_size=1024)
    if kind == "rsa3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p192":
        return ec.generate_private_key(ec.SECP192R1())
    gost_kinds = ", ".join(k for k in FAMILIES if k != "rsa")
    raise ValueError(f"unknown key kind {kind!r}: rsa2048, rsa3072, rsa1024, p256, p192, {gost_kinds}")


def _pem_key(key) -> bytes:
    if isinstance(key, gost.GostPrivateKey):
        return key.pem()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _key_identifier(public) -> bytes:
    if isinstance(public, gost.GostPublicKey):  # RFC 5280 4.2.1.2 (1): SHA-1 of the subjectPublicKey's bits
        return hashlib.sha1(public.subject_public_key()).digest()
    return x509.SubjectKeyIdentifier.from_public_key(public).digest


_DUMMY_KEY = None


def _dummy_key():
    """A stand-in key: ``cryptography`` builds the certificate or CRL, which is then re-signed with GOST."""
    global _DUMMY_KEY
    if _DUMMY_KEY is None:
        _DUMMY_KEY = ec.generate_private_key(ec.SECP256R1())
    return _DUMMY_KEY


def _finish_certificate(builder: x509.CertificateBuilder, subject_public, issuer_key, issuer_key_id: bytes) -> x509.Certificate:
    """Add the key and the key identifiers, and sign: with SHA-256 for RSA/EC issuers, with GOST for GOST ones."""
    subject_gost = isinstance(subject_public, gost.GostPublicKey)
    builder = builder.public_key(_dummy_key().public_key() if subject_gost else subject_public)
    builder = builder.add_extension(x509.SubjectKeyIdentifier(_key_identifier(subject_public)), critical=False)
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier(issuer_key_id, authority_cert_issuer=None, authority_cert_serial_number=None),
        critical=False,
    )
    if not subject_gost and not isinstance(issuer_key, gost.GostPrivateKey):
        return builder.sign(issuer_key, hashes.SHA256())
    drafted = asn1_x509.Certificate.load(builder.sign(_dummy_key(), hashes.SHA256()).public_bytes(serialization.Encoding.DER))
    tbs = drafted["tbs_certificate"]
    if subject_gost:
        tbs["subject_public_key_info"] = asn1_keys.PublicKeyInfo.load(subject_public.spki())
    if not isinstance(issuer_key, gost.GostPrivateKey):  # as NCA does: a GOST key is certified by a GOST CA
        raise ValueError("the test PKI certifies a GOST key with a GOST CA only (issue it from a GOST family)")
    algorithm = {"algorithm": gost.SIGNATURE_OIDS[issuer_key.algorithm]}
    tbs["signature"] = algorithm
    cert = asn1_x509.Certificate(
        {"tbs_certificate": tbs, "signature_algorithm": algorithm, "signature_value": issuer_key.sign(tbs.dump(force=True))}
    )
    return x509.load_der_x509_certificate(cert.dump(force=True))


def _finish_crl(builder: x509.CertificateRevocationListBuilder, issuer_key) -> x509.CertificateRevocationList:
    if not isinstance(issuer_key, gost.GostPrivateKey):
        return builder.sign(issuer_key, hashes.SHA256())
    drafted = asn1_crl.CertificateList.load(builder.sign(_dummy_key(), hashes.SHA256()).public_bytes(serialization.Encoding.DER))
    tbs = drafted["tbs_cert_list"]
    algorithm = {"algorithm": gost.SIGNATURE_OIDS[issuer_key.algorithm]}
    tbs["signature"] = algorithm
    signed = asn1_crl.CertificateList(
        {"tbs_cert_list": tbs, "signature_algorithm": algorithm, "signature": issuer_key.sign(tbs.dump(force=True))}
    )
    return x509.load_der_x509_crl(signed.dump(force=True))


def key_id_of(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _ca_name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "KZ"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca_cert(
    subject: x509.Name,
    issuer: x509.Name,
    public_key,
    signing_key,
    not_before: datetime,
    not_after: datetime,
    path_length: int | None,
    issuer_key_id: bytes | None = None,
):
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
    )
    return _finish_certificate(builder, public_key, signing_key, issuer_key_id or _key_identifier(public_key))


@dataclass
class IssuedSigner:
    cert_path: Path
    key_path: Path
    certificate: x509.Certificate

    @property
    def serial(self) -> int:
        return self.certificate.serial_number


class TestPki:
    """Root and issuing CAs on disk, one pair per algorithm family: ``trust/`` (certificates), ``crl/`` (CRLs),
    ``ca/`` (their keys and the revocations). The RSA family's files are ``root.pem``, ``issuing-ca.pem``, ...;
    another family's carry its name (``issuing-ca-gost2015.pem``)."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        state = json.loads((self.dir / "ca" / "state.json").read_text())
        self.revoked: dict[int, str] = {int(k): v for k, v in state["revoked"].items()}
        self.revoked_family: dict[int, str] = {int(k): v for k, v in state.get("revoked_family", {}).items()}
        self.families: list[str] = state.get("families", ["rsa"])
        self._cas: dict[str, tuple] = {}
        if "rsa" in self.families:
            self.root_cert, self.root_key, self.issuing_cert, self.issuing_key = self._ca_pair("rsa")

    @staticmethod
    def _suffix(family: str) -> str:
        return "" if family == "rsa" else f"-{family}"

    def _ca_pair(self, family: str) -> tuple:
        """(root certificate, root key, issuing certificate, issuing key) of a family."""
        if family not in self._cas:
            if family not in self.families:
                have = ", ".join(self.families)
                raise ValueError(f"this test PKI has no {family} CA (it has {have}): see `customs pki init --alg`")
            suffix = self._suffix(family)
            self._cas[family] = (
                x509.load_pem_x509_certificate((self.trust_dir / f"root{suffix}.pem").read_bytes()),
                load_private_key((self.dir / "ca" / f"root{suffix}.key").read_bytes()),
                x509.load_pem_x509_certificate((self.trust_dir / f"issuing-ca{suffix}.pem").read_bytes()),
                load_private_key((self.dir / "ca" / f"issuing-ca{suffix}.key").read_bytes()),
            )
        return self._cas[family]

    @property
    def trust_dir(self) -> Path:
        return self.dir / "trust"

    @property
    def crl_dir(self) -> Path:
        return self.dir / "crl"

    @property
    def issuing_cert_path(self) -> Path:
        return self.trust_dir / "issuing-ca.pem"

    def issuing_cert_path_of(self, family: str) -> Path:
        return self.trust_dir / f"issuing-ca{self._suffix(family)}.pem"

    def _save_state(self) -> None:
        (self.dir / "ca" / "state.json").write_text(
            json.dumps(
                {
                    "families": self.families,
                    "revoked": {str(k): v for k, v in self.revoked.items()},
                    "revoked_family": {str(k): v for k, v in self.revoked_family.items()},
                }
            )
        )

    @classmethod
    def create(
        cls,
        directory: Path,
        *,
        now: datetime | None = None,
        root_name: str = ROOT_NAME,
        issuing_name: str = ISSUING_NAME,
        families: tuple[str, ...] = ("rsa",),
    ) -> TestPki:
        now = now or utcnow()
        directory = Path(directory)
        unknown = [f for f in families if f not in FAMILIES]
        if unknown or not families:
            raise ValueError(f"unknown algorithm families {unknown}: {', '.join(FAMILIES)}")
        for sub in ("trust", "crl", "ca", "signers"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        for family in families:
            suffix = cls._suffix(family)
            title = FAMILY_TITLES[family]
            kind = "rsa2048" if family == "rsa" else family
            root_key = new_key(kind)
            issuing_key = new_key(kind)
            root_subject = _ca_name(root_name if family == "rsa" else root_name.replace("(RSA)", f"({title})"))
            root = _ca_cert(
                root_subject,
                root_subject,
                root_key.public_key(),
                root_key,
                now - timedelta(days=3650),
                now + timedelta(days=3650),
                1,
            )
            issuing = _ca_cert(
                _ca_name(issuing_name if family == "rsa" else issuing_name.replace("(RSA)", f"({title})")),
                root_subject,
                issuing_key.public_key(),
                root_key,
                now - timedelta(days=1825),
                now + timedelta(days=1825),
                0,
                issuer_key_id=key_id_of(root),
            )
            (directory / "trust" / f"root{suffix}.pem").write_bytes(_pem_cert(root))
            (directory / "trust" / f"issuing-ca{suffix}.pem").write_bytes(_pem_cert(issuing))
            (directory / "ca" / f"root{suffix}.key").write_bytes(_pem_key(root_key))
            (directory / "ca" / f"issuing-ca{suffix}.key").write_bytes(_pem_key(issuing_key))
        (directory / "ca" / "state.json").write_text(json.dumps({"families": list(families), "revoked": {}}))
        pki = cls(directory)
        for family in families:
            pki.write_crl(family=family)  # CRLs are current as of the real time, whatever ``now`` dated the CAs
            pki.write_root_crl(family=family)
        return pki

    def issue(
        self,
        *,
        name: str,
        iin: str | None = None,
        bin: str | None = None,
        auth: bool = False,
        role: str | None = "head",
        key_kind: str | None = None,
        family: str | None = None,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        issuer_cert: x509.Certificate | None = None,
        issuer_key=None,
        label: str | None = None,
        organization: str | None = None,
    ) -> IssuedSigner:
        """Issue a SIGN (or, with ``auth``, an AUTH) certificate and write its key and certificate.

        With a ``bin``, the certificate is a legal entity's, its holder in ``role`` (a key of ENTITY_ROLES, or
        None for no role at all); without, an individual's. ``family`` picks the CA (rsa by default, or the
        first the PKI has) and the signer's key goes with it; ``key_kind`` overrides the key (a weak one, say).
        ``organization`` names the legal entity (O) when the holder (CN) is a person: an employee's certificate."""
        if bin and role is not None and role not in ENTITY_ROLES:
            raise ValueError(f"role {role!r}: one of {', '.join(ENTITY_ROLES)} (or None)")
        family = family or ("rsa" if "rsa" in self.families else self.families[0])
        _, _, family_issuing_cert, family_issuing_key = self._ca_pair(family)
        now = utcnow()
        not_before = not_before or now - timedelta(days=1)
        not_after = not_after or now + timedelta(days=365)
        key = new_key(key_kind or ("rsa2048" if family == "rsa" else family))
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, name)]
        if iin:
            attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, f"IIN{iin}"))
        attributes.append(x509.NameAttribute(NameOID.COUNTRY_NAME, "KZ"))
        if bin:
            attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization or name))
            attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"BIN{bin}"))
        usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=not auth,
            key_encipherment=auth,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        )
        eku = [HOLDER_LEGAL_ENTITY, *([ENTITY_ROLES[role]] if role else [])] if bin else [HOLDER_INDIVIDUAL]
        if auth:
            eku.insert(0, ExtendedKeyUsageOID.CLIENT_AUTH)
        else:
            eku.insert(0, ExtendedKeyUsageOID.EMAIL_PROTECTION)
        issuer_cert = issuer_cert or family_issuing_cert
        issuer_key = issuer_key or family_issuing_key
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(issuer_cert.subject)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        )
        cert = _finish_certificate(builder, key.public_key(), issuer_key, key_id_of(issuer_cert))
        label = label or f"{iin or bin or 'signer'}-{cert.serial_number:x}"[:60]
        folder = self.dir / "signers" / label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cert.pem").write_bytes(_pem_cert(cert))
        (folder / "key.pem").write_bytes(_pem_key(key))
        (folder / "key.pem").chmod(0o600)
        return IssuedSigner(folder / "cert.pem", folder / "key.pem", cert)

    def issue_official(
        self,
        official,
        authority,
        *,
        family: str | None = None,
        label: str | None = None,
        **options,
    ) -> IssuedSigner:
        """An official's SIGN certificate as NCA issues one to an employee of the revenue authority: the official's
        name and IIN, the authority's name and BIN, the role employee (``official``: models.reference.Official,
        ``authority``: models.reference.Authority)."""
        return self.issue(
            name=official.name,
            iin=official.iin,
            bin=authority.bin,
            role="employee",
            organization=authority.name,
            family=family,
            label=label or f"official-{official.id}-{family or 'rsa'}",
            **options,
        )

    def issue_authority(
        self, *, bin: str, name: str = AUTHORITY_CN, family: str | None = None, organization: str | None = None, **options
    ) -> IssuedSigner:
        """The revenue authority's service certificate: a legal entity certificate of its ``bin`` (OU=BIN...), no IIN and
        no holder role below the legal entity's, SIGN usage (digitalSignature + nonRepudiation); what signs decision.json
        and the paper copies (customs.services.authority)."""
        family = family or ("rsa" if "rsa" in self.families else self.families[0])
        label = options.pop("label", f"authority-{family}")
        return self.issue(name=name, bin=bin, role=None, family=family, label=label, organization=organization, **options)

    def revoke(
        self,
        serial: int,
        *,
        at: datetime | None = None,
        now: datetime | None = None,
        next_update: datetime | None = None,
        family: str = "rsa",
    ) -> None:
        """Revoke a certificate of a family's issuing CA as of ``at`` and publish its new CRL."""
        self.revoked[serial] = (at or utcnow()).isoformat()
        self.revoked_family[serial] = family
        self._save_state()
        self.write_crl(now=now, next_update=next_update, family=family)

    def build_crl(
        self,
        *,
        now: datetime | None = None,
        next_update: datetime | None = None,
        signing_key=None,
        crl_number: int | None = None,
        family: str = "rsa",
    ) -> x509.CertificateRevocationList:
        """The issuing CA's CRL as of ``now``; its CRL Number is ``crl_number``, by default ``now`` in Unix seconds."""
        now = now or utcnow()
        _, _, issuing_cert, issuing_key = self._ca_pair(family)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuing_cert.subject)
            .last_update(now - timedelta(minutes=1))
            .next_update(next_update or now + timedelta(days=1))
            .add_extension(x509.CRLNumber(int(now.timestamp()) if crl_number is None else crl_number), critical=False)
        )
        for serial, when in sorted(self.revoked.items()):
            if self.revoked_family.get(serial, "rsa") != family:
                continue
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(datetime.fromisoformat(when))
                .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
                .build()
            )
        return _finish_crl(builder, signing_key or issuing_key)

    def write_crl(
        self,
        *,
        now: datetime | None = None,
        next_update: datetime | None = None,
        signing_key=None,
        crl_number: int | None = None,
        family: str = "rsa",
    ) -> Path:
        crl = self.build_crl(now=now, next_update=next_update, signing_key=signing_key, crl_number=crl_number, family=family)
        path = self.crl_dir / f"issuing-ca{self._suffix(family)}.crl"
        path.write_bytes(crl.public_bytes(serialization.Encoding.DER))
        return path

    def write_root_crl(self, *, now: datetime | None = None, family: str = "rsa") -> Path:
        now = now or utcnow()
        root_cert, root_key, _, _ = self._ca_pair(family)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(root_cert.subject)
            .last_update(now - timedelta(minutes=1))
            .next_update(now + timedelta(days=30))
        )
        path = self.crl_dir / f"root{self._suffix(family)}.crl"
        path.write_bytes(_finish_crl(builder, root_key).public_bytes(serialization.Encoding.DER))
        return path


def sign_file(path: Path, *, key: Path, cert: Path, chain: tuple[Path, ...] = (), output: Path | None = None) -> Path:
    output = output or Path(str(path) + ".p7s")
    output.write_bytes(CmsSigner(cert, key, chain).sign(Path(path).read_bytes()))
    return output
