"""GOST signatures (issue 16): the curve arithmetic against the standard's example, the byte orders against NCA
RK's own signatures (../shared/fixtures/nca-real), and every check the RSA signatures get, on GOST keys of the
test PKI's three families."""

from __future__ import annotations

import asyncio
import random
import shutil
from datetime import UTC, datetime, timedelta

import pytest
from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.errors import InvalidSignature

from customs.core.clock import utcnow
from customs.notices.paper_copy import readable_signer
from customs.pki.certificates import crl_signed_by, gost_key_of, key_algorithm_problem, signer_identity
from customs.pki.gost import algorithms as gost
from customs.pki.gost import ec, hashes
from customs.pki.gost.cms import GostSignatureValidator, signer_info_integrity
from customs.pki.testing import CmsSigner, TestPki, new_key
from customs.pki.trust import TrustMaterial
from customs.pki.verify import CmsSignatureVerifier, SignedDocument
from models.document import WrittenDeclarant
from tests.helpers import DECLARANT_BIN, DECLARANT_IIN, NCA_REAL

COMPANY = WrittenDeclarant(iin=DECLARANT_IIN, bin=DECLARANT_BIN)
DATA = "Декларация на товары / Тауарларға арналған декларация".encode() * 20
GOST_FAMILIES = ("gost2004", "gost2015", "gost2015-256")
needs_nca = pytest.mark.skipif(not NCA_REAL.is_dir(), reason=f"real NCA fixtures not found at {NCA_REAL}")


# ----------------------------------------------------------------------------------------------
# The arithmetic


@pytest.mark.parametrize("curve", [ec.CRYPTOPRO_A, ec.TC26_256_A, ec.TC26_512_A, ec.STANDARD_EXAMPLE_256], ids=lambda c: c.name)
def test_each_parameter_set_has_its_base_point_on_the_curve_and_of_order_q(curve):
    assert curve.contains(curve.x, curve.y)
    assert ec.multiply(curve, curve.q, (curve.x, curve.y)) is None  # q·G is the point at infinity
    assert ec.multiply(curve, curve.q - 1, (curve.x, curve.y)) == (curve.x, (-curve.y) % curve.p)


def test_the_standards_example_signature():
    """GOST R 34.10-2012 appendix A.1 (RFC 7091 section 7.1): key, public key, r and s as the standard prints them."""
    curve = ec.STANDARD_EXAMPLE_256
    d = 0x7A929ADE789BB9BE10ED359DD39A72C11B60961F49397EEE1D19CE9891EC3B28
    e = 0x2DFBC1B372D89A1188C09C52E0EEC61FCE52032AB1022E8E67ECE6672B043EE5
    k = 0x77105C9B20BCD3122823C8CF6FCC7B956DE33814E95B7FE64FED924594DCEAB3
    public = ec.public_key(curve, d)
    assert public == (
        0x7F2B49E270DB6D90D8595BEC458B50C58585BA1D4E9B788F6689DBD8E56FD80B,
        0x26F1B489D6701DD185C8413A977B3CBBAF64D1C593D26627DFFB101A87FF77DA,
    )
    r, s = ec.sign(curve, d, e, k=k)
    assert (r, s) == (
        0x41AA28D2F1AB148280CD9ED56FEDA41974053554A42767B83AD043FD39DC0493,
        0x01456C64BA4642A1653C235A98A60249BCD6D3F746B631DF928014F6C5BF9C40,
    )
    assert ec.verify(curve, public, e, r, s)
    assert not ec.verify(curve, public, e ^ 1, r, s)
    assert not ec.verify(curve, public, e, r, s ^ 1)
    assert not ec.verify(curve, public, e, 0, s) and not ec.verify(curve, public, e, r, curve.q)
    assert not ec.verify(curve, (public[0], public[1] ^ 1), e, r, s)  # not a point of the curve


@pytest.mark.parametrize("algorithm", [gost.GOST2004, gost.GOST2015_256, gost.GOST2015_512])
def test_keys_sign_and_verify_and_survive_their_encodings(algorithm):
    key = gost.GostPrivateKey.generate(algorithm)
    public = key.public_key()
    signature = key.sign(DATA)
    assert public.verify(DATA, signature)
    assert not public.verify(DATA + b" ", signature)
    assert not gost.GostPrivateKey.generate(algorithm).public_key().verify(DATA, signature)
    assert gost.public_key(public.spki()) == public
    assert gost.GostPrivateKey.from_pem(key.pem()) == key


