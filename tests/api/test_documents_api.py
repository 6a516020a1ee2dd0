"""POST /v1/documents/verify (any authenticated client) and the paper copy's QR check GET /v1/documents/check (no
login, nothing private), in-process."""

from __future__ import annotations

import base64
import warnings

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from customs.api import create_app
from customs.services.clients import create_client
from customs.services.printing import copy_of, render_print_copy, request_print
from tests.helpers import AUTHORITY_BIN, DECLARANT_BIN, INSPECTOR, attachments, cleared
from tests.services.test_authority_documents import decision_files


@pytest.fixture
def http(settings):
    with TestClient(create_app()) as client:
        yield client


def token(kind: str) -> dict[str, str]:
    ids = (DECLARANT_BIN,) if kind == "declarant" else ()
    _, secret = create_client(f"{kind}-docs", kind, ids, INSPECTOR if kind == "official" else None)
    return {"Authorization": f"Bearer {secret}"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def test_verify_needs_a_login(http):
    answer = http.post("/v1/documents/verify", json={"document": b64(b"{}")})
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "UNAUTHENTICATED"


@pytest.mark.parametrize("kind", ["declarant", "portal", "official"])
def test_every_kind_of_client_verifies_a_signed_decision_and_a_changed_one_fails(http, signed_settings, company_signer, kind):
    declaration = cleared(company_signer)
    files = decision_files(signed_settings, declaration.application_id)
    headers = token(kind)
    answer = http.post(
        "/v1/documents/verify",
        json={"document": b64(files["decision.json"]), "signature": b64(files["decision.json.p7s"]), "filename": "decision.json"},
        headers=headers,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["genuine"] is True and body["signer"]["bin"] == AUTHORITY_BIN
    assert body["states"]["registration_number"] == declaration.registration_number
    assert body["database"]["holds"] is True
    forged = bytearray(files["decision.json"])
    forged[forged.index(b'"release"') + 1] ^= 0x20  # "Release": one byte
    answer = http.post(
        "/v1/documents/verify",
        files=[
            ("document", ("decision.json", bytes(forged), "application/json")),
            ("signature", ("decision.json.p7s", files["decision.json.p7s"], "application/pkcs7-signature")),
        ],
        headers=headers,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["genuine"] is False and [r["code"] for r in answer.json()["reasons"]] == ["DIGEST_MISMATCH"]


def test_a_signed_paper_copy_verifies_by_multipart(http, signed_settings, company_signer):
    declaration = cleared(company_signer)
    request = request_print(declaration.application_id, requested_by=DECLARANT_BIN)
    render_print_copy(request.request_id)
    _, pdf = copy_of(request.request_id)
    answer = http.post(
        "/v1/documents/verify", files=[("document", ("copy.pdf", pdf, "application/pdf"))], headers=token("portal")
    )
    assert answer.status_code == 200 and answer.json()["genuine"] is True, answer.text
    assert answer.json()["kind"] == "paper_copy"


def test_bad_input_is_422_with_where(http, settings):
    headers = token("portal")
    empty = http.post("/v1/documents/verify", json={"document": ""}, headers=headers)
    assert empty.status_code == 422 and empty.json()["error"] == {
        "code": "DOCUMENT_INVALID",
        "path": "document",
        "message": "document is empty: nothing to check",
    }
    broken = http.post("/v1/documents/verify", json={"document": "%%%"}, headers=headers)
    assert broken.status_code == 422 and broken.json()["error"]["path"] == "$.document"
    unknown = http.post("/v1/documents/verify", files=[("letter", ("x", b"x", "text/plain"))], headers=headers)
    assert unknown.status_code == 422 and unknown.json()["error"]["path"] == "letter"
    text = http.post("/v1/documents/verify", content=b"x", headers={**headers, "content-type": "text/plain"})
    assert text.status_code == 415


def test_a_document_over_the_verify_limit_is_refused_before_it_is_read(http, settings):
    from customs.core.settings import configure

    configure(settings.model_copy(update={"api_max_verify_bytes": 1000}))
    answer = http.post("/v1/documents/verify", json={"document": b64(b"x" * 2000)}, headers=token("portal"))
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "TOO_LARGE"


def test_the_qr_check_needs_no_login_and_tells_nothing_private(http, settings, company_signer):
    declaration = cleared(company_signer)
    answer = http.get(
        "/v1/documents/check", params={"number": declaration.registration_number, "sha256": declaration.content_sha256}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["found"] is True and body["status"] == "released" and body["customs_office"] == declaration.customs_office
    assert DECLARANT_BIN not in answer.text and "Алатау" not in answer.text
    wrong = http.get("/v1/documents/check", params={"number": declaration.registration_number, "sha256": "f" * 64})
    assert wrong.status_code == 200 and wrong.json()["found"] is False and wrong.json().get("status") is None
    bad = http.get("/v1/documents/check", params={"number": declaration.registration_number, "sha256": "xyz"})
    assert bad.status_code == 422 and bad.json()["error"]["path"] == "sha256"


def test_the_letter_names_its_signature(signed_settings, company_signer):
    from tests.services.test_authority_documents import letter

    declaration = cleared(company_signer)
    message = letter(signed_settings, declaration.application_id)
    assert message["X-Customs-Authority-Signature"] == "decision.json.p7s (detached CMS)"
    assert set(attachments(message)) == {"decision.json", "decision.json.p7s"}
