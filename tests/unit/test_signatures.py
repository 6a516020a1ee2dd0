"""The attack suite: each way a signature can be wrong gets its own test and its own reason code."""

from __future__ import annotations

import base64
import shutil
import sys
import threading
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization

from customs.core.clock import utcnow
from customs.pki.testing import CmsSigner, TestPki, new_key
from customs.pki.trust import TrustMaterial
from customs.pki.verify import CmsSignatureVerifier, SignedDocument, configured_verifier, verify_documents
from models.document import WrittenDeclarant
from tests.helpers import DECLARANT_BIN, DECLARANT_IIN

COMPANY = WrittenDeclarant(iin=DECLARANT_IIN, bin=DECLARANT_BIN)  # as the samples write it: the company and its person
PERSON = WrittenDeclarant(iin=DECLARANT_IIN)

DATA = "Декларация на товары / Тауарларға арналған декларация".encode() * 20
INVOICE = b"%PDF-1.4 invoice INV-2026-1187 ..." * 30
CONTRACT = b"contract CNT-DE-KZ-17 ..." * 30


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> TestPki:
    """A PKI of this module's own: these tests revoke certificates and rewrite CRLs."""
    return TestPki.create(tmp_path_factory.mktemp("attack-pki"), now=utcnow() - timedelta(days=2))


def signer_for(ca: TestPki, **issue) -> CmsSigner:
    issued = ca.issue(**{"name": "ТОО «Алатау Импорт»", "bin": DECLARANT_BIN, **issue})
    return CmsSigner(issued.cert_path, issued.key_path, (ca.issuing_cert_path,))


@pytest.fixture(scope="module")
def good(ca) -> CmsSigner:
    return signer_for(ca)


def verifier(ca: TestPki, **options) -> CmsSignatureVerifier:
    return CmsSignatureVerifier(TrustMaterial.load(ca.trust_dir, ca.crl_dir), **options)


def check(ca, content, signature, *, declarant=COMPANY, at=None, now=None, label="declaration", **options):
    now = now or utcnow()
    verdict = verifier(ca, **options).verify(
        SignedDocument(label, "declaration.json", content, signature), declarant=declarant, at=at or now, now=now
    )
    return [r.code for r in verdict.reasons], verdict


def test_valid_declaration_with_two_attachments(ca, good):
    docs = [
        SignedDocument("declaration", "declaration.json", DATA, good.sign(DATA)),
        SignedDocument("attachments[0]", "invoice.pdf", INVOICE, good.sign(INVOICE)),
        SignedDocument("attachments[1]", "contract.pdf", CONTRACT, good.sign(CONTRACT)),
    ]
    now = utcnow()
    verdicts = verify_documents(verifier(ca), docs, declarant=COMPANY, at=now, now=now)
    assert [v.reasons for v in verdicts] == [(), (), ()]
    assert verdicts[0].signer.bin == DECLARANT_BIN
    assert verdicts[0].summary()["signer"]["bin"] == DECLARANT_BIN


def test_tampered_declaration_bytes(ca, good):
    codes, verdict = check(ca, DATA.replace("товары".encode(), "товарЫ".encode(), 1), good.sign(DATA))
    assert codes == ["DIGEST_MISMATCH"]
    message = verdict.reasons[0].message
    assert "declaration.json" in message and "BIN050840001233" in message and "serial" in message


def test_tampered_attachment(ca, good):
    docs = [
        SignedDocument("declaration", "declaration.json", DATA, good.sign(DATA)),
        SignedDocument("attachments[0]", "invoice.pdf", INVOICE + b" ", good.sign(INVOICE)),
    ]
    now = utcnow()
    verdicts = verify_documents(verifier(ca), docs, declarant=COMPANY, at=now, now=now)
    assert verdicts[0].valid
    assert [(r.code, r.path) for r in verdicts[1].reasons] == [("DIGEST_MISMATCH", "attachments[0]")]
    assert "invoice.pdf" in verdicts[1].reasons[0].message


def test_signature_over_other_bytes(ca, good):
    assert check(ca, DATA, good.sign(CONTRACT))[0] == ["DIGEST_MISMATCH"]


def test_signature_value_corrupted(ca, good):
    signature = bytearray(good.sign(DATA))
    signature[-5] ^= 0xFF  # inside the RSA signature value, the last field of the SignerInfo
    assert check(ca, DATA, bytes(signature))[0] == ["SIGNATURE_INVALID"]