# ----------------------------------------------------------------------------------------------
# NCA RK's own signatures: if a parameter set or a byte order were wrong, these would not verify


def _der(name: str) -> bytes:
    blob = (NCA_REAL / name).read_bytes()
    return x509.load_pem_x509_certificate(blob).public_bytes(serialization.Encoding.DER) if b"-----BEGIN" in blob else blob


def _flip(blob: bytes, bit: int) -> bytes:
    changed = bytearray(blob)
    changed[bit // 8] ^= 1 << (bit % 8)
    return bytes(changed)


@pytest.fixture(scope="module")
def tsp():
    info = cms.ContentInfo.load((NCA_REAL / "tsp_token.bin").read_bytes())
    signed_data = info["content"]
    signer_info = signed_data["signer_infos"][0]
    tsa = next(c.chosen for c in signed_data["certificates"] if "МЕТКИ ВРЕМЕНИ" in c.chosen.subject.human_friendly)
    content = signed_data["encap_content_info"]["content"].contents  # the TSTInfo's DER, as hashed
    return signer_info, tsa, content


@needs_nca
def test_real_time_stamp_token_verifies(tsp):
    signer_info, tsa, content = tsp
    assert signer_info["digest_algorithm"]["algorithm"].dotted == "1.2.398.3.10.1.3.1"
    assert signer_info["signature_algorithm"]["algorithm"].dotted == "1.2.398.3.10.1.1.1.2"
    key = gost.public_key(tsa["tbs_certificate"]["subject_public_key_info"].dump())
    assert key.algorithm == gost.GOST2004 and key.curve is ec.CRYPTOPRO_A
    digest = hashes.new("gost34311-95", content).digest()
    signed = {a["type"].native: a["values"][0].native for a in signer_info["signed_attrs"]}
    assert signed["message_digest"] == digest  # (a) the messageDigest is the GOST 34.311-95 hash of the TSTInfo
    tst_info = "1.2.840.113549.1.9.16.1.4"  # the token's content type (RFC 3161), where a declaration has "data"
    assert signer_info_integrity(signer_info, key, digest, content_type=tst_info) == (True, True)  # (a) it verifies
    assert signer_info_integrity(signer_info, key, digest) == (False, False)  # not the content type of a declaration


@needs_nca
def test_one_flipped_bit_anywhere_in_the_time_stamp_token_fails(tsp):
    signer_info, tsa, content = tsp
    key = gost.public_key(tsa["tbs_certificate"]["subject_public_key_info"].dump())
    rng = random.Random(16)
    for bit in rng.sample(range(len(content) * 8), 24):  # the time-stamped content: the digest no longer matches
        assert hashes.new("gost34311-95", _flip(content, bit)).digest() != hashes.new("gost34311-95", content).digest()
    attributes = b"\x31" + signer_info["signed_attrs"].dump()[1:]  # what the signature covers
    signature = signer_info["signature"].native
    assert key.verify(attributes, signature)
    for bit in rng.sample(range(8, len(attributes) * 8), 48):  # the signed attributes (messageDigest, time, ...)
        assert not key.verify(_flip(attributes, bit), signature), f"bit {bit} of the signed attributes"
    for bit in range(0, len(signature) * 8, 7):  # the signature value
        assert not key.verify(attributes, _flip(signature, bit)), f"bit {bit} of the signature"


@needs_nca
@pytest.mark.parametrize("name", ["ceo_valid_sign_2004_gost.cer", "tsa"])
def test_real_certificates_are_signed_by_ncas_gost_ca(name, tsp):
    """(b) The TSA's and the company head's certificates verify with the key of NCA's GOST test CA, and (c) one
    flipped bit in what is signed, in the signature or in the CA's key makes each fail."""
    ca = asn1_x509.Certificate.load(_der("nca_gost_test.crt"))
    cert = tsp[1] if name == "tsa" else asn1_x509.Certificate.load(_der(name))
    validator = GostSignatureValidator()
    tbs, signature = cert["tbs_certificate"].dump(), cert["signature_value"].native
    ca_key = ca["tbs_certificate"]["subject_public_key_info"]
    validator.validate_signature(signature, tbs, ca_key, cert["signature_algorithm"])  # raises when it does not verify
    rng = random.Random(name)
    for bit in rng.sample(range(len(tbs) * 8), 32):
        with pytest.raises(InvalidSignature):
            validator.validate_signature(signature, _flip(tbs, bit), ca_key, cert["signature_algorithm"])
    for bit in rng.sample(range(len(signature) * 8), 32):
        with pytest.raises(InvalidSignature):
            validator.validate_signature(_flip(signature, bit), tbs, ca_key, cert["signature_algorithm"])
    key_bytes = ca_key.dump()
    for bit in rng.sample(range((len(key_bytes) - 64) * 8, len(key_bytes) * 8), 16):  # in the point itself
        with pytest.raises(InvalidSignature):
            validator.validate_signature(signature, tbs, type(ca_key).load(_flip(key_bytes, bit)), cert["signature_algorithm"])


@needs_nca
def test_real_company_head_certificate_chains_to_ncas_gost_ca_as_of_its_validity():
    """Path validation (pyhanko-certvalidator with the GOST signature check) of the real certificate, NCA's GOST test
    CA as the trust anchor, at a time inside its validity; and outside it, expired."""
    ca = asn1_x509.Certificate.load(_der("nca_gost_test.crt"))
    head = asn1_x509.Certificate.load(_der("ceo_valid_sign_2004_gost.cer"))

    def validate(moment):
        context = ValidationContext(
            trust_roots=[ca], moment=moment, allow_fetching=False, revocation_mode="soft-fail",
            signature_validator=GostSignatureValidator(),
        )  # fmt: skip
        return asyncio.run(CertificateValidator(head, validation_context=context).async_validate_usage({"non_repudiation"}))

    path = validate(datetime(2022, 6, 1, tzinfo=UTC))
    assert len(path) == 2
    from pyhanko_certvalidator.errors import ExpiredError

    with pytest.raises(ExpiredError):
        validate(datetime(2023, 6, 1, tzinfo=UTC))


@needs_nca
def test_real_gost_certificates_are_accepted_and_read():
    head = x509.load_der_x509_certificate(_der("ceo_valid_sign_2004_gost.cer"))
    assert key_algorithm_problem(head) is None
    key = gost_key_of(head)
    assert key is not None and key.title == "GOST 34.310-2004"
    # our own encoding of the key is NCA's, byte for byte
    spki = asn1_x509.Certificate.load(_der("ceo_valid_sign_2004_gost.cer"))["tbs_certificate"]["subject_public_key_info"]
    assert key.spki() == spki.dump()
    identity = signer_identity(head)
    assert (identity.iin, identity.bin) == ("123456789011", "123456789021")


# ----------------------------------------------------------------------------------------------
# Keys NCA does not issue are refused with their OID


def _cert_with_spki(spki: bytes) -> x509.Certificate:
    pki_key = gost.GostPrivateKey.generate(gost.GOST2004)
    from customs.pki.testing import _finish_certificate

    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "x")]))
        .issuer_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "x")]))
        .serial_number(1)
        .not_valid_before(datetime(2026, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2027, 1, 1, tzinfo=UTC))
    )
    cert = asn1_x509.Certificate.load(
        _finish_certificate(builder, pki_key.public_key(), pki_key, b"k" * 20).public_bytes(serialization.Encoding.DER)
    )
    tbs = cert["tbs_certificate"]
    tbs["subject_public_key_info"] = type(tbs["subject_public_key_info"]).load(spki)
    cert = asn1_x509.Certificate(
        {"tbs_certificate": tbs, "signature_algorithm": cert["signature_algorithm"], "signature_value": b"\x00" * 64}
    )
    return x509.load_der_x509_certificate(cert.dump(force=True))


