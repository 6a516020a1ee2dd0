"""A test PKI shaped like NCA RK's, and detached CMS signing as NCALayer does it.

``TestPki`` makes a root CA, an issuing CA and their CRLs as files that ``trust_dir`` and
``crl_dir`` can point at, and issues signer certificates like NCA's: the IIN in SERIALNUMBER
(``IIN`` + 12 digits), the BIN in OU (``BIN`` + 12 digits), keyUsage digitalSignature +
nonRepudiation for SIGN certificates and digitalSignature + keyEncipherment for AUTH ones.
It is for tests, the demo and declarants' integration testing; it is not a CA to run in production.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier
from pyhanko.sign.signers import SimpleSigner
from pyhanko_certvalidator.registry import SimpleCertificateStore

from customs.core.clock import utcnow

ROOT_NAME = "НЕГІЗГІ КО TEST (RSA) CUSTOMS"
ISSUING_NAME = "ҰКО TEST (RSA) CUSTOMS"
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
    raise ValueError(f"unknown key kind {kind!r}: rsa2048, rsa3072, rsa1024, p256 or p192")


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


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
):
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(signing_key, hashes.SHA256())
    )


@dataclass
class IssuedSigner:
    cert_path: Path
    key_path: Path
    certificate: x509.Certificate

    @property
    def serial(self) -> int:
        return self.certificate.serial_number


class TestPki:
    """A root CA and an issuing CA on disk: ``trust/`` (certificates), ``crl/`` (CRLs), ``ca/`` (their keys)."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        state = json.loads((self.dir / "ca" / "state.json").read_text())
        self.revoked: dict[int, str] = {int(k): v for k, v in state["revoked"].items()}
        self.root_cert = x509.load_pem_x509_certificate((self.dir / "trust" / "root.pem").read_bytes())
        self.issuing_cert = x509.load_pem_x509_certificate((self.dir / "trust" / "issuing-ca.pem").read_bytes())
        self.root_key = serialization.load_pem_private_key((self.dir / "ca" / "root.key").read_bytes(), None)
        self.issuing_key = serialization.load_pem_private_key((self.dir / "ca" / "issuing-ca.key").read_bytes(), None)

    @property
    def trust_dir(self) -> Path:
        return self.dir / "trust"

    @property
    def crl_dir(self) -> Path:
        return self.dir / "crl"

    @property
    def issuing_cert_path(self) -> Path:
        return self.trust_dir / "issuing-ca.pem"

    @classmethod
    def create(
        cls, directory: Path, *, now: datetime | None = None, root_name: str = ROOT_NAME, issuing_name: str = ISSUING_NAME
    ) -> TestPki:
        now = now or utcnow()
        directory = Path(directory)
        for sub in ("trust", "crl", "ca", "signers"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        root_key = new_key("rsa2048")
        issuing_key = new_key("rsa2048")
        root_subject = _ca_name(root_name)
        root = _ca_cert(
            root_subject, root_subject, root_key.public_key(), root_key, now - timedelta(days=3650), now + timedelta(days=3650), 1
        )
        issuing = _ca_cert(
            _ca_name(issuing_name),
            root_subject,
            issuing_key.public_key(),
            root_key,
            now - timedelta(days=1825),
            now + timedelta(days=1825),
            0,
        )
        (directory / "trust" / "root.pem").write_bytes(_pem_cert(root))
        (directory / "trust" / "issuing-ca.pem").write_bytes(_pem_cert(issuing))
        (directory / "ca" / "root.key").write_bytes(_pem_key(root_key))
        (directory / "ca" / "issuing-ca.key").write_bytes(_pem_key(issuing_key))
        (directory / "ca" / "state.json").write_text(json.dumps({"revoked": {}}))
        pki = cls(directory)
        pki.write_crl()  # CRLs are current as of the real time, whatever ``now`` dated the CAs
        pki.write_root_crl()
        return pki

    def issue(
        self,
        *,
        name: str,
        iin: str | None = None,
        bin: str | None = None,
        auth: bool = False,
        role: str | None = "head",
        key_kind: str = "rsa2048",
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        issuer_cert: x509.Certificate | None = None,
        issuer_key=None,
        label: str | None = None,
    ) -> IssuedSigner:
        """Issue a SIGN (or, with ``auth``, an AUTH) certificate and write its key and certificate.

        With a ``bin``, the certificate is a legal entity's, its holder in ``role`` (a key of ENTITY_ROLES, or
        None for no role at all); without, an individual's."""
        if bin and role is not None and role not in ENTITY_ROLES:
            raise ValueError(f"role {role!r}: one of {', '.join(ENTITY_ROLES)} (or None)")
        now = utcnow()
        not_before = not_before or now - timedelta(days=1)
        not_after = not_after or now + timedelta(days=365)
        key = new_key(key_kind)
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, name)]
        if iin:
            attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, f"IIN{iin}"))
        attributes.append(x509.NameAttribute(NameOID.COUNTRY_NAME, "KZ"))
        if bin:
            attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, name))
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
        issuer_cert = issuer_cert or self.issuing_cert
        issuer_key = issuer_key or self.issuing_key
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(issuer_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key()), critical=False)
            .sign(issuer_key, hashes.SHA256())
        )
        label = label or f"{iin or bin or 'signer'}-{cert.serial_number:x}"[:60]
        folder = self.dir / "signers" / label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cert.pem").write_bytes(_pem_cert(cert))
        (folder / "key.pem").write_bytes(_pem_key(key))
        (folder / "key.pem").chmod(0o600)
        return IssuedSigner(folder / "cert.pem", folder / "key.pem", cert)

    def revoke(
        self, serial: int, *, at: datetime | None = None, now: datetime | None = None, next_update: datetime | None = None
    ) -> None:
        """Revoke a certificate of the issuing CA as of ``at`` and publish a new CRL."""
        self.revoked[serial] = (at or utcnow()).isoformat()
        (self.dir / "ca" / "state.json").write_text(json.dumps({"revoked": {str(k): v for k, v in self.revoked.items()}}))
        self.write_crl(now=now, next_update=next_update)

    def build_crl(
        self, *, now: datetime | None = None, next_update: datetime | None = None, signing_key=None, crl_number: int | None = None
    ) -> x509.CertificateRevocationList:
        """The issuing CA's CRL as of ``now``; its CRL Number is ``crl_number``, by default ``now`` in Unix seconds."""
        now = now or utcnow()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.issuing_cert.subject)
            .last_update(now - timedelta(minutes=1))
            .next_update(next_update or now + timedelta(days=1))
            .add_extension(x509.CRLNumber(int(now.timestamp()) if crl_number is None else crl_number), critical=False)
        )
        for serial, when in sorted(self.revoked.items()):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(datetime.fromisoformat(when))
                .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
                .build()
            )
        return builder.sign(signing_key or self.issuing_key, hashes.SHA256())

    def write_crl(
        self, *, now: datetime | None = None, next_update: datetime | None = None, signing_key=None, crl_number: int | None = None
    ) -> Path:
        crl = self.build_crl(now=now, next_update=next_update, signing_key=signing_key, crl_number=crl_number)
        path = self.crl_dir / "issuing-ca.crl"
        path.write_bytes(crl.public_bytes(serialization.Encoding.DER))
        return path

    def write_root_crl(self, *, now: datetime | None = None) -> Path:
        now = now or utcnow()
        crl = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.root_cert.subject)
            .last_update(now - timedelta(minutes=1))
            .next_update(now + timedelta(days=30))
            .sign(self.root_key, hashes.SHA256())
        )
        path = self.crl_dir / "root.crl"
        path.write_bytes(crl.public_bytes(serialization.Encoding.DER))
        return path


