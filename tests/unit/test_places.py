"""Places in the declaration as a person reads them (issue 31): every path a rule can give a reason has a name in
kk, ru and en, the box of the EAEU goods declaration where there is one, and no name is ever the path itself."""

from __future__ import annotations

import re
import types
import typing

import pytest
from pydantic import BaseModel

from customs.core.paths import PROJECT_ROOT, REFERENCE_DIR
from customs.core.reference import load_reference
from customs.notices.catalogue import PLACE, entries, localised_reasons, payment_name, place_name, step_name
from customs.rules.places import UNKNOWN, place_keys, place_of
from customs.rules.registration import format_logical_control
from customs.rules.release import decide_release
from customs.rules.rerun import STEPS
from customs.rules.signers import holder_of
from models.document import GoodsDeclaration, parse_declaration
from tests.helpers import as_bytes, sample
from tests.unit.test_catalogue import broken_document

LANGUAGES = ("kk", "ru", "en")
# Where reasons with a path are made for a declarant's letters (the same files test_catalogue reads for codes)
PATH_SOURCES = ("customs/rules/registration.py", "customs/rules/release.py", "customs/pki/verify.py", "customs/services/steps.py")


def model_paths(model: type[BaseModel], prefix: str = "$") -> set[str]:
    """Every path format control can report in a document of ``model``: each field (by its alias), each list
    entry, each field of an entry: format control names exactly these (models.reasons.json_path of pydantic's loc)."""
    found = {prefix}
    for name, info in model.model_fields.items():
        path = f"{prefix}.{info.alias or name}"
        found.add(path)
        annotation = info.annotation
        union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
        for candidate in typing.get_args(annotation) if union else (annotation,):  # X, list[X], X | None
            here = path
            if typing.get_origin(candidate) is list:
                candidate, here = typing.get_args(candidate)[0], f"{path}[0]"
                found.add(here)
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                found |= model_paths(candidate, here)
    return found


def paths_in_sources() -> set[str]:
    """The literal paths the rules write (``path="$.totals.items"``, ``path=f"$.goods[{index}].net_kg"``), indexes as 0."""
    found = set()
    for source in PATH_SOURCES:
        text = (PROJECT_ROOT / source).read_text(encoding="utf-8")
        for literal in re.findall(r'path=f?"([^"]+)"', text):
            found.add(re.sub(r"\{[^}]+\}", "0", literal))
        for literal in re.findall(r'f"(attachments\[\{[^}]+\}\])"', text):
            found.add(re.sub(r"\{[^}]+\}", "0", literal))
    return found


def every_path() -> set[str]:
    paths = model_paths(GoodsDeclaration) | paths_in_sources() | {"declaration", "attachments[0]", "attachments[11]"}
    # and the paths the rules give for a document that breaks every field it can (format and logic control)
    _, reasons = format_logical_control(as_bytes(broken_document()), load_reference(REFERENCE_DIR))
    paths |= {r.path for r in reasons}
    paths |= {r.path for r in decide_release(parse_declaration(sample("03-unpaid-vat.json"))[0], "red").reasons}
    return paths


def test_every_path_the_rules_can_give_has_a_place():
    paths = every_path()
    # the collection finds what it must: logic control, format control of nested lists, release, signatures
    for expected in ("$.goods[0].net_kg", "$.totals.customs_value", "$.payments[0].paid.method", "$.goods_location.zone"):
        assert expected in paths
    assert {"$", "declaration", "attachments[0]", "$.declarant.bin", "$.documents[0].date", "$.unexpected"} <= paths
    for path in sorted(paths):
        place = place_of(path)
        assert place.known, path
        for language in LANGUAGES:
            name = place_name(path, language)
            assert name and "$" not in name and "[" not in name and "_" not in name, (path, language, name)


def test_every_place_key_is_named_in_each_language():
    keys = place_keys() | {"entry.item", "entry.document", "entry.payment", "unknown_field"}
    subs = {key.split(".")[-1] for key in place_keys() if key.count(".") >= 2 and key.startswith("box.")}
    needed = {key for key in keys if not (key.startswith("box.") and key.count(".") >= 2)} | {f"sub.{s}" for s in subs}
    for language in LANGUAGES:
        table = entries(language)
        missing = {key for key in needed if (PLACE, key) not in table}
        assert not missing, (language, missing)


