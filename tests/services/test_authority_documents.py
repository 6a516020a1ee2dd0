"""Issue 23, part 3: what the authority sends is signed. decision.json carries the service certificate's detached
signature, the paper copy a PAdES signature (RSA) or a detached CMS kept with its request (GOST); verify-document and
the API check them (chain, CRL, key usage, and that the signer is the authority's service certificate), and say
whether what they state still holds. The copy's QR code leads to the number-and-SHA-256 check."""

from __future__ import annotations

import email
import io
import json
from datetime import timedelta
from email import policy
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from customs.core.clock import utcnow
from customs.core.settings import configure
from customs.pki.signing import CmsSigner
from customs.services.authority import AuthorityConfigError, authority_signer, checked_authority_signer
from customs.services.documents import DocumentInputError, check_declaration, verify_document
from customs.services.officials import cancel_release
from customs.services.outbox import dispatch_due_sync
from customs.services.printing import copy_of, render_print_copy, request_print
from tests.helpers import AUTHORITY_BIN, DECLARANT_BIN, INSPECTOR, attachments, authority_settings, cleared, pdf_text

OFFICIAL_IIN = "880312447497"  # KZ-OF-0001 in reference/officials.json


def letter(settings, application_id: str, kind: str = "release") -> email.message.EmailMessage:
    dispatch_due_sync()
    (path,) = sorted(Path(settings.eml_dir).glob(f"*-{kind}-{application_id}.eml"))
    return email.message_from_bytes(path.read_bytes(), policy=policy.default)


def decision_files(settings, application_id: str, kind: str = "release") -> dict[str, bytes]:
    return attachments(letter(settings, application_id, kind))


def codes(check) -> set[str]:
    return {r["code"] for r in check.reasons}


def copy_request(application_id: str) -> str:
    result = request_print(application_id, requested_by=DECLARANT_BIN)
    render_print_copy(result.request_id)
    return result.request_id


# --- decision.json --------------------------------------------------------------------------------


def test_decision_json_in_the_letter_is_signed_by_the_service_certificate_and_verifies(signed_settings, company_signer):
    declaration = cleared(company_signer)
    files = decision_files(signed_settings, declaration.application_id)
    assert set(files) >= {"decision.json", "decision.json.p7s"}
    check = verify_document(files["decision.json"], files["decision.json.p7s"], filename="decision.json")
    assert check.genuine, check.reasons
    assert check.kind == "decision" and check.signer["bin"] == AUTHORITY_BIN and check.signer["iin"] is None
    expected = "GOST 34.310-2004" if "gost" in str(signed_settings.authority_cert) else "RSA 2048"
    assert check.signer["algorithm"] == expected
    assert check.states["registration_number"] == declaration.registration_number and check.states["decision"] == "release"
    assert check.database["holds"] is True and check.database["status"] == "released"


def test_one_byte_changed_in_decision_json_is_not_genuine(signed_settings, company_signer):
    declaration = cleared(company_signer)
    files = decision_files(signed_settings, declaration.application_id)
    forged = files["decision.json"].replace(b'"decision_code": "10"', b'"decision_code": "11"')
    assert forged != files["decision.json"] and len(forged) == len(files["decision.json"])
    check = verify_document(forged, files["decision.json.p7s"], filename="decision.json")
    assert not check.genuine and codes(check) == {"DIGEST_MISMATCH"}
    assert check.database["holds"] is False and "the decision code stored is 10, not 11" in check.database["message"]


def test_the_letter_is_sent_again_as_the_same_bytes(settings, pki, authority_gost, company_signer):
    """GOST signatures are randomised: the signature is fixed with the notice, so a resend is the same message."""
    from customs.notices.render import build_message
    from customs.services.outbox import claim_due, fix_decision_documents
    from tests.helpers import notices

    configured = settings.model_copy(update=authority_settings(pki, authority_gost))
    configure(configured)
    declaration = cleared(company_signer)
    (notice,) = notices(declaration.application_id, kind="release")
    (item,) = [c for c in claim_due(configured, utcnow(), 10, declaration.application_id) if c.notice.id == notice.id]
    fix_decision_documents(configured, [item], None)
    first = build_message(item.notice, item.declaration, None, sender="a@b.kz", domain="d.kz", attachments=item.attachments)
    later = utcnow() + timedelta(hours=1)  # its lease ran out: claimed again, as after a crash
    (again,) = [c for c in claim_due(configured, later, 10, declaration.application_id) if c.notice.id == notice.id]
    assert [name for name, _, _ in again.attachments] == ["decision.json", "decision.json.p7s"]
    second = build_message(again.notice, again.declaration, None, sender="a@b.kz", domain="d.kz", attachments=again.attachments)
    assert first.as_bytes() == second.as_bytes()


