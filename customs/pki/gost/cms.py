"""GOST signatures in CMS (RFC 5652 SignedData, as NCALayer and Kalkan make them) and in certificate paths.

pyHanko checks CMS signatures and pyhanko-certvalidator builds certificate paths, but neither knows GOST: the
signer's integrity check here mirrors pyHanko's for a GOST signer, and ``GostSignatureValidator`` lets
pyhanko-certvalidator verify GOST-signed certificates, so path building, validity, basic constraints and name
chaining stay the library's. ``sign_detached`` makes the test PKI's GOST signatures.
"""

from __future__ import annotations

from datetime import datetime

from asn1crypto import algos, cms
from asn1crypto import x509 as asn1_x509
from asn1crypto.keys import PublicKeyInfo
from pyhanko_certvalidator.errors import InvalidSignature
from pyhanko_certvalidator.sig_validate import (
    DEFAULT_VALIDATION_CONTEXT,
    DefaultSignatureValidator,
    SignatureValidationContext,
)

from customs.core.clock import utcnow
from customs.pki.gost import algorithms as gost
from customs.pki.gost import hashes


def signer_info_integrity(
    signer_info: cms.SignerInfo, key: gost.GostPublicKey, content_digest: bytes, *, content_type: str = "data"
) -> tuple[bool, bool]:
    """(intact, valid) of a GOST signer over content whose digest is ``content_digest``, as pyHanko's
    validate_sig_integrity answers for other algorithms: intact when the signed content type is ``content_type``
    and the signed messageDigest is this digest (or there are no signed attributes), valid when the signature value
    verifies with ``key``."""
    signature = signer_info["signature"].native
    attributes = signer_info["signed_attrs"]
    if not attributes:  # the signature is over the content's hash itself
        return True, key.verify_digest(content_digest, signature)
    values = {a["type"].dotted: a["values"] for a in attributes}
    content_types = values.get("1.2.840.113549.1.9.3")
    digests = values.get("1.2.840.113549.1.9.4")
    if not content_types or not digests or len(content_types) != 1 or len(digests) != 1:
        return False, False
    if content_type not in (content_types[0].native, content_types[0].dotted):
        return False, False
    intact = digests[0].native == content_digest
    signed = b"\x31" + attributes.dump()[1:]  # signed as received, tagged as a SET OF (RFC 5652 5.4), not [0] IMPLICIT
    return intact, key.verify(signed, signature)


class GostSignatureValidator(DefaultSignatureValidator):
    """pyhanko-certvalidator's signature check, with NCA RK's GOST algorithms added."""

    def validate_signature(
        self,
        signature: bytes,
        signed_data: bytes,
        public_key_info: PublicKeyInfo,
        signature_algorithm: algos.SignedDigestAlgorithm,
        context: SignatureValidationContext = DEFAULT_VALIDATION_CONTEXT,
    ):
        spki = public_key_info.dump()
        algorithm_oid = signature_algorithm["algorithm"].dotted
        if gost.is_gost(spki) or algorithm_oid.startswith(gost.GOST_ARCS):
            try:
                key = gost.public_key(spki)
                gost.check_pairing(key, signature_oid=algorithm_oid)
            except gost.GostError as exc:
                raise InvalidSignature(str(exc)) from exc
            if not key.verify(signed_data, signature):
                raise InvalidSignature(f"the {key.title} signature does not verify")
            return
        super().validate_signature(signature, signed_data, public_key_info, signature_algorithm, context)


def sign_detached(
    data: bytes,
    key: gost.GostPrivateKey,
    certificate: asn1_x509.Certificate,
    chain: list[asn1_x509.Certificate] = (),
    *,
    signing_time: datetime | None = None,
) -> bytes:
    """A detached CMS SignedData over ``data`` with signed attributes (content type, signing time, message digest),
    as NCALayer makes it; for the test PKI."""
    digest_oid = gost.DIGEST_OIDS[gost.DIGEST_OF_KEY[key.algorithm]]
    content_digest = hashes.new(gost.DIGEST_OF_KEY[key.algorithm], data).digest()
    attributes = cms.CMSAttributes(
        [
            cms.CMSAttribute({"type": "content_type", "values": ["data"]}),
            cms.CMSAttribute({"type": "signing_time", "values": [cms.Time({"utc_time": signing_time or utcnow()})]}),
            cms.CMSAttribute({"type": "message_digest", "values": [content_digest]}),
        ]
    )
    signature = key.sign(attributes.dump())
    signer = cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier(
                {
                    "issuer_and_serial_number": cms.IssuerAndSerialNumber(
                        {"issuer": certificate.issuer, "serial_number": certificate.serial_number}
                    )
                }
            ),
            "digest_algorithm": algos.DigestAlgorithm({"algorithm": digest_oid}),
            "signed_attrs": attributes,
            "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": gost.SIGNATURE_OIDS[key.algorithm]}),
            "signature": signature,
        }
    )
    signed_data = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [algos.DigestAlgorithm({"algorithm": digest_oid})],
            "encap_content_info": {"content_type": "data"},
            "certificates": [certificate, *chain],
            "signer_infos": [signer],
        }
    )
    return cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()