def test_signer_from_untrusted_root(ca, tmp_path):
    stranger = TestPki.create(tmp_path / "other", root_name="ROGUE ROOT", issuing_name="ROGUE CA")
    issued = stranger.issue(name="ТОО «Алатау Импорт»", bin=DECLARANT_BIN)
    rogue = CmsSigner(issued.cert_path, issued.key_path, (stranger.issuing_cert_path,))
    codes, verdict = check(ca, DATA, rogue.sign(DATA))
    assert codes == ["CERT_UNTRUSTED"]
    assert "ROGUE CA" in verdict.reasons[0].message


def test_missing_intermediate(ca, tmp_path):
    """The trust directory has only the root and the CMS does not carry the issuing CA."""
    trust = tmp_path / "trust"
    trust.mkdir()
    shutil.copy(ca.trust_dir / "root.pem", trust)
    issued = ca.issue(name="ТОО «Алатау Импорт»", bin=DECLARANT_BIN)
    bare = CmsSigner(issued.cert_path, issued.key_path, ())
    v = CmsSignatureVerifier(TrustMaterial.load(trust, ca.crl_dir))
    now = utcnow()
    verdict = v.verify(
        SignedDocument("declaration", "declaration.json", DATA, bare.sign(DATA)), declarant=COMPANY, at=now, now=now
    )
    assert [r.code for r in verdict.reasons] == ["CERT_UNTRUSTED"]
    # the same signature verifies once the CMS carries the intermediate
    full = CmsSigner(issued.cert_path, issued.key_path, (ca.issuing_cert_path,))
    assert v.verify(
        SignedDocument("declaration", "declaration.json", DATA, full.sign(DATA)), declarant=COMPANY, at=now, now=now
    ).valid


def test_expired_signer(ca):
    now = utcnow()
    expired = signer_for(ca, not_before=now - timedelta(days=400), not_after=now - timedelta(days=1))
    codes, verdict = check(ca, DATA, expired.sign(DATA))
    assert codes == ["CERT_EXPIRED"]


def test_not_yet_valid_signer(ca):
    now = utcnow()
    early = signer_for(ca, not_before=now + timedelta(days=1), not_after=now + timedelta(days=300))
    assert check(ca, DATA, early.sign(DATA))[0] == ["CERT_NOT_YET_VALID"]


def test_validity_is_judged_at_the_submission_time(ca):
    """A certificate that expired after the submission still certifies what was submitted while it was valid."""
    now = utcnow()
    short = signer_for(ca, not_before=now - timedelta(days=10), not_after=now - timedelta(hours=1))
    codes, _ = check(ca, DATA, short.sign(DATA), at=now - timedelta(hours=3), now=now)
    assert codes == []


def test_revoked_before_submission_is_refused(ca):
    signer_cert = ca.issue(name="ТОО «Алатау Импорт»", bin=DECLARANT_BIN)
    signer = CmsSigner(signer_cert.cert_path, signer_cert.key_path, (ca.issuing_cert_path,))
    signature = signer.sign(DATA)
    now = utcnow()
    ca.revoke(signer_cert.serial, at=now - timedelta(hours=2))
    codes, verdict = check(ca, DATA, signature, at=now - timedelta(hours=1), now=now)
    assert codes == ["CERT_REVOKED"]
    assert "keyCompromise" in verdict.reasons[0].message


def test_revoked_after_submission_is_accepted(ca):
    signer_cert = ca.issue(name="ТОО «Алатау Импорт»", bin=DECLARANT_BIN)
    signer = CmsSigner(signer_cert.cert_path, signer_cert.key_path, (ca.issuing_cert_path,))
    signature = signer.sign(DATA)
    now = utcnow()
    ca.revoke(signer_cert.serial, at=now - timedelta(minutes=10))
    assert check(ca, DATA, signature, at=now - timedelta(hours=1), now=now)[0] == []
    assert check(ca, DATA, signature, at=now, now=now)[0] == ["CERT_REVOKED"]


def test_stale_crl(good, tmp_path):
    pki = TestPki.create(tmp_path / "stale", now=utcnow() - timedelta(days=3))
    issued = pki.issue(name="ТОО «Алатау Импорт»", bin=DECLARANT_BIN)
    signer = CmsSigner(issued.cert_path, issued.key_path, (pki.issuing_cert_path,))
    pki.write_crl(now=utcnow() - timedelta(days=3), next_update=utcnow() - timedelta(days=1))
    codes, verdict = check(pki, DATA, signer.sign(DATA))
    assert codes == ["CRL_STALE"]
    assert "issuing-ca.crl" in verdict.reasons[0].message