def sign_decision_with(pki, settings, company_signer, issued, chain_family="rsa"):
    """A real decision.json of a cleared declaration, signed by ``issued`` instead of the service certificate."""
    declaration = cleared(company_signer)
    body = decision_files(settings, declaration.application_id)["decision.json"]
    signer = CmsSigner(issued.cert_path, issued.key_path, (pki.issuing_cert_path_of(chain_family),))
    return body, signer.sign(body)


def test_decision_json_signed_by_a_declarant_is_refused(settings, pki, company_signer):
    issued = pki.issue(name="ТОО «Алатау Импорт»", bin=DECLARANT_BIN, label="company-again")
    body, signature = sign_decision_with(pki, settings, company_signer, issued)
    check = verify_document(body, signature, filename="decision.json")
    assert not check.genuine and codes(check) == {"SIGNER_NOT_AUTHORITY"}
    assert "not by the revenue authority" in check.reasons[0]["message"]


def test_decision_json_signed_by_an_official_is_refused(settings, pki, company_signer):
    """An official's own certificate (an employee of the authority: its IIN and the authority's BIN) signs that
    official's acts, not the authority's documents."""
    issued = pki.issue(name="Сейткали Айгерім", iin=OFFICIAL_IIN, bin=AUTHORITY_BIN, role="employee", label="official")
    body, signature = sign_decision_with(pki, settings, company_signer, issued)
    check = verify_document(body, signature, filename="decision.json")
    assert not check.genuine and codes(check) == {"SIGNER_NOT_AUTHORITY"}
    assert "a person's certificate" in check.reasons[0]["message"]


def test_decision_json_signed_by_a_revoked_service_certificate_is_refused(settings, pki, company_signer):
    issued = pki.issue_authority(bin=AUTHORITY_BIN, name="КГД (отозван)", label="authority-revoked")
    body, signature = sign_decision_with(pki, settings, company_signer, issued)
    assert verify_document(body, signature, filename="decision.json").genuine  # before the revocation
    pki.revoke(issued.serial, at=utcnow() - timedelta(minutes=5))
    try:
        check = verify_document(body, signature, filename="decision.json")
    finally:
        pki.revoked.pop(issued.serial)
        pki.revoked_family.pop(issued.serial)
        pki._save_state()
        pki.write_crl()
    assert not check.genuine and codes(check) == {"CERT_REVOKED"}


def test_decision_json_signed_by_an_expired_service_certificate_is_refused(settings, pki, company_signer):
    now = utcnow()
    issued = pki.issue_authority(
        bin=AUTHORITY_BIN,
        name="КГД (истёк)",
        label="authority-expired",
        not_before=now - timedelta(days=400),
        not_after=now - timedelta(days=1),
    )
    body, signature = sign_decision_with(pki, settings, company_signer, issued)
    check = verify_document(body, signature, filename="decision.json")
    assert not check.genuine and codes(check) == {"CERT_EXPIRED"}


def test_a_cancelled_release_is_genuine_but_no_longer_holds(signed_settings, company_signer, officials):
    declaration = cleared(company_signer)
    files = decision_files(signed_settings, declaration.application_id)
    key = declaration.application_id
    cancel_release(key, act=officials.act("cancel_release", INSPECTOR, key, grounds=["DOCUMENTS_INVALID"]))
    check = verify_document(files["decision.json"], files["decision.json.p7s"], filename="decision.json")
    assert check.genuine
    assert check.database["holds"] is False and check.database["status"] == "release_cancelled"
    assert check.database["message"].startswith("the document is genuine, but the release was cancelled on ")
    cancellation = decision_files(signed_settings, declaration.application_id, "release_cancellation")
    later = verify_document(cancellation["decision.json"], cancellation["decision.json.p7s"], filename="decision.json")
    assert later.genuine and later.database["holds"] is True


def test_without_a_service_certificate_letters_go_out_unsigned_and_say_so(settings, company_signer, caplog):
    declaration = cleared(company_signer)
    message = letter(settings, declaration.application_id)
    files = attachments(message)
    assert "decision.json" in files and "decision.json.p7s" not in files
    assert message["X-Customs-Authority-Signature"] == "none: not signed by the authority"
    check = verify_document(files["decision.json"], None, filename="decision.json")
    assert not check.genuine and codes(check) == {"NOT_SIGNED"}
    assert "not signed by the authority" in check.reasons[0]["message"]


def test_a_service_key_others_may_read_is_refused_with_a_clear_error(settings, pki, tmp_path):
    issued = pki.issue_authority(bin=AUTHORITY_BIN, name="КГД", label="authority-loose")
    loose = tmp_path / "loose-key.pem"
    loose.write_bytes(issued.key_path.read_bytes())
    loose.chmod(0o640)
    configured = settings.model_copy(update={**authority_settings(pki, issued), "authority_key": loose})
    with pytest.raises(AuthorityConfigError, match=r"open to group or others \(mode 0640\).*chmod 600"):
        checked_authority_signer(configured)
    assert authority_signer(configured) is None  # the letters still go out, unsigned
    loose.chmod(0o600)
    assert checked_authority_signer(configured) is not None


