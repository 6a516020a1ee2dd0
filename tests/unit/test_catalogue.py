"""The message catalogue of reason codes (locale/<lang>/LC_MESSAGES/reasons.po): every code the rules give a
declarant has its message in kk, ru and en, filled with the values the reason carries."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from customs.core.paths import LOCALE_DIR, PROJECT_ROOT, REFERENCE_DIR
from customs.core.reference import load_reference
from customs.notices.catalogue import GENERIC, PART, entries, placeholders, reason_message
from customs.rules.registration import logical_control
from customs.rules.release import decide_release
from customs.rules.signers import FIRST_HEAD, HR, LEGAL_ENTITY, Signer, signer_problem
from models.document import parse_declaration
from models.identifiers import identifier_problem
from models.reasons import Reason
from tests.helpers import sample

LANGUAGES = ("kk", "ru", "en")
# Where the reasons of a registration refusal (and of a release waiting for an official) are made.
REASON_SOURCES = (
    "customs/rules/registration.py",
    "customs/rules/release.py",
    "models/document.py",
    "customs/pki/verify.py",
    "customs/pki/certificates.py",
    "customs/pki/trust.py",
)


def codes_in_sources() -> set[str]:
    found = set()
    for source in REASON_SOURCES:
        found |= set(re.findall(r'"([A-Z]+(?:_[A-Z]+)+)"', (PROJECT_ROOT / source).read_text(encoding="utf-8")))
    return found | {"LANE_YELLOW", "LANE_RED"}  # f"LANE_{lane.upper()}"


def test_every_code_the_rules_give_has_a_message_in_each_language():
    codes = codes_in_sources()
    assert {"NET_EXCEEDS_GROSS", "SIGNER_NOT_DECLARANT", "CERT_REVOKED", "IIN_BIN_INVALID"} <= codes
    for language in LANGUAGES:
        table = entries(language)
        for code in codes:
            # a reason stored without params (before there were any) still gets a message of its own
            keys = [(None, code), (GENERIC, code)]
            assert any(key in table and not placeholders(table[key]) for key in keys), (language, code)
            message = reason_message({"code": code, "path": "$", "message": "ENGLISH"}, language)
            assert message and message != "ENGLISH" and "{" not in message, (language, code)


def test_the_three_catalogues_have_the_same_entries_with_the_same_placeholders():
    english = entries("en")
    for language in ("kk", "ru"):
        table = entries(language)
        assert set(table) == set(english), language
        for key, text in table.items():
            assert placeholders(text) == placeholders(english[key]), (language, key, text)
    assert {key for key in english if key[0] == PART} == {
        (PART, name) for name in ("signature", "certificate", "ca_certificate", "holder_iin", "holder_bin", "holder_unnamed")
    }


def test_catalogues_are_read_from_the_po_files_alone(tmp_path):
    """A fresh clone has the .po files and nothing compiled: Babel reads them as they are."""
    for language in LANGUAGES:
        target = tmp_path / language / "LC_MESSAGES"
        target.mkdir(parents=True)
        shutil.copy(LOCALE_DIR / language / "LC_MESSAGES" / "reasons.po", target)
        assert entries(language, tmp_path) == entries(language)
    assert not list(LOCALE_DIR.rglob("*.mo"))
    if (PROJECT_ROOT / ".git").exists() and shutil.which("git"):
        for language in LANGUAGES:  # committed with the code: git must not ignore them
            path = f"locale/{language}/LC_MESSAGES/reasons.po"
            assert subprocess.run(["git", "check-ignore", "-q", path], cwd=PROJECT_ROOT).returncode == 1, path


def _translated_with_every_value(reason: Reason, language: str) -> str:
    message = reason_message(reason.model_dump(), language)
    for name, value in reason.params.items():
        if name == "signer_subject":  # a certificate is named by its holder, never by its DN
            assert value not in message and "CN=" not in message, (language, message)
        elif name != "variant":
            assert value in message, (language, reason.code, name, value, message)
    return message


def broken_document() -> dict:
    document = sample()
    document["direction"] = "XX"
    document["declarant"]["bin"] = "050840001234"  # wrong check digit
    document["recipient"]["bin"] = "12345"
    document["goods"][0]["hs_code"] = "12"
    document["goods"][0]["net_kg"] = 5
    document["goods"][0]["gross_kg"] = "abc"
    document["goods"][0]["description"] = ""
    document["goods"][0]["item_no"] = 0
    document["country_of_dispatch"] = "XX"
    document["currency"] = "ZZZ"
    document["totals"]["packages"] = "x"
    document["exchange_rate"] = "-1"
    document["unexpected"] = True
    del document["sender"]["address"]
    return document


def test_reasons_of_the_rules_are_translated_with_their_values():
    _, structural = parse_declaration(broken_document())
    codes = {r.code for r in structural}
    assert {"VALUE_NOT_ALLOWED", "IIN_BIN_INVALID", "HS_CODE_INVALID", "AMOUNT_NOT_STRING", "AMOUNT_INVALID"} <= codes
    assert {"TOO_SHORT", "VALUE_TOO_SMALL", "COUNTRY_CODE_INVALID", "CURRENCY_CODE_INVALID", "FIELD_INVALID"} <= codes
    assert {"VALUE_NOT_POSITIVE", "FIELD_UNKNOWN", "FIELD_MISSING"} <= codes

    document = sample()
    document["goods"][0]["net_kg"] = "99999.000"
    document["goods"][0]["item_no"] = 2
    document["totals"]["items"] = 9
    document["totals"]["customs_value"] = "1.00"
    document["goods_location"] = {"zone": "KHR-ROAD"}
    doc, none = parse_declaration(document)
    assert doc is not None and not none
    logical = logical_control(doc, load_reference(REFERENCE_DIR))
    assert sorted(r.code for r in logical) == [
        "ITEM_NUMBERING",
        "NET_EXCEEDS_GROSS",
        "TOTALS_MISMATCH",
        "TOTALS_MISMATCH",
        "ZONE_UNKNOWN",
    ]
    waiting = decide_release(parse_declaration(sample("03-unpaid-vat.json"))[0], "red").reasons
    assert [r.code for r in waiting] == ["LANE_RED", "PAYMENT_NOT_PAID"]

    for reason in [*structural, *logical, *waiting]:
        for language in LANGUAGES:
            message = _translated_with_every_value(reason, language)
            if language != "en":
                assert message != reason.message, (language, reason.code)
    ru = {r.path: reason_message(r.model_dump(), "ru") for r in [*structural, *logical]}
    assert ru["$.goods[0].net_kg"] == "Вес нетто 99999.000 кг превышает вес брутто 1450.000 кг"
    assert ru["$.totals.items"] == "В графе 5 указано товаров: 9, а в декларации их 2"
    assert ru["$.declarant.bin"] == "«050840001234»: неверный контрольный разряд — указан 4, должен быть 3"
    assert ru["$.totals.packages"] == "Должно быть целым числом"
    kk = {r.path: reason_message(r.model_dump(), "kk") for r in logical}
    assert kk["$.goods_location.zone"] == (
        "KHR-ROAD аймағы 50101 кеден органының кедендік бақылау аймағы емес (оның аймақтары: ALA-TSW, ALA-AIR)"
    )


def test_signature_reasons_are_translated_from_their_parts():
    company = {"declarant_iin": None, "declarant_bin": "050840001233"}
    problems = [
        signer_problem(Signer("880501300124", None, frozenset()), **company),
        signer_problem(Signer(None, "050840001233", frozenset({LEGAL_ENTITY, HR})), **company),
        signer_problem(Signer("880501300124", None, frozenset()), declarant_iin="990101300125", declarant_bin=None),
        signer_problem(Signer(None, None), declarant_iin=None, declarant_bin=None),
    ]
    assert [p.params["variant"] for p in problems] == ["bin_mismatch", "no_signing_right", "iin_mismatch", "no_declarant_id"]
    assert signer_problem(Signer(None, "050840001233", frozenset({LEGAL_ENTITY, FIRST_HEAD})), **company) is None
    for problem in problems:
        reason = Reason(
            code="SIGNER_NOT_DECLARANT",
            path="declaration",
            message=f"signature of declaration.json: {problem}",
            params={"document": "declaration.json", **problem.params, "signer_subject": "CN=X", "signer_serial": "1f"},
        )
        for language in LANGUAGES:
            _translated_with_every_value(reason, language)
    reason = Reason(
        code="SIGNER_NOT_DECLARANT",
        path="declaration",
        message="…",
        params={"document": "declaration.json", **problems[0].params, "signer_subject": "CN=X", "signer_serial": "1f"},
    )
    assert reason_message(reason.model_dump(), "ru") == (
        "Подпись документа declaration.json: сертификат (ИИН 880501300124, БИН —) выдан не декларанту — юридическому "
        "лицу с БИН 050840001233: сертификат должен быть выдан на этот БИН; сертификат X, серийный номер 1f"
    )
    assert reason_message(reason.model_dump(), "kk").startswith("declaration.json құжатының қолтаңбасы: сертификат (ЖСН")
    # Stored before reasons had params: the code's own message, in the language.
    assert reason_message({"code": "SIGNER_NOT_DECLARANT", "message": "signed by …"}, "kk") == (
        "Қол қоюшы декларант атынан қол қоюға құқылы емес"
    )
    assert identifier_problem("100000000200").params == {"variant": "check_digit", "given": "0", "expected": "5"}


def test_a_reason_without_params_is_stored_as_before():
    """The audit chain hashes the stored reasons: one without params is the same dict (and JSON) as ever."""
    old = {"code": "TOTALS_MISMATCH", "path": "$.totals.items", "message": "box 5 says 9 items but the declaration lists 2"}
    assert Reason(**old).model_dump() == old
    assert json.loads(Reason(**old).model_dump_json()) == old
    new = Reason(**old, params={"variant": "items", "declared": 9, "counted": Decimal("2")})
    assert new.model_dump() == {**old, "params": {"variant": "items", "declared": "9", "counted": "2"}}
    assert Reason(**new.model_dump()) == new
    forged = Reason(code="X", path="$", message="m", params={"value": "XX\n\n=== РЕШЕНИЕ ==="})
    assert forged.params["value"] == "XX\\n\\n=== РЕШЕНИЕ ==="  # params are single lines like the message


def test_an_unknown_code_falls_back_to_the_stored_message():
    assert reason_message({"code": "NO_SUCH_CODE", "message": "as stored"}, "kk") == "as stored"


def test_locale_readme_is_there():
    assert (LOCALE_DIR / "README.md").is_file()


@pytest.mark.parametrize("language", LANGUAGES)
def test_catalogue_files_declare_their_language(language):
    text = Path(LOCALE_DIR / language / "LC_MESSAGES" / "reasons.po").read_text(encoding="utf-8")
    assert f'"Language: {language}\\n"' in text and "charset=utf-8" in text
