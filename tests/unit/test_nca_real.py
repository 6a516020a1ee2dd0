"""Real NCA RK certificates and CRL (../shared/fixtures/nca-real): what synthetic PKIs can get wrong."""

from __future__ import annotations

import re
import shutil
from base64 import b64decode
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from cryptography import x509

from customs.pki.certificates import key_algorithm_problem, key_usage_problem, signer_identity
from customs.pki.trust import TrustMaterial
from customs.pki.verify import CmsSignatureVerifier
from tests.helpers import NCA_REAL

pytestmark = pytest.mark.skipif(
    not NCA_REAL.is_dir(), reason=f"real NCA fixtures not found at {NCA_REAL} (shared/fixtures/nca-real)"
)


def cert(name: str) -> x509.Certificate:
    blob = (NCA_REAL / name).read_bytes()  # the fixtures mix PEM and DER, as real downloads do
    return x509.load_pem_x509_certificate(blob) if b"-----BEGIN" in blob else x509.load_der_x509_certificate(blob)


def xml_signer_certificate() -> x509.Certificate:
    xml = (NCA_REAL / "sample_signed.xml").read_text()
    body = re.search(r"<ds:X509Certificate>(.*?)</ds:X509Certificate>", xml, re.S).group(1)
    return x509.load_der_x509_certificate(b64decode("".join(body.split())))


def test_real_certificates_say_who_may_sign_for_a_company():
    """The roles NCA writes in the extended key usage, read from its real certificates, decide the rule."""
    from customs.rules.signers import FIRST_HEAD, INDIVIDUAL, Signer, signer_problem

    head = signer_identity(cert("ceo_valid_sign_2004_gost.cer"))  # a GOST 34.310-2004 key: the name and EKU decide
    person = signer_identity(cert("individual_valid_sign_2004_rsa.cer"))
    assert (head.iin, head.bin, FIRST_HEAD in head.roles) == ("123456789011", "123456789021", True)
    assert (person.iin, person.bin, person.roles) == ("123456789011", None, frozenset({INDIVIDUAL}))
    company = {"declarant_iin": "123456789011", "declarant_bin": "123456789021"}
    assert signer_problem(Signer(head.iin, head.bin, head.roles), **company) is None
    refused = signer_problem(Signer(person.iin, person.bin, person.roles), **company)
    assert "IIN 123456789011" in refused and "BIN 123456789021" in refused  # same person, not the company


def test_iin_from_real_sign_certificate():
    identity = signer_identity(cert("individual_valid_sign_2004_rsa.cer"))
    assert (identity.iin, identity.bin) == ("123456789011", None)
    assert "SERIALNUMBER=IIN123456789011" in identity.subject


def test_iin_and_bin_from_real_legal_entity_certificate():
    identity = signer_identity(cert("ceo_valid_sign_2004_gost.cer"))
    assert (identity.iin, identity.bin) == ("123456789011", "123456789021")


def test_real_sign_certificate_key_usage_passes():
    assert key_usage_problem(cert("individual_valid_sign_2004_rsa.cer"), require_non_repudiation=True) is None
    assert key_algorithm_problem(cert("individual_valid_sign_2004_rsa.cer")) is None


def test_real_auth_certificate_refused_when_non_repudiation_required():
    auth = cert("individual_valid_sign_2004_rsa_auth.cer")
    assert "nonRepudiation" in key_usage_problem(auth, require_non_repudiation=True)
    assert key_usage_problem(auth, require_non_repudiation=False) is None


def test_real_gost_certificate_is_accepted():
    """NCA's GOST 34.310-2004 keys are verified (tests/unit/test_gost_signatures.py proves it on NCA's signatures)."""
    assert key_algorithm_problem(cert("ceo_valid_sign_2004_gost.cer")) is None


@pytest.fixture
def production_trust(tmp_path):
    trust = tmp_path / "trust"
    trust.mkdir()
    for name in ("root_rsa.crt", "nca_rsa.crt"):
        shutil.copy(NCA_REAL / name, trust)
    return trust


def test_real_production_chain_validates_inside_its_validity(production_trust):
    verifier = CmsSignatureVerifier(TrustMaterial.load(production_trust, None), require_crl=False)
    signer = xml_signer_certificate()
    assert "ҰЛТТЫҚ КУӘЛАНДЫРУШЫ ОРТАЛЫҚ (RSA)" in signer.issuer.rfc4514_string()
    at = datetime(2019, 3, 1, 9, 0, tzinfo=UTC)
    import asyncio

    assert asyncio.run(verifier.chain_problems(signer, at=at, now=at)) == []
    later = datetime(2020, 3, 1, tzinfo=UTC)
    assert [c for c, _ in asyncio.run(verifier.chain_problems(signer, at=later, now=later))] == ["CERT_EXPIRED"]
    earlier = datetime(2018, 1, 1, tzinfo=UTC)
    assert [c for c, _ in asyncio.run(verifier.chain_problems(signer, at=earlier, now=earlier))] == ["CERT_NOT_YET_VALID"]


def test_real_chain_without_the_intermediate_is_untrusted(tmp_path):
    trust = tmp_path / "trust"
    trust.mkdir()
    shutil.copy(NCA_REAL / "root_rsa.crt", trust)
    import asyncio

    verifier = CmsSignatureVerifier(TrustMaterial.load(trust, None), require_crl=False)
    at = datetime(2019, 3, 1, tzinfo=UTC)
    assert [c for c, _ in asyncio.run(verifier.chain_problems(xml_signer_certificate(), at=at, now=at))] == ["CERT_UNTRUSTED"]


def test_real_crl_is_checked_against_its_issuer(tmp_path):
    trust, crls = tmp_path / "trust", tmp_path / "crl"
    trust.mkdir(), crls.mkdir()
    shutil.copy(NCA_REAL / "nca_rsa_test.crt", trust)
    shutil.copy(NCA_REAL / "nca_rsa_test.crl", crls)
    material = TrustMaterial.load(trust, crls)
    issuer = cert("nca_rsa_test.crt")
    good, bad = material.crls_of(issuer)
    assert len(good) == 1 and bad == []
    entry = good[0]
    assert len(entry.crl) == 126
    revoked = next(iter(entry.crl))
    holder = SimpleNamespace(issuer=issuer.subject, serial_number=revoked.serial_number)
    when = datetime(2022, 5, 1, tzinfo=UTC)
    code, message = material.revocation_problem(holder, issuer, at=when, now=when, required=True)
    assert code == "CERT_REVOKED" and "certificateHold" in message
    # a certificate not on the list passes; the same CRL after its nextUpdate (2022-09-25) is stale
    assert (
        material.revocation_problem(cert("individual_valid_sign_2004_rsa.cer"), issuer, at=when, now=when, required=True) is None
    )
    stale = datetime(2022, 10, 1, tzinfo=UTC)
    assert material.revocation_problem(holder, issuer, at=when, now=stale, required=True)[0] == "CRL_STALE"


def test_real_crl_does_not_verify_under_another_key(tmp_path):
    """The test CA's real CRL checked against a different real CA's key fails its signature check."""
    crl = x509.load_der_x509_crl((NCA_REAL / "nca_rsa_test.crl").read_bytes())
    assert crl.is_signature_valid(cert("nca_rsa_test.crt").public_key())
    assert not crl.is_signature_valid(cert("nca_rsa.crt").public_key())