def test_a_declarants_certificate_is_refused_as_the_service_certificate(settings, pki):
    issued = pki.issue(name="ТОО «Алатау Импорт»", bin=DECLARANT_BIN, label="company-as-service")
    configured = settings.model_copy(update=authority_settings(pki, issued))
    with pytest.raises(AuthorityConfigError, match="cannot sign for the authority"):
        checked_authority_signer(configured)


# --- the paper copy -------------------------------------------------------------------------------


def test_the_paper_copy_is_signed_and_verifies(signed_settings, company_signer):
    declaration = cleared(company_signer)
    request_id = copy_request(declaration.application_id)
    request, pdf = copy_of(request_id)
    gost = "gost" in str(signed_settings.authority_cert)
    assert request.copy_signature_kind == ("cms" if gost else "pades")
    assert (request.copy_signature is not None) == gost
    check = verify_document(pdf, None, filename="copy.pdf")  # a GOST copy's signature is found with its request
    assert check.genuine, check.reasons
    assert check.kind == "paper_copy" and check.signer["bin"] == AUTHORITY_BIN
    assert check.database["request_id"] == request_id and check.database["holds"] is True
    text = " ".join(pdf_text(pdf).split())
    assert "Файл копии подписан ЭЦП" in text and f"БИН {AUTHORITY_BIN}" in text and "серийный номер" in text
    assert "OU=BIN" not in text  # the certificate named as people read it
    if gost:
        assert verify_document(pdf, request.copy_signature, filename="copy.pdf").genuine
    else:
        assert check.signature.startswith("embedded in the PDF")


def test_a_changed_paper_copy_is_not_genuine(signed_settings, company_signer):
    declaration = cleared(company_signer)
    request, pdf = copy_of(copy_request(declaration.application_id))
    changed = pdf.replace(b"/Producer", b"/Producex", 1) if b"/Producer" in pdf else pdf + b"\n"
    assert changed != pdf
    check = verify_document(changed, request.copy_signature, filename="copy.pdf")
    assert not check.genuine
    assert codes(check) & {"DIGEST_MISMATCH", "CHANGED_AFTER_SIGNING"}


def test_an_unsigned_copy_says_it_was_issued_unsigned(settings, company_signer):
    declaration = cleared(company_signer)
    request, pdf = copy_of(copy_request(declaration.application_id))
    assert request.copy_signature_kind == "none"
    assert "Файл копии не подписан ЭЦП органа государственных доходов" in " ".join(pdf_text(pdf).split())
    check = verify_document(pdf, None, filename="copy.pdf")
    assert not check.genuine and codes(check) == {"NOT_SIGNED"}
    assert f"copy of print request {request.request_id}, issued unsigned" in check.reasons[0]["message"]


def test_garbage_is_bad_input():
    with pytest.raises(DocumentInputError, match="empty"):
        verify_document(b"", None, filename="decision.json")


def test_the_qr_code_decodes_to_the_check_url(signed_settings, company_signer):
    import pypdfium2
    import zxingcpp

    configure(signed_settings.model_copy(update={"public_base_url": "https://customs.kgd.gov.kz/"}))
    declaration = cleared(company_signer)
    _, pdf = copy_of(copy_request(declaration.application_id))
    document = pypdfium2.PdfDocument(io.BytesIO(pdf))
    decoded = []
    for page in document:
        image = page.render(scale=3).to_pil()
        decoded += [r.text for r in zxingcpp.read_barcodes(image) if r.format == zxingcpp.BarcodeFormat.QRCode]
    (url,) = decoded
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "customs.kgd.gov.kz", "/v1/documents/check")
    assert parse_qs(parts.query) == {"number": [declaration.registration_number], "sha256": [declaration.content_sha256]}


def test_the_check_answers_for_a_real_declaration_and_not_for_a_wrong_hash(settings, company_signer):
    declaration = cleared(company_signer)
    found = check_declaration(declaration.registration_number, declaration.content_sha256)
    assert found["found"] is True and found["status"] == "released"
    assert not {"declarant", "goods", "declarant_id", "content"} & set(found)
    wrong = check_declaration(declaration.registration_number, "0" * 64)
    unknown = check_declaration("50101/010101/9999999", declaration.content_sha256)
    assert wrong["found"] is False and unknown["found"] is False
    assert wrong["message"].replace("0" * 64, "") == unknown["message"].replace(
        "50101/010101/9999999", declaration.registration_number
    )
    with pytest.raises(DocumentInputError, match="64 hexadecimal"):
        check_declaration(declaration.registration_number, "abc")


def test_the_decision_document_is_json_the_verifier_reads(signed_settings, company_signer):
    """decision.json's bytes are what the letter always carried (indented UTF-8 JSON with its schema)."""
    declaration = cleared(company_signer)
    body = decision_files(signed_settings, declaration.application_id)["decision.json"]
    assert json.loads(body)["schema"] == "kz.customs/decision@1"
