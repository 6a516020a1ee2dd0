"""The paper copy's words (locale/<lang>/LC_MESSAGES/paper_copy.po) and the names of the codes it prints
(reference/classifiers.json): complete in kk, ru and en, and every code the samples and the rules use is named."""

from __future__ import annotations

import json
import shutil

import pytest

from customs.core.paths import PROJECT_ROOT, REFERENCE_DIR
from customs.core.reference import ReferenceDataError, load_reference
from customs.notices.catalogue import entries, placeholders
from customs.notices.paper_copy import COPY_DOMAIN, copy_date, copy_words, css_content
from customs.rules.officials import RELEASE_CODES
from customs.rules.signers import ROLE_NAMES
from models.declaration import Status

LANGUAGES = ("kk", "ru", "en")
SAMPLES = sorted((PROJECT_ROOT / "samples").glob("[0-9]*.json"))


def test_the_three_copy_catalogues_have_the_same_entries_with_the_same_placeholders():
    english = entries("en", domain=COPY_DOMAIN)
    for language in ("kk", "ru"):
        table = entries(language, domain=COPY_DOMAIN)
        assert set(table) == set(english), language
        for key, text in table.items():
            assert placeholders(text) == placeholders(english[key]), (language, key, text)


def test_every_status_channel_direction_and_role_has_its_name_in_each_language():
    for language in LANGUAGES:
        words = copy_words(language)
        assert set(words["status"]) == {str(s) for s in Status}, language
        assert set(words["channel"]) == {"electronic", "portal", "paper"}, language
        assert set(words["direction"]) == {"IM", "EK"}, language
        assert set(ROLE_NAMES) <= set(words["role"]), language
    assert copy_words("kk")["status"]["released"] == "тауарлар шығарылды"
    assert copy_words("ru")["status"]["released"] == "товары выпущены"


def _codes_in_samples() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {"units": set(), "payment_methods": set(), "payment_types": set(), "document_types": set()}
    found["procedures"] = set()
    for path in SAMPLES:
        document = json.loads(path.read_text(encoding="utf-8"))
        found["units"] |= {g["unit_code"] for g in document.get("goods", [])}
        found["payment_types"] |= {p["code"] for p in document.get("payments", [])}
        found["payment_methods"] |= {p["paid"]["method"] for p in document.get("payments", []) if p.get("paid")}
        found["document_types"] |= {d["code"] for d in document.get("documents", [])}
        found["procedures"] |= {document["procedure"]} if "procedure" in document else set()
    return found


def test_every_code_the_samples_and_the_rules_use_is_named_in_each_language():
    classifiers = load_reference(REFERENCE_DIR).classifiers
    used = _codes_in_samples()
    assert used["units"] >= {"796", "166"} and "BN" in used["payment_methods"]  # what the demo prints
    for name, codes in {**used, "decisions": set(RELEASE_CODES)}.items():
        classifier = getattr(classifiers, name)
        assert classifier.source, name
        for code in codes:
            entry = classifier.find(code)
            assert entry is not None, (name, code)
            assert all(entry.titles[language] for language in LANGUAGES), (name, code)
    assert classifiers.payment_methods.find("BN").code == "БН"  # the Latin spelling a declaration may carry
    piece = classifiers.units.find("796")
    assert (piece.titles["ru"], piece.titles["kk"], piece.titles["en"]) == ("штука", "дана", "piece")


@pytest.mark.parametrize(
    "change,problem",
    [
        (lambda c: c["units"]["codes"].append(dict(c["units"]["codes"][0])), "units code 796 appears twice"),
        (lambda c: c["payment_methods"]["codes"][1]["aliases"].append("BN"), "payment_methods code BN appears twice"),
        (lambda c: c["decisions"]["codes"][0]["titles"].pop("kk"), "decisions code 10 has no title in kk"),
        (lambda c: c.pop("units"), "units: Field required"),
    ],
)
def test_a_broken_classifier_file_is_named_with_what_is_wrong(tmp_path, change, problem):
    for name in ("offices.json", "risk_profiles.json", "officials.json", "release_grounds.json"):
        shutil.copy(REFERENCE_DIR / name, tmp_path / name)
    classifiers = json.loads((REFERENCE_DIR / "classifiers.json").read_text(encoding="utf-8"))
    change(classifiers)
    (tmp_path / "classifiers.json").write_text(json.dumps(classifiers, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(ReferenceDataError) as error:
        load_reference(tmp_path)
    assert "classifiers.json" in str(error.value) and problem in str(error.value)


def test_page_numbers_and_the_footer_are_css_in_the_order_of_the_language():
    assert css_content(copy_words("ru")["page_of"], {}, ("page", "pages")) == '"стр. " counter(page) " из " counter(pages)'
    assert css_content(copy_words("kk")["page_of"], {}, ("page", "pages")) == 'counter(pages) " беттің " counter(page) "-беті"'
    # a value cannot end the CSS string or the <style> element
    assert css_content("{number}", {"number": 'a"b\\c</style>'}) == '"a\\22 b\\\\c\\3c /style>"'


def test_document_dates_read_dd_mm_yyyy_and_anything_else_as_written():
    assert copy_date("2026-11-02") == "02.11.2026"
    assert copy_date("02/11/2026") == "02/11/2026"