@pytest.mark.parametrize(
    ("path", "names"),
    [
        (
            "$.goods[1].net_kg",
            ("38-баған «Нетто салмағы (кг)», 2-тауар", "графа 38 «Вес нетто (кг)», товар 2", 'box 38 "Net mass (kg)", item 2'),
        ),
        (
            "$.totals.customs_value",
            ("12-баған «Жалпы кедендік құн»", "графа 12 «Общая таможенная стоимость»", 'box 12 "Total customs value"'),
        ),
        ("declaration", ("декларация тұтастай", "декларация в целом", "the declaration as a whole")),
        ("$", ("декларация тұтастай", "декларация в целом", "the declaration as a whole")),
        ("attachments[0]", ("қоса берілген № 1 құжат", "прилагаемый документ № 1", "supporting document No. 1")),
        ("$.declarant.bin", ("14-баған «Декларант», БСН", "графа 14 «Декларант», БИН", 'box 14 "Declarant", BIN')),
        (
            "$.goods[0].hs_code",
            ("33-баған «Тауар коды», 1-тауар", "графа 33 «Код товара», товар 1", 'box 33 "Commodity code", item 1'),
        ),
        (
            "$.payments[2].paid",
            (
                "47-баған «Кедендік және өзге де төлемдерді есептеу», 3-төлем, төлеу туралы мәліметтер",
                "графа 47 «Исчисление таможенных и иных платежей», платёж 3, сведения об уплате",
                'box 47 "Calculation of customs duties and other payments", payment 3, proof of payment',
            ),
        ),
        ("$.country_of_dispatch", ("15-баған «Жөнелтуші ел»", "графа 15 «Страна отправления»", 'box 15 "Country of dispatch"')),
        (
            "$.currency",
            (
                "22-баған «Шот бойынша валюта және жалпы сома»",
                "графа 22 «Валюта и общая сумма по счёту»",
                'box 22 "Currency and total amount invoiced"',
            ),
        ),
        (
            "$.documents[0].code",
            (
                "44-баған «Қосымша ақпарат/Ұсынылған құжаттар», 1-құжат, коды",
                "графа 44 «Дополнительная информация/Представленные документы», документ 1, код",
                'box 44 "Additional information/Documents produced", document 1, code',
            ),
        ),
        (
            "$.goods[0].colour",
            (
                "тауарлар туралы мәліметтер (31–45-бағандар), 1-тауар, «colour» өрісі",
                "сведения о товарах (графы 31–45), товар 1, поле «colour»",
                'goods items (boxes 31–45), item 1, field "colour"',
            ),
        ),
    ],
)
def test_places_read_as_the_form(path, names):
    assert tuple(place_name(path, language) for language in LANGUAGES) == names


@pytest.mark.parametrize("path", ["", None, "weird", "$.goods[x]", "$.goods[0].net_kg.deeper.still", "$[0]", "act.official_id"])
def test_a_path_it_cannot_place_gets_a_plain_phrase_never_the_path(path):
    assert place_of(path) == UNKNOWN
    assert [place_name(path, language) for language in LANGUAGES] == [
        "себептің сипаттамасын қараңыз",
        "см. описание причины",
        "see the description",
    ]


def test_letters_show_the_place_and_keep_the_path_out():
    reason = {"code": "NET_EXCEEDS_GROSS", "path": "$.goods[1].net_kg", "message": "net weight exceeds gross weight"}
    (shown,) = localised_reasons([reason], "ru")
    assert shown == {
        "code": "NET_EXCEEDS_GROSS",
        "place": "графа 38 «Вес нетто (кг)», товар 2",
        "message": "Вес нетто превышает вес брутто",
    }


def test_every_step_has_a_name_in_each_language():
    steps = (*STEPS, "intake", "official_decision", "notices", "clearance_run")
    for language in LANGUAGES:
        names = {step: step_name(step, language) for step in steps}
        assert all(name and name != step and "_" not in name for step, name in names.items()), names
    assert step_name("clearance_run", "ru") == "обработка декларации"
    assert step_name("signature_check", "en") == "verification of the electronic digital signatures"
    assert step_name("something_new", "kk") == "декларацияны өңдеу"  # a step not in the catalogue: a plain phrase


def test_payments_are_named_by_code_and_kind():
    assert [payment_name("5010", language) for language in LANGUAGES] == [
        "5010 төлемі (ҚҚС)",
        "платёж 5010 (НДС)",
        "payment 5010 (VAT)",
    ]
    assert payment_name("4010", "ru") == "платёж 4010"


@pytest.mark.parametrize(
    ("subject", "holder"),
    [
        ("C=KZ,OU=BIN050840001233,O=ТОО «Алатау Импорт»,CN=ТОО «Алатау Импорт»", ("ТОО «Алатау Импорт»", None, "050840001233")),
        ("C=KZ,SERIALNUMBER=IIN880501300124,CN=ТЕСТОВ ТЕСТ", ("ТЕСТОВ ТЕСТ", "880501300124", None)),
        (
            "OU=BIN050840001233,O=ТОО «Алатау Импорт»,C=KZ,SERIALNUMBER=IIN880501300124,CN=ИВАНОВ ИВАН",
            ("ИВАНОВ ИВАН (ТОО «Алатау Импорт»)", "880501300124", "050840001233"),
        ),
        (r"CN=ТОО «А\, Б»,C=KZ", ("ТОО «А, Б»", None, None)),
        ("C=KZ,SERIALNUMBER=IIN880501300124", (None, "880501300124", None)),
        ("not a name at all", (None, None, None)),
    ],
)
def test_a_certificate_is_named_by_its_holder(subject, holder):
    found = holder_of(subject)
    assert (found.shown_name, found.iin, found.bin) == holder