def test_crl_signed_by_the_wrong_key(tmp_path):
    pki = TestPki.create(tmp_path / "forged")
    issued = pki.issue(name="ТОО «Алатау Импорт»", bin=DECLARANT_BIN)
    signer = CmsSigner(issued.cert_path, issued.key_path, (pki.issuing_cert_path,))
    pki.write_crl(signing_key=new_key("rsa2048"))  # right issuer name, wrong key
    codes, verdict = check(pki, DATA, signer.sign(DATA))
    assert codes == ["CRL_INVALID"]
    assert "not signed by its key" in verdict.reasons[0].message


def test_no_crl_for_the_issuer(tmp_path):
    pki = TestPki.create(tmp_path / "nocrl")
    (pki.crl_dir / "issuing-ca.crl").unlink()
    issued = pki.issue(name="ТОО «Алатау Импорт»", bin=DECLARANT_BIN)
    signer = CmsSigner(issued.cert_path, issued.key_path, (pki.issuing_cert_path,))
    assert check(pki, DATA, signer.sign(DATA))[0] == ["CRL_MISSING"]
    assert check(pki, DATA, signer.sign(DATA), require_crl=False)[0] == []


def test_auth_certificate_is_refused_when_non_repudiation_is_required(ca):
    auth = signer_for(ca, auth=True)
    codes, verdict = check(ca, DATA, auth.sign(DATA))
    assert codes == ["KEY_USAGE"]
    assert "nonRepudiation" in verdict.reasons[0].message
    assert check(ca, DATA, auth.sign(DATA), require_non_repudiation=False)[0] == []


def test_weak_rsa_key(ca):
    weak = signer_for(ca, key_kind="rsa1024")
    codes, verdict = check(ca, DATA, weak.sign(DATA))
    assert codes == ["WEAK_KEY"]
    assert "1024 bits" in verdict.reasons[0].message


@pytest.mark.parametrize("digest", ["sha1", "md5"])
def test_md5_and_sha1_are_refused_with_a_reason_of_their_own(ca, digest):
    """Issue 15: both were accepted as the message digest and in the signature algorithm."""
    issued = ca.issue(name="ТОО «Алатау Импорт»", bin=DECLARANT_BIN)
    weak = CmsSigner(issued.cert_path, issued.key_path, (ca.issuing_cert_path,), digest=digest)
    codes, verdict = check(ca, DATA, weak.sign(DATA))
    assert codes == ["WEAK_ALGORITHM"]
    assert digest.upper() in verdict.reasons[0].message and "SHA-256" in verdict.reasons[0].message


def test_sha384_and_sha512_are_accepted(ca):
    issued = ca.issue(name="ТОО «Алатау Импорт»", bin=DECLARANT_BIN)
    for digest in ("sha384", "sha512"):
        signer = CmsSigner(issued.cert_path, issued.key_path, (ca.issuing_cert_path,), digest=digest)
        assert check(ca, DATA, signer.sign(DATA))[0] == [], digest


def test_ecdsa_p256_is_accepted(ca):
    assert check(ca, DATA, signer_for(ca, key_kind="p256").sign(DATA))[0] == []


def test_iin_mismatch(ca):
    person = signer_for(ca, name="ТЕСТОВ ТЕСТ", bin=None, iin="910312300452")
    codes, verdict = check(ca, DATA, person.sign(DATA), declarant=PERSON)
    assert codes == ["SIGNER_NOT_DECLARANT"]
    assert "IIN 910312300452" in verdict.reasons[0].message and DECLARANT_IIN in verdict.reasons[0].message


def test_iin_match(ca):
    person = signer_for(ca, name="ТЕСТОВ ТЕСТ", bin=None, iin=DECLARANT_IIN)
    assert check(ca, DATA, person.sign(DATA), declarant=PERSON)[0] == []


def test_bin_mismatch(ca, good):
    assert check(ca, DATA, good.sign(DATA), declarant=WrittenDeclarant(bin="120303400058"))[0] == ["SIGNER_NOT_DECLARANT"]


@pytest.mark.parametrize("role", ["head", "signatory"])
def test_the_head_or_a_signatory_of_the_declarant_signs_for_it(ca, role):
    """NCA legal-entity certificates carry the holder's IIN, the company's BIN and the holder's role: a head
    (1.2.398.3.3.4.1.2.1) or a person with the right to sign (.2.2) signs for the company, whatever the IIN."""
    holder = signer_for(ca, name="ИВАНОВ ИВАН", iin="910312300452", bin=DECLARANT_BIN, role=role)
    assert check(ca, DATA, holder.sign(DATA))[0] == []