def test_a_gost_key_on_another_parameter_set_is_unsupported_with_its_oid():
    spki = gost.GostPrivateKey.generate(gost.GOST2004).public_key().spki()
    other = spki.replace(bytes.fromhex("060a2a830e030a0101010101"), bytes.fromhex("060a2a830e030a0101010102"))
    code, detail = key_algorithm_problem(_cert_with_spki(other))
    assert code == "SIGNATURE_ALGORITHM_UNSUPPORTED"
    assert "1.2.398.3.10.1.1.1.1.2" in detail and "not NCA RK's" in detail


def test_a_russian_gost_key_is_unsupported_with_its_oid():
    """GOST R 34.10-2001 under Russia's arc (1.2.643.2.2.19, CryptoPro-A): a key NCA does not issue."""
    point = gost.GostPrivateKey.generate(gost.GOST2004).public_key().subject_public_key()
    russian = gost._SubjectPublicKeyInfo(
        {
            "algorithm": {
                "algorithm": "1.2.643.2.2.19",
                "parameters": gost._KeyParameters(
                    {"public_key_param_set": "1.2.643.2.2.35.1", "digest_param_set": "1.2.643.2.2.30.1"}
                ),
            },
            "public_key": point,
        }
    ).dump()
    code, detail = key_algorithm_problem(_cert_with_spki(russian))
    assert code == "SIGNATURE_ALGORITHM_UNSUPPORTED"
    assert "1.2.643.2.2.19" in detail and "not one NCA RK issues" in detail


