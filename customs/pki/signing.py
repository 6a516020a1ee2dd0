"""Signing: detached CMS (CAdES-BES, as NCALayer makes them) for RSA, EC and NCA's GOST keys, and PDF signatures
(PAdES, pyHanko) for RSA and EC keys; and reading a PDF's embedded signature back for the verifier.

``CmsSigner`` signs the test PKI's declarations and the authority's documents (customs.services.authority); a
GOST key signs with customs.pki.gost (the test PKI's key format; not constant-time). pyHanko cannot sign a PDF
with a GOST key: for one, the authority's paper copy gets a detached CMS of the PDF's bytes instead.
"""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from asn1crypto import cms as asn1_cms
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyhanko_certvalidator.registry import SimpleCertificateStore

from customs.pki.gost import algorithms as gost
from customs.pki.gost.cms import sign_detached as gost_sign_detached
from customs.pki.pyhanko_sign import SimpleSigner

PDF_SIGNATURE_FIELD = "AuthoritySignature"


def load_private_key(pem: bytes):
    """A private key in PEM: a GOST one (customs.pki.gost, the test PKI's format) or one ``cryptography`` reads."""
    return gost.GostPrivateKey.from_pem(pem) or serialization.load_pem_private_key(pem, None)


def public_key_der(key) -> bytes:
    """The SubjectPublicKeyInfo of a private key (GOST or not), to compare it with a certificate's."""
    if isinstance(key, gost.GostPrivateKey):
        return key.public_key().spki()
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class CmsSigner:
    """Makes detached CMS (CAdES-BES) signatures as NCALayer's createCMSSignatureFromBase64 does: with pyHanko for
    RSA and EC keys, with customs.pki.gost for GOST ones; and, for RSA and EC keys, signs PDFs (``sign_pdf``)."""

    def __init__(self, cert_path: Path, key_path: Path, chain_paths: tuple[Path, ...] = (), *, digest: str = "sha256"):
        self.digest = digest  # another only to test that weak ones are refused (md5, sha1)
        self.certificate = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
        cert = asn1_x509.Certificate.load(self.certificate.public_bytes(serialization.Encoding.DER))
        key = load_private_key(Path(key_path).read_bytes())
        self.public_key_der = public_key_der(key)
        chain = []
        for path in chain_paths:
            for pem in x509.load_pem_x509_certificates(Path(path).read_bytes()):
                chain.append(asn1_x509.Certificate.load(pem.public_bytes(serialization.Encoding.DER)))
        self._gost = (key, cert, chain) if isinstance(key, gost.GostPrivateKey) else None
        if self._gost:
            return
        key_info = asn1_keys.PrivateKeyInfo.load(
            key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        self._signer = SimpleSigner(
            signing_cert=cert, signing_key=key_info, cert_registry=SimpleCertificateStore.from_certs(chain), embed_roots=False
        )

    @property
    def is_gost(self) -> bool:
        return self._gost is not None

    async def async_sign(self, data: bytes) -> bytes:
        if self._gost:
            key, cert, chain = self._gost
            return gost_sign_detached(data, key, cert, chain)
        signed = await self._signer.async_sign_general_data(data, self.digest, detached=True, use_cades=True)
        return signed.dump()

    def sign(self, data: bytes) -> bytes:
        if self._gost:
            key, cert, chain = self._gost
            return gost_sign_detached(data, key, cert, chain)
        return _outside_event_loop(lambda: asyncio.run(self.async_sign(data)))

    def sign_pdf(self, pdf: bytes, *, reason: str | None = None, location: str | None = None) -> bytes:
        """The PDF with a PAdES signature (an invisible signature field, an incremental update covering the whole
        file). RSA and EC keys only: pyHanko knows no GOST (``ValueError`` for a GOST key)."""
        if self._gost:
            raise ValueError("pyHanko cannot sign a PDF with a GOST key: sign its bytes with a detached CMS instead")
        from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
        from pyhanko.sign import fields, signers

        writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
        meta = signers.PdfSignatureMetadata(
            field_name=PDF_SIGNATURE_FIELD,
            md_algorithm=self.digest,
            subfilter=fields.SigSeedSubFilter.PADES,
            reason=reason,
            location=location,
        )
        pdf_signer = signers.PdfSigner(meta, signer=self._signer)
        return _outside_event_loop(lambda: pdf_signer.sign_pdf(writer, output=io.BytesIO()).getvalue())


def _outside_event_loop(call):
    """pyHanko's synchronous calls run an event loop of their own: from a thread that runs one, they go to another."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return call()
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result()


@dataclass(frozen=True)
class PdfSignature:
    """A signature embedded in a PDF: its CMS, the bytes it covers (the file without its /Contents) and whether
    those reach the end of the file (nothing was added after the signature)."""

    cms: bytes
    signed_bytes: bytes
    covers_whole_file: bool
    field_name: str | None


class PdfUnreadable(ValueError):
    pass


def pdf_signatures(pdf: bytes) -> list[PdfSignature]:
    """The signatures embedded in a PDF, first to last (``PdfUnreadable`` when it is no PDF pyHanko can read)."""
    from pyhanko.pdf_utils.reader import PdfFileReader

    try:
        reader = PdfFileReader(io.BytesIO(pdf), strict=False)
        embedded = list(reader.embedded_signatures)
    except Exception as exc:  # pyHanko raises many types on garbage
        raise PdfUnreadable(f"not a PDF that can be read ({type(exc).__name__}: {exc})") from exc
    found = []
    for signature in embedded:
        try:
            byte_range = [int(v) for v in signature.sig_object["/ByteRange"]]
            raw = signature.sig_object["/Contents"]
            raw = bytes(raw.original_bytes if hasattr(raw, "original_bytes") else raw)
            cms = asn1_cms.ContentInfo.load(raw).dump()  # the DER without the zeros that pad /Contents
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
            raise PdfUnreadable(f"its signature field {signature.field_name!r} cannot be read ({problem})") from exc
        if len(byte_range) != 4 or byte_range[0] != 0 or min(byte_range) < 0:
            raise PdfUnreadable(f"its signature field {signature.field_name!r} has a malformed /ByteRange {byte_range}")
        start1, length1, start2, length2 = byte_range
        signed = pdf[start1 : start1 + length1] + pdf[start2 : start2 + length2]
        found.append(PdfSignature(cms, signed, start2 + length2 == len(pdf), signature.field_name))
    return found