@pytest.mark.parametrize("role", ["employee", "hr", "financial", None])
def test_a_holder_without_the_right_to_sign_cannot_sign_for_the_company(ca, role):
    holder = signer_for(ca, name="ИВАНОВ ИВАН", iin="910312300452", bin=DECLARANT_BIN, role=role)
    codes, verdict = check(ca, DATA, holder.sign(DATA))
    assert codes == ["SIGNER_NOT_DECLARANT"]
    assert f"does not give the right to sign for BIN {DECLARANT_BIN}" in verdict.reasons[0].message


def test_a_private_persons_certificate_does_not_sign_for_a_company(ca):
    """The attack of issue 15: a certificate with the IIN written in box 14 and no BIN signed a declaration of
    {"iin": that IIN, "bin": a company's BIN}; the IIN matched, the goods were released in the company's name."""
    person = signer_for(ca, name="ТЕСТОВ ТЕСТ", bin=None, iin=DECLARANT_IIN)
    codes, verdict = check(ca, DATA, person.sign(DATA), declarant=COMPANY)
    assert codes == ["SIGNER_NOT_DECLARANT"]
    message = verdict.reasons[0].message
    assert f"IIN {DECLARANT_IIN}" in message and f"legal entity BIN {DECLARANT_BIN}" in message  # both ids named


def test_a_company_head_signs_a_declaration_of_their_own_as_a_person(ca):
    head = signer_for(ca, name="ТЕСТОВ ТЕСТ", iin=DECLARANT_IIN, bin=DECLARANT_BIN)
    assert check(ca, DATA, head.sign(DATA), declarant=PERSON)[0] == []


def test_a_declaration_naming_no_declarant_is_signed_by_nobody_who_may(ca, good):
    codes, verdict = check(ca, DATA, good.sign(DATA), declarant=WrittenDeclarant())
    assert codes == ["SIGNER_NOT_DECLARANT"] and "names no declarant" in verdict.reasons[0].message


def test_attachment_signed_by_someone_else(ca, good):
    other = signer_for(ca, name="ТОО «Другая»", bin="120303400058")
    docs = [
        SignedDocument("declaration", "declaration.json", DATA, good.sign(DATA)),
        SignedDocument("attachments[0]", "invoice.pdf", INVOICE, other.sign(INVOICE)),
    ]
    now = utcnow()
    verdicts = verify_documents(verifier(ca), docs, declarant=COMPANY, at=now, now=now)
    assert verdicts[0].valid
    assert [(r.code, r.path) for r in verdicts[1].reasons] == [("SIGNER_NOT_DECLARANT", "attachments[0]")]


def test_missing_signature(ca):
    for missing in (None, b""):
        assert check(ca, DATA, missing)[0] == ["SIGNATURE_MISSING"]