# ----------------------------------------------------------------------------------------------
# Everything that applies to RSA applies to GOST: the test PKI's GOST families end to end


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> TestPki:
    return TestPki.create(tmp_path_factory.mktemp("gost-pki"), now=utcnow() - timedelta(days=2), families=GOST_FAMILIES)


def signer(pki: TestPki, family: str, **issue) -> CmsSigner:
    issued = pki.issue(**{"name": "ТОО «Алатау Импорт»", "bin": DECLARANT_BIN, "iin": DECLARANT_IIN, "family": family, **issue})
    return CmsSigner(issued.cert_path, issued.key_path, (pki.issuing_cert_path_of(family),))


def check(pki, content, signature, *, declarant=COMPANY, at=None, now=None, trust=None, crl=None):
    now = now or utcnow()
    verifier = CmsSignatureVerifier(TrustMaterial.load(trust or pki.trust_dir, crl or pki.crl_dir))
    verdict = verifier.verify(
        SignedDocument("declaration", "declaration.json", content, signature), declarant=declarant, at=at or now, now=now
    )
    return [r.code for r in verdict.reasons], verdict


@pytest.mark.parametrize("family", GOST_FAMILIES)
def test_a_gost_signature_of_each_family_is_valid_and_names_its_signer(pki, family):
    codes, verdict = check(pki, DATA, signer(pki, family).sign(DATA))
    assert codes == []
    assert verdict.signer.bin == DECLARANT_BIN and verdict.signer.iin == DECLARANT_IIN
    titles = {
        "gost2004": "GOST 34.310-2004",
        "gost2015": "GOST 34.10-2015 (512 bits)",
        "gost2015-256": "GOST 34.10-2015 (256 bits)",
    }
    assert verdict.summary()["signer"]["algorithm"] == titles[family]  # kept with the declaration's signers
    copy = readable_signer(verdict.summary())  # and the paper copy names it in Russian
    assert copy["algorithm"] == titles[family].replace("GOST", "ГОСТ").replace("bits", "бит")
    info = cms.ContentInfo.load(signer(pki, family).sign(DATA))["content"]["signer_infos"][0]
    expected = {"gost2004": "1.2.398.3.10.1.3.1", "gost2015": "1.2.398.3.10.1.3.3", "gost2015-256": "1.2.398.3.10.1.3.2"}
    assert info["digest_algorithm"]["algorithm"].dotted == expected[family]


@pytest.mark.parametrize("family", GOST_FAMILIES)
def test_tampered_bytes_and_corrupted_signature_values(pki, family):
    good = signer(pki, family)
    signature = good.sign(DATA)
    assert check(pki, DATA.replace("товары".encode(), "товарЫ".encode(), 1), signature)[0] == ["DIGEST_MISMATCH"]
    value = cms.ContentInfo.load(signature)["content"]["signer_infos"][0]["signature"].native
    corrupted = signature.replace(value, _flip(value, 77))
    assert check(pki, DATA, corrupted)[0] == ["SIGNATURE_INVALID"]


