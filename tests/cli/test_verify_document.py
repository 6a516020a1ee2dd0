"""customs verify-document and customs pki issue --authority: exit 0 genuine, 1 not genuine, 3 input that cannot be
checked; a service certificate of each family (RSA, GOST 2004, GOST 2015) issued by the CLI signs and verifies."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from customs.cli import app
from customs.core.settings import configure
from customs.pki.signing import CmsSigner
from customs.pki.testing import TestPki
from tests.helpers import AUTHORITY_BIN, cleared
from tests.services.test_authority_documents import decision_files, letter


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_a_letter_and_its_decision_json_verify_and_one_changed_byte_fails(signed_settings, company_signer, tmp_path):
    declaration = cleared(company_signer)
    files = decision_files(signed_settings, declaration.application_id)
    (tmp_path / "decision.json").write_bytes(files["decision.json"])
    (tmp_path / "decision.json.p7s").write_bytes(files["decision.json.p7s"])

    genuine = run("verify-document", str(tmp_path / "decision.json"), "--json")  # FILE.p7s found next to it
    assert genuine.exit_code == 0, genuine.output
    body = json.loads(genuine.stdout)
    assert body["genuine"] is True and body["signer"]["bin"] == AUTHORITY_BIN
    assert body["states"]["decision"] == "release" and body["database"]["holds"] is True

    eml = tmp_path / "letter.eml"
    eml.write_bytes(letter(signed_settings, declaration.application_id).as_bytes())
    from_letter = run("verify-document", str(eml))
    assert from_letter.exit_code == 0 and "GENUINE, signed by the authority" in from_letter.stdout, from_letter.output
    assert f"release of {declaration.registration_number}" in from_letter.stdout

    changed = files["decision.json"].replace(b'"automatic": true', b'"automatic": True')
    (tmp_path / "changed.json").write_bytes(changed)
    refused = run("verify-document", str(tmp_path / "changed.json"), "--signature", str(tmp_path / "decision.json.p7s"))
    assert refused.exit_code == 1 and "NOT GENUINE" in refused.stdout and "DIGEST_MISMATCH" in refused.stdout


def test_bad_input_exits_3_saying_what_and_where(settings, tmp_path):
    missing = run("verify-document", str(tmp_path / "nothing.json"), "--json")
    assert missing.exit_code == 3
    assert json.loads(missing.stdout)["error"]["code"] == "DOCUMENT_INVALID" and "nothing.json" in missing.stdout
    (tmp_path / "empty.json").write_bytes(b"")
    empty = run("verify-document", str(tmp_path / "empty.json"))
    assert empty.exit_code == 3 and "empty.json is empty" in empty.stderr
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.7\nnot really a pdf")
    broken = run("verify-document", str(tmp_path / "broken.pdf"))
    assert broken.exit_code == 3 and "broken.pdf: not a PDF that can be read" in broken.stderr


def test_an_unsigned_decision_json_exits_1_not_signed_by_the_authority(settings, company_signer, tmp_path):
    declaration = cleared(company_signer)
    (tmp_path / "decision.json").write_bytes(decision_files(settings, declaration.application_id)["decision.json"])
    result = run("verify-document", str(tmp_path / "decision.json"))
    assert result.exit_code == 1 and "NOT_SIGNED" in result.stdout and "not signed by the authority" in result.stdout


@pytest.mark.parametrize("alg", ["rsa", "gost2004", "gost2015"])
def test_pki_issue_authority_of_each_family_signs_what_verifies(settings, company_signer, tmp_path, alg):
    pki_dir = tmp_path / "pki"
    assert run("pki", "init", str(pki_dir), "--alg", alg).exit_code == 0
    issued = run("pki", "issue", str(pki_dir), "--authority", "--alg", alg)
    assert issued.exit_code == 0, issued.output
    lines = dict(line.strip().split("=", 1) for line in issued.stdout.splitlines() if line.strip().startswith("CUSTOMS_"))
    pki = TestPki(pki_dir)
    configure(
        settings.model_copy(
            update={
                "trust_dir": pki.trust_dir,
                "crl_dir": pki.crl_dir,
                "authority_cert": lines["CUSTOMS_AUTHORITY_CERT"],
                "authority_key": lines["CUSTOMS_AUTHORITY_KEY"],
                "authority_chain": lines["CUSTOMS_AUTHORITY_CHAIN"],
            }
        )
    )
    signer = CmsSigner(lines["CUSTOMS_AUTHORITY_CERT"], lines["CUSTOMS_AUTHORITY_KEY"], (lines["CUSTOMS_AUTHORITY_CHAIN"],))
    document = tmp_path / "decision.json"
    document.write_bytes(b'{"schema": "kz.customs/decision@1", "application_id": "A-NONE"}')
    (tmp_path / "decision.json.p7s").write_bytes(signer.sign(document.read_bytes()))
    result = run("verify-document", str(document), "--json")
    body = json.loads(result.stdout)
    assert result.exit_code == 0 and body["genuine"] is True, result.output
    assert body["signer"]["iin"] is None and body["signer"]["bin"] == AUTHORITY_BIN
    assert "O=Комитет государственных доходов Министерства финансов" in body["signer"]["subject"]
    assert body["database"] == {"found": False, "holds": False, "message": "no declaration A-NONE in this system's database"}


def test_pki_issue_authority_refuses_a_person(settings, tmp_path):
    run("pki", "init", str(tmp_path / "pki"), "--alg", "rsa")
    result = run("pki", "issue", str(tmp_path / "pki"), "--authority", "--iin", "880312447497")
    assert result.exit_code == 2 and "no --iin, --auth or --role" in result.stderr