class CmsSigner:
    """Makes detached CMS (CAdES-BES) signatures with pyHanko, as NCALayer's createCMSSignatureFromBase64 does."""

    def __init__(self, cert_path: Path, key_path: Path, chain_paths: tuple[Path, ...] = (), *, digest: str = "sha256"):
        self.digest = digest  # another only to test that weak ones are refused (md5, sha1)
        cert = asn1_x509.Certificate.load(
            x509.load_pem_x509_certificate(Path(cert_path).read_bytes()).public_bytes(serialization.Encoding.DER)
        )
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), None)
        key_info = asn1_keys.PrivateKeyInfo.load(
            key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        chain = []
        for path in chain_paths:
            for pem in x509.load_pem_x509_certificates(Path(path).read_bytes()):
                chain.append(asn1_x509.Certificate.load(pem.public_bytes(serialization.Encoding.DER)))
        self._signer = SimpleSigner(
            signing_cert=cert, signing_key=key_info, cert_registry=SimpleCertificateStore.from_certs(chain), embed_roots=False
        )

    async def async_sign(self, data: bytes) -> bytes:
        signed = await self._signer.async_sign_general_data(data, self.digest, detached=True, use_cades=True)
        return signed.dump()

    def sign(self, data: bytes) -> bytes:
        return asyncio.run(self.async_sign(data))


def sign_file(path: Path, *, key: Path, cert: Path, chain: tuple[Path, ...] = (), output: Path | None = None) -> Path:
    output = output or Path(str(path) + ".p7s")
    output.write_bytes(CmsSigner(cert, key, chain).sign(Path(path).read_bytes()))
    return output