@pytest.mark.parametrize("family", GOST_FAMILIES)
def test_expired_revoked_auth_and_someone_elses_gost_certificates(pki, family):
    now = utcnow()
    expired = signer(pki, family, not_before=now - timedelta(days=400), not_after=now - timedelta(days=1))
    assert check(pki, DATA, expired.sign(DATA))[0] == ["CERT_EXPIRED"]
    assert check(pki, DATA, signer(pki, family, auth=True).sign(DATA))[0] == ["KEY_USAGE"]
    assert check(pki, DATA, signer(pki, family, bin="960440000220").sign(DATA))[0] == ["SIGNER_NOT_DECLARANT"]
    assert check(pki, DATA, signer(pki, family, role="employee").sign(DATA))[0] == ["SIGNER_NOT_DECLARANT"]
    issued = pki.issue(name="ТОО «Алатау Импорт»", bin=DECLARANT_BIN, family=family)
    signature = CmsSigner(issued.cert_path, issued.key_path, (pki.issuing_cert_path_of(family),)).sign(DATA)
    pki.revoke(issued.serial, at=now - timedelta(hours=2), family=family)  # a GOST-signed CRL names it
    codes, verdict = check(pki, DATA, signature, at=now - timedelta(hours=1), now=now)
    assert codes == ["CERT_REVOKED"]
    assert check(pki, DATA, signature, at=now - timedelta(hours=3), now=now)[0] == []  # revoked after: still valid


def test_a_gost_signer_of_a_rogue_ca_with_the_same_names_is_untrusted(pki, tmp_path):
    rogue = TestPki.create(tmp_path / "rogue", families=("gost2015",))  # same CA names, other keys
    issued = rogue.issue(name="ТОО «Алатау Импорт»", bin=DECLARANT_BIN, family="gost2015")
    signature = CmsSigner(issued.cert_path, issued.key_path, (rogue.issuing_cert_path_of("gost2015"),)).sign(DATA)
    assert check(pki, DATA, signature)[0] == ["CERT_UNTRUSTED"]


def test_a_gost_crl_signed_by_the_wrong_key_and_a_stale_one(tmp_path):
    pki = TestPki.create(tmp_path / "crl", now=utcnow() - timedelta(days=3), families=("gost2004",))
    good = signer(pki, "gost2004")
    issuing = pki._ca_pair("gost2004")[2]
    crl_path = pki.write_crl(family="gost2004")
    crl = x509.load_der_x509_crl(crl_path.read_bytes())
    assert crl_signed_by(crl, issuing) and not crl_signed_by(crl, pki._ca_pair("gost2004")[0])
    pki.write_crl(family="gost2004", signing_key=new_key("gost2004"))  # right issuer name, wrong key
    codes, verdict = check(pki, DATA, good.sign(DATA))
    assert codes == ["CRL_INVALID"] and "not signed by its key" in verdict.reasons[0].message
    pki.write_crl(family="gost2004", now=utcnow() - timedelta(days=3), next_update=utcnow() - timedelta(days=1))
    assert check(pki, DATA, good.sign(DATA))[0] == ["CRL_STALE"]


def test_a_digest_that_does_not_go_with_the_gost_key_is_refused(pki):
    """A 512-bit GOST 34.10-2015 key with the GOST 34.311-95 hash: the pairing NCA never makes."""
    good = signer(pki, "gost2015")
    signature = good.sign(DATA)
    swapped = signature.replace(bytes.fromhex("06082a830e030a010303"), bytes.fromhex("06082a830e030a010301"))
    assert swapped != signature
    codes, verdict = check(pki, DATA, swapped)
    assert codes == ["SIGNATURE_ALGORITHM_UNSUPPORTED"]
    assert "does not go with" in verdict.reasons[0].message


def test_rsa_and_gost_hierarchies_side_by_side(tmp_path):
    """One trust directory with NCA's RSA and GOST CAs, as production has: each signer chains to its own."""
    both = TestPki.create(tmp_path / "both", families=("rsa", "gost2004"))
    for family in ("rsa", "gost2004"):
        assert check(both, DATA, signer(both, family).sign(DATA))[0] == []
    # the GOST CA's directory alone does not trust the RSA signer
    only_gost = tmp_path / "only-gost"
    only_gost.mkdir()
    for name in ("root-gost2004.pem", "issuing-ca-gost2004.pem"):
        shutil.copy(both.trust_dir / name, only_gost)
    assert check(both, DATA, signer(both, "rsa").sign(DATA), trust=only_gost)[0] == ["CERT_UNTRUSTED"]