@pytest.mark.parametrize(
    "garbage", [b"garbage", b"\x30\x82\x00\x10" + b"\x00" * 16, b"MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]
)
def test_garbage_bytes_as_signature(ca, garbage):
    codes, verdict = check(ca, DATA, garbage)
    assert codes == ["SIGNATURE_INVALID"]
    assert "not a readable CMS" in verdict.reasons[0].message


def test_attached_cms_is_not_a_detached_signature(ca):
    import asyncio

    from pyhanko.sign.signers import SimpleSigner

    issued = ca.issue(name="ТОО «Алатау Импорт»", bin=DECLARANT_BIN)
    simple = SimpleSigner.load(str(issued.key_path), str(issued.cert_path), ca_chain_files=(str(ca.issuing_cert_path),))
    attached = asyncio.run(simple.async_sign_general_data(DATA, "sha256", detached=False)).dump()
    codes, verdict = check(ca, DATA, attached)
    assert codes == ["SIGNATURE_INVALID"] and "detached" in verdict.reasons[0].message


def test_base64_and_pem_signatures_as_ncalayer_returns_them(ca, good):
    der = good.sign(DATA)
    b64 = base64.b64encode(der)
    pem = b"-----BEGIN CMS-----\n" + base64.encodebytes(der) + b"-----END CMS-----\n"
    assert check(ca, DATA, b64)[0] == []
    assert check(ca, DATA, pem)[0] == []


def test_several_problems_are_reported_together(ca):
    auth_other = signer_for(ca, name="ТОО «Другая»", bin="120303400058", auth=True)
    codes, _ = check(ca, DATA, auth_other.sign(DATA))
    assert set(codes) == {"KEY_USAGE", "SIGNER_NOT_DECLARANT"}


def test_trust_material_is_loaded_once_and_reloaded_when_a_crl_changes(tmp_path):
    pki = TestPki.create(tmp_path / "cache")
    first = configured_verifier(pki.trust_dir, pki.crl_dir, require_non_repudiation=True, require_crl=True)
    assert configured_verifier(pki.trust_dir, pki.crl_dir, require_non_repudiation=True, require_crl=True) is first
    pki.write_crl(next_update=utcnow() + timedelta(days=2))
    assert configured_verifier(pki.trust_dir, pki.crl_dir, require_non_repudiation=True, require_crl=True) is not first


def test_unreadable_files_in_trust_dir_are_reported_not_fatal(tmp_path):
    pki = TestPki.create(tmp_path / "junk")
    (pki.trust_dir / "README.txt").write_text("not a certificate")
    (pki.crl_dir / "broken.crl").write_bytes(b"\x00\x01")
    material = TrustMaterial.load(pki.trust_dir, pki.crl_dir)
    assert len(material.roots) == 1 and len(material.intermediates) == 1
    assert any("README.txt" in p for p in material.problems) and any("broken.crl" in p for p in material.problems)


def test_private_keys_are_not_world_readable(ca):
    issued = ca.issue(name="x", bin=DECLARANT_BIN)
    assert issued.key_path.stat().st_mode & 0o077 == 0
    serialization.load_pem_private_key(issued.key_path.read_bytes(), None)


def test_a_signature_carrying_a_mesh_of_cross_certified_cas_is_refused_without_searching_it(ca, tmp_path):
    """Issue 15: a CMS carrying 20 cross-certified CA certificates (5 CAs, each certified by each other) kept path
    building busy for over 25 minutes (pytest-timeout fails this test long before that, had it come back). Only
    the signer's own chain of issuers is taken from a CMS now: the mesh leads to no trusted root, and says so."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = utcnow()
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(5)]
    names = [x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Mesh CA {i}")]) for i in range(5)]

    def cross(subject: int, issuer: int) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(names[subject])
            .issuer_name(names[issuer])
            .public_key(keys[subject].public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(keys[subject].public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(keys[issuer].public_key()), critical=False)
            .sign(keys[issuer], hashes.SHA256())
        )

    mesh = [cross(i, j) for i in range(5) for j in range(5) if i != j]
    assert len(mesh) == 20
    bundle = tmp_path / "mesh.pem"
    bundle.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in mesh))
    issued = ca.issue(name="ТОО «Алатау Импорт»", bin=DECLARANT_BIN, issuer_cert=mesh[0], issuer_key=keys[0], label="mesh")
    signer = CmsSigner(issued.cert_path, issued.key_path, (bundle,))
    codes, verdict = check(ca, DATA, signer.sign(DATA))
    assert codes == ["CERT_UNTRUSTED"]
    assert "Mesh CA 0" in verdict.reasons[0].message


def _check_at_once(verifier_now: CmsSignatureVerifier, barrier: threading.Barrier, signature: bytes, errors: list) -> None:
    barrier.wait()
    now = utcnow()
    try:
        verdict = verifier_now.verify(
            SignedDocument("declaration", "declaration.json", DATA, signature), declarant=COMPANY, at=now, now=now
        )
        if not verdict.valid:
            errors.append(str(verdict.reasons))
    except Exception as exc:
        errors.append(repr(exc))


def test_a_verifier_just_loaded_is_used_by_several_runs_at_once(ca, good):
    """Clearance runs check signatures in threads of their own, on one verifier. asn1crypto parses lazily and is not
    thread-safe while it does: eight threads on a verifier just loaded got IndexError and KeyError from half-parsed
    trust certificates (7 of 240 checks; the fault-injection suite met it after a restart). Each try is a new
    verifier, its eight threads let go together."""
    signature = good.sign(DATA)
    errors: list[str] = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch as often as they can: a race shows in a few tries, not by luck
    try:
        for _ in range(20):
            barrier = threading.Barrier(8)
            verifier_now = verifier(ca)
            threads = [threading.Thread(target=_check_at_once, args=(verifier_now, barrier, signature, errors)) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
