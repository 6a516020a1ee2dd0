"""Letters in one language (issue 17, items 7 and 8): reason messages from the catalogue, office and zone
names, the From name and how to appeal in the letter's language; subjects that read back as written.

The letters are the .eml files the outbox writes (no SMTP server configured), parsed back as a mail
reader would."""

from __future__ import annotations

import email
import html
from datetime import UTC, datetime
from email import policy

import pytest

from customs.core.paths import REFERENCE_DIR
from customs.core.reference import load_reference
from customs.notices.render import DeclarationFacts, build_message, notice_context, render_notice
from customs.rules.bidi import BIDI_CONTROLS
from customs.services.officials import cancel_release, decide
from customs.services.outbox import dispatch_due_sync
from models.declaration import Status
from models.outbox import Notice, NoticeKind
from tests.helpers import INSPECTOR, as_bytes, parts, run_steps, sample, stored, submit_signed, unique
from tests.services.test_notices import ALL_KINDS_FACTS

LANGUAGES = ("kk", "ru", "en")
ADDRESS = "broker@alatau-import.kz"

OFFICE_50101 = {
    "kk": "Алматы қаласы бойынша МКД, «Алматы-кедендік ресімдеу орталығы» кеден бекеті",
    "ru": "ДГД по г. Алматы, таможенный пост «Алматы-центр таможенного оформления»",
    "en": 'State Revenue Department of Almaty, customs post "Almaty Customs Clearance Centre"',
}
FROM_NAMES = {
    "kk": "ҚР мемлекеттік кірістер органдары",
    "ru": "Органы государственных доходов РК",
    "en": "State Revenue Authorities of Kazakhstan",
}
# The heading and the time limit of the appeal paragraph (templates/notices/<lang>/_appeal.j2)
APPEAL = {
    "kk": ("Шағымдану тәртібі", "жоғары тұрған мемлекеттік кірістер органына", "үш ай ішінде", "сотқа"),
    "ru": ("Порядок обжалования", "в вышестоящий орган государственных доходов", "в течение трёх месяцев", "в суд"),
    "en": ("How to appeal", "the higher state revenue body", "three months", "in court"),
}


def with_language(document: dict, language: str) -> dict:
    document["declarant"]["language"] = language
    document["declarant"]["email"] = ADDRESS
    return document


def letters(settings) -> list[email.message.EmailMessage]:
    """Every notice sent so far, as the declarant's mail reader reads it."""
    dispatch_due_sync()
    files = sorted((settings.data_dir / "outbox").glob("*.eml"))
    return [email.message_from_bytes(path.read_bytes(), policy=policy.default) for path in files]


def kind_of(message) -> str:
    return message["X-Customs-Notice"].split(";")[0]


def bodies(message) -> tuple[str, str]:
    both = parts(message)
    return both["text/plain"], html.unescape(both["text/html"])


def assert_in_language(message, language: str) -> tuple[str, str]:
    """What every letter of this issue must say in its language: From, office and how to appeal."""
    sender = message["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == (FROM_NAMES[language], "noreply@customs.kgd.gov.kz")
    text, markup = bodies(message)
    for body in (text, markup):
        assert OFFICE_50101[language] in body
        for other in set(LANGUAGES) - {language}:
            assert OFFICE_50101[other] not in body
    return text, markup


def assert_appeal(text: str, markup: str, language: str) -> None:
    for body in (text, markup):
        assert all(piece in body for piece in APPEAL[language]), body
        for other in set(LANGUAGES) - {language}:
            assert APPEAL[other][0] not in body


# --- Registration refused ---------------------------------------------------------------------------

EXPECTED_REASONS = {
    "ru": [
        "Вес нетто 99999.000 кг превышает вес брутто 1450.000 кг",
        "В графе 5 указано товаров: 9, а в декларации их 2",
        "Товары нумеруются по порядку: 1, 2, 3...; у товара 2 указан номер 5",
    ],
    "kk": [
        "Нетто салмағы (99999.000 кг) брутто салмағынан (1450.000 кг) асып түседі",
        "5-бағанда 9 тауар көрсетілген, ал декларацияда 2 тауар бар",
        "Тауарлар ретімен нөмірленеді: 1, 2, 3...; 2-тауарға 5 нөмірі көрсетілген",
    ],
    "en": [
        "Net weight 99999.000 kg exceeds gross weight 1450.000 kg",
        "Box 5 says 9 items but the declaration lists 2",
        "Goods items are numbered 1, 2, 3... in order; item 2 has number 5",
    ],
}
EXPECTED_FORMAT_REASONS = {
    "ru": [
        "«XX» не является кодом страны по ISO 3166-1 alpha-2 (например, KZ, CN, DE)",
        'Суммы указываются десятичными числами в виде строк JSON, например "1250.00"; указано число 5',
        "Обязательное поле не заполнено",
        "Подпись документа declaration.json: сертификат (ИИН 880501300124, БИН —) выдан не декларанту — "
        "юридическому лицу с БИН 050840001233: сертификат должен быть выдан на этот БИН; "
        "сертификат ТЕСТОВ ТЕСТ, серийный номер ",
    ],
    "kk": [
        "«XX» — ISO 3166-1 alpha-2 бойынша ел коды (мысалы, KZ, CN, DE) емес",
        'Сомалар JSON жолы түрінде жазылған ондық сандармен көрсетіледі, мысалы "1250.00"; 5 саны көрсетілген',
        "Міндетті өріс толтырылмаған",
        "declaration.json құжатының қолтаңбасы: сертификат (ЖСН 880501300124, БСН —) декларантқа — БСН 050840001233 "
        "заңды тұлғаға берілмеген",
        "; ТЕСТОВ ТЕСТ сертификаты, сериялық нөмірі ",
    ],
    "en": [
        '"XX" is not an ISO 3166-1 alpha-2 country code (e.g. KZ, CN, DE)',
        'Amounts are decimals written as JSON strings, e.g. "1250.00"; the number 5 was given',
        "This field is required",
        "Signature of declaration.json: the certificate (IIN 880501300124, BIN —) is not issued for the declarant, "
        "the legal entity BIN 050840001233",
        "; certificate of ТЕСТОВ ТЕСТ, serial number ",
    ],
}
# Where each reason is, as the declarant reads the form (customs.rules.places): never the stored JSON path
EXPECTED_PLACES = {
    "ru": [
        "графа 38 «Вес нетто (кг)», товар 1",
        "графа 5 «Всего наименований товаров»",
        "графа 32 «Товар», товар 2",
    ],
    "kk": ["38-баған «Нетто салмағы (кг)», 1-тауар", "5-баған «Тауарлар атауларының жалпы саны»", "32-баған «Тауар», 2-тауар"],
    "en": ['box 38 "Net mass (kg)", item 1', 'box 5 "Total number of items"', 'box 32 "Item", item 2'],
}
EXPECTED_FORMAT_PLACES = {
    "ru": [
        "графа 15 «Страна отправления»",
        "графа 35 «Вес брутто (кг)», товар 1",
        "графа 2 «Отправитель/Экспортер», адрес",
        "декларация в целом",
    ],
    "kk": [
        "15-баған «Жөнелтуші ел»",
        "35-баған «Брутто салмағы (кг)», 1-тауар",
        "2-баған «Жөнелтуші/Экспорттаушы», мекенжайы",
        "декларация тұтастай",
    ],
    "en": [
        'box 15 "Country of dispatch"',
        'box 35 "Gross mass (kg)", item 1',
        'box 2 "Consignor/Exporter", address',
        "the declaration as a whole",
    ],
}


def assert_reads_as_a_person(*bodies: str) -> None:
    """What issue 31 found in the letters: JSON paths, certificates named by their DN, step codes."""
    for body in bodies:
        for raw in ("$.", "$[", "CN=", "SERIALNUMBER=", "OU=BIN", "clearance_run", "signature_check", "risk_assessment"):
            assert raw not in body, (raw, body)


@pytest.mark.parametrize("language", LANGUAGES)
def test_registration_refusal_gives_every_reason_in_the_letters_language(settings, company_signer, person_signer, language):
    logical = with_language(unique(sample()), language)
    logical["goods"][0]["net_kg"] = "99999.000"
    logical["goods"][1]["item_no"] = 5
    logical["totals"]["items"] = 9
    structural = with_language(unique(sample()), language)
    structural["country_of_dispatch"] = "XX"
    structural["goods"][0]["gross_kg"] = 5
    del structural["sender"]["address"]
    checks = {
        submit_signed(company_signer, logical).application_id: (EXPECTED_REASONS, EXPECTED_PLACES),
        # not the company's signer
        submit_signed(person_signer, structural).application_id: (EXPECTED_FORMAT_REASONS, EXPECTED_FORMAT_PLACES),
    }
    for application_id in checks:
        assert run_steps(application_id).status == Status.REGISTRATION_REFUSED
    sent = {m["X-Customs-Application-Id"]: m for m in letters(settings) if kind_of(m) == "registration_refusal"}
    for application_id, (expected, places) in checks.items():
        stored_reasons = stored(application_id).reasons
        assert stored_reasons and all(r["message"] and r["code"] for r in stored_reasons)
        assert any(r["path"].startswith("$.") for r in stored_reasons)  # the data keeps the path
        text, markup = assert_in_language(sent[application_id], language)
        assert_reads_as_a_person(text, markup)
        for body in (text, markup):
            for message in expected[language] + places[language]:
                assert message in body, (message, body)
            for reason in stored_reasons:
                assert reason["code"] in body
                assert reason["path"] == "declaration" or reason["path"] not in body  # "declaration": a word too
                if language != "en":  # the stored English messages are not what a kk or ru letter says
                    assert reason["message"] not in body, reason
        assert_appeal(text, markup, language)


# --- Release refused, release cancelled ---------------------------------------------------------------

GROUND_TITLES = {
    "PAYMENTS_NOT_MADE": {
        "kk": "кедендік төлемдер төленбеген және олардың төленуі қамтамасыз етілмеген",
        "ru": "таможенные платежи не уплачены и их уплата не обеспечена",
        "en": "customs duties and taxes are neither paid nor secured",
    },
    "DOCUMENTS_INVALID": {
        "kk": "тауарлар шығарылған құжаттар жарамсыз деп танылған",
        "ru": "документы, на основании которых выпущены товары, признаны недействительными",
        "en": "documents on which the release was based were found invalid",
    },
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_release_refusal_and_cancellation_letters_are_in_one_language(settings, company_signer, officials, language):
    refused = submit_signed(company_signer, with_language(unique(sample("03-unpaid-vat.json")), language)).application_id
    assert run_steps(refused).status == Status.AWAITING_OFFICIAL
    decide(refused, act=officials.decision(refused, "refuse", INSPECTOR, grounds=["PAYMENTS_NOT_MADE"], text="НДС не уплачен"))
    cancelled = submit_signed(company_signer, with_language(unique(sample()), language)).application_id
    assert run_steps(cancelled).status == Status.RELEASED
    cancel_release(cancelled, act=officials.act("cancel_release", INSPECTOR, cancelled, grounds=["DOCUMENTS_INVALID"]))
    sent = {(kind_of(m), m["X-Customs-Application-Id"]): m for m in letters(settings)}
    for kind, application_id, ground in (
        ("release_refusal", refused, "PAYMENTS_NOT_MADE"),
        ("release_cancellation", cancelled, "DOCUMENTS_INVALID"),
    ):
        message = sent[kind, application_id]
        text, markup = assert_in_language(message, language)
        stored_reasons = stored(application_id).reasons or []
        for body in (text, markup):
            assert GROUND_TITLES[ground][language] in body
            if language != "en":
                assert GROUND_TITLES[ground]["en"] not in body
                assert all(r["message"] not in body for r in stored_reasons)
        assert_appeal(text, markup, language)
    # The other letters name the office in the language too (and have no appeal paragraph: nothing was refused).
    for kind in ("acceptance", "registration", "release"):
        text, markup = assert_in_language(sent[kind, cancelled], language)
        assert APPEAL[language][0] not in text and APPEAL[language][0] not in markup


# --- Subjects, zone names, the supervisors' alert ---------------------------------------------------------


def rendered(kind: NoticeKind, language: str, facts: dict) -> tuple[email.message.EmailMessage, str]:
    """A notice built as the outbox builds it, its bytes parsed back, and the subject the template gave."""
    document = with_language(unique(sample()), language)
    declaration = DeclarationFacts(
        application_id="01JD8ZQ7X3M5V9K2N4P6R8T0WY",
        channel="electronic",
        submitted_at=datetime(2026, 11, 26, 4, 0, tzinfo=UTC),
        sha256="ab" * 32,
        customs_office="50101",
        registration_number="50101/261126/0000042",
        content=as_bytes(document),
    )
    notice = Notice(
        id=7,
        uid="0f6c1c1e2d3b4a59",
        application_id=declaration.application_id,
        kind=kind,
        dedup_key=f"test:{kind}",
        recipient=ADDRESS,
        language=language,
        facts={"event_at": "2026-11-26T05:00:00+00:00", **facts},
        created_at=datetime(2026, 11, 26, 5, 0, tzinfo=UTC),
    )
    reference = load_reference(REFERENCE_DIR)
    built = build_message(notice, declaration, reference, sender="noreply@customs.kgd.gov.kz", domain="customs.kgd.gov.kz")
    subject = render_notice(notice_context(notice, declaration, reference)).subject
    return email.message_from_bytes(built.as_bytes(), policy=policy.default), subject


@pytest.mark.parametrize("language", LANGUAGES)
def test_subjects_read_back_exactly_as_written(language):
    """English subjects longer than a line were folded right after "Subject:" and read back with a leading
    space; Kazakh and Russian ones lost the space between two encoded words."""
    for kind, facts in ALL_KINDS_FACTS.items():
        message, subject = rendered(kind, language, facts)
        assert subject == subject.strip() and "  " not in subject
        assert str(message["Subject"]) == subject, (kind, str(message["Subject"]))
        raw = message.as_bytes()
        first = next(line for line in raw.splitlines() if line.startswith(b"Subject:"))
        assert first.strip() != b"Subject:", (kind, first)  # the subject starts on the header's own line


def test_an_english_subject_has_no_leading_space():
    message, subject = rendered(NoticeKind.REGISTRATION, "en", ALL_KINDS_FACTS[NoticeKind.REGISTRATION])
    assert subject == "Goods declaration registered, registration number 50101/261126/0000042"
    assert str(message["Subject"]) == subject and not str(message["Subject"]).startswith(" ")


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_supervisors_alert_names_the_zone_and_the_waiting_reasons_in_its_language(language):
    facts = dict(ALL_KINDS_FACTS[NoticeKind.RELEASE_DEADLINE_ALERT])
    facts["waiting_reasons"] = [
        {"code": "LANE_YELLOW", "path": "$", "message": "risk lane yellow: documentary control by an official"},
        {
            "code": "PAYMENT_NOT_PAID",
            "path": "$.payments[1].paid",
            "message": "payment 5010 of 1250.00 KZT is not paid",
            "params": {"payment": "5010", "amount": "1250.00", "currency": "KZT"},
        },
    ]
    message, _ = rendered(NoticeKind.RELEASE_DEADLINE_ALERT, language, facts)
    text, markup = bodies(message)
    expected = {
        "kk": ("«Алматы-Терминал» уақытша сақтау қоймасы", "Сары дәліз", "1250.00 KZT сомасындағы 5010 төлемі төленбеген"),
        "ru": ("СВХ «Алматы-Терминал»", "Жёлтый коридор", "Платёж 5010 на сумму 1250.00 KZT не уплачен"),
        "en": ('Temporary storage warehouse "Almaty-Terminal"', "Risk lane yellow", "Payment 5010 of 1250.00 KZT is not paid"),
    }[language]
    for body in (text, markup):
        assert "ALA-TSW" in body and all(piece in body for piece in expected), body
        if language != "en":
            assert "is not paid" not in body and "documentary control" not in body


# --- Bidirectional controls (issue 25, part 6) -------------------------------------------------------------

SPOOF = "Холодильники \u202egnp.exe\u202c \u2067ТОО\u2069\u200f \u200e\u061c\u202a\u202b\u202d\u2066\u2068"


def with_controls(value):
    """``value`` with SPOOF appended to every string in it (the facts' texts, a reason's message, a ground's title)."""
    if isinstance(value, str):
        return f"{value} {SPOOF}"
    if isinstance(value, list):
        return [with_controls(v) for v in value]
    if isinstance(value, dict):
        return {k: v if k in ("code", "path", "stage") or "_at" in k else with_controls(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_bidirectional_control_anywhere_is_shown_escaped_in_every_letter(language):
    """U+202E in a declarant's name reached the letters raw: "Холодильники \u202egnp.exe\u202c" read as
    "Холодильники exe.png". In every kind of letter, subject, text and HTML, no bidirectional control is left
    (whichever value carried it: the declarant's name, the facts of the notice) and the escapes read in order."""
    document = with_language(unique(sample()), language)
    document["declarant"]["name"] = f"ТОО {SPOOF}"
    declaration = DeclarationFacts(
        application_id="01JD8ZQ7X3M5V9K2N4P6R8T0WY",
        channel="electronic",
        submitted_at=datetime(2026, 11, 26, 4, 0, tzinfo=UTC),
        sha256="ab" * 32,
        customs_office="50101",
        registration_number="50101/261126/0000042",
        content=as_bytes(document),
    )
    reference = load_reference(REFERENCE_DIR)
    escaped = "Холодильники [U+202E]gnp.exe[U+202C] [U+2067]ТОО[U+2069][U+200F] [U+200E][U+061C]"
    for kind, facts in ALL_KINDS_FACTS.items():
        notice = Notice(
            id=7,
            uid="0f6c1c1e2d3b4a59",
            application_id=declaration.application_id,
            kind=kind,
            dedup_key=f"test:{kind}",
            recipient=ADDRESS,
            language=language,
            facts={"event_at": "2026-11-26T05:00:00+00:00", **with_controls(facts)},
            created_at=datetime(2026, 11, 26, 5, 0, tzinfo=UTC),
        )
        built = build_message(notice, declaration, reference, sender="noreply@customs.kgd.gov.kz", domain="customs.kgd.gov.kz")
        message = email.message_from_bytes(built.as_bytes(), policy=policy.default)
        text, markup = bodies(message)
        for where, shown in (("subject", str(message["Subject"])), ("text", text), ("html", markup)):
            assert not set(shown) & BIDI_CONTROLS, (kind, where)
        if "Холодильники" in text:  # the kinds that name the declarant (or show the facts given)
            assert escaped in text and escaped in markup, kind
    assert notice_context(notice, declaration, reference)["declarant_name"] == f"ТОО {SPOOF}"  # the data as stored


# --- What to do next, in every letter (issue 31) ------------------------------------------------------------

NEXT_HEAD = {"kk": "Келесі қадам:", "ru": "Дальнейшие действия:", "en": "Next step:"}
# One sentence (or more) each kind's last paragraph must say, per language
NEXT_STEP = {
    "ru": {
        "acceptance": ["в течение 2 часов с момента подачи"],
        "registration": ["не позднее 4 часов с момента регистрации декларации — до "],
        "awaiting_official": [
            "принимает должностное лицо таможенного органа (ДГД по г. Алматы",
            "не позднее 4 часов с момента регистрации декларации — до ",
            "Уплатите платёж 5010 (НДС), 2178234.24 KZT",
            "выпуск товаров ожидает этой уплаты",
        ],
        "registration_refusal": ["Исправьте декларацию по каждой из указанных причин и подайте её повторно"],
        "signature_refusal": ["подпишите тот же файл декларации (без изменений) действующим сертификатом и подайте его снова"],
        "release": [
            "Отметку о выпуске товаров проставит должностное лицо органа государственных доходов в зоне таможенного "
            "контроля СВХ «Алматы-Терминал»",
            "Копию декларации на бумажном носителе можно запросить в таможенном органе",
            "копия готова в течение 30 минут",
            "/print-requests",
        ],
        "release_refusal": ["подать новую декларацию на товары либо обжаловать решение"],
        "failure_reported": ["Повторно подавать декларацию на товары и документы не требуется"],
    },
    "kk": {
        "acceptance": ["берілген сәттен бастап 2 сағат ішінде"],
        "registration": ["декларация тіркелген сәттен бастап 4 сағаттан кешіктірілмей ("],
        "awaiting_official": [
            "лауазымды адамы декларация тіркелген сәттен бастап 4 сағаттан кешіктірілмей (",
            "5010 төлемі (ҚҚС), 2178234.24 KZT төлеңіз",
            "тауарларды шығару осы төлемді күтеді",
        ],
        "registration_refusal": ["Декларацияны көрсетілген әрбір себеп бойынша түзетіп, қайта беріңіз"],
        "signature_refusal": ["сол декларация файлына (өзгеріссіз) жарамды сертификатпен қол қойып, оны қайта беріңіз"],
        "release": [
            "Тауарларды шығару туралы белгіні тауарлар орналасқан кедендік бақылау аймағында",
            "30 минут ішінде дайын болады",
        ],
        "release_refusal": ["жаңа тауарларға арналған декларация бере аласыз немесе шешімге"],
        "failure_reported": ["Тауарларға арналған декларацияны және құжаттарды қайта берудің қажеті жоқ"],
    },
    "en": {
        "acceptance": ["within 2 hours of its submission"],
        "registration": ["within 4 hours of the registration of the declaration, by "],
        "awaiting_official": [
            "An official of the customs office (State Revenue Department of Almaty",
            "within 4 hours of the registration of the declaration, by ",
            "Pay payment 5010 (VAT), 2178234.24 KZT",
            "the release of the goods waits for this payment",
        ],
        "registration_refusal": ["Correct the declaration for every reason listed and submit it again"],
        "signature_refusal": ["sign the same declaration file (unchanged) with a valid certificate and submit it again"],
        "release": [
            "The release mark will be affixed by an official of the state revenue authority in the zone of customs control "
            'Temporary storage warehouse "Almaty-Terminal"',
            "ask the customs office",
            "the copy is ready within 30 minutes of the request",
        ],
        "release_refusal": ["submit a new goods declaration, or appeal against the decision"],
        "failure_reported": ["You do not need to submit the goods declaration or its documents again"],
    },
}
STEP_NAMES = {
    "kk": "Өңдеу кезеңі: декларацияны өңдеу",
    "ru": "Этап обработки: обработка декларации",
    "en": "Processing step: processing of the declaration",
}


def assert_next_step(message, language: str, kind: str) -> None:
    text, markup = bodies(message)
    assert_reads_as_a_person(text, markup)
    for body in (text, markup):
        assert NEXT_HEAD[language] in body, (kind, body)
        for sentence in NEXT_STEP[language][kind]:
            assert sentence in body, (kind, sentence, body)


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_letter_says_what_to_do_next_in_its_language(settings, company_signer, person_signer, officials, language):
    """Issue 31: the unpaid-VAT declarant's only letter said "being checked"; the release letter gave no next step. Every
    letter to the declarant now ends with what happens next and what to do, and the unpaid VAT one names the payment."""
    released = submit_signed(company_signer, with_language(unique(sample()), language)).application_id
    assert run_steps(released).status == Status.RELEASED
    unpaid = submit_signed(company_signer, with_language(unique(sample("03-unpaid-vat.json")), language)).application_id
    assert run_steps(unpaid).status == Status.AWAITING_OFFICIAL
    broken = with_language(unique(sample()), language)
    broken["totals"]["items"] = 9
    refused = submit_signed(company_signer, broken).application_id
    signed_by_another = submit_signed(person_signer, with_language(unique(sample()), language)).application_id
    for application_id in (refused, signed_by_another):
        assert run_steps(application_id).status == Status.REGISTRATION_REFUSED
    sent = {(kind_of(m), m["X-Customs-Application-Id"]): m for m in letters(settings)}
    assert_next_step(sent["acceptance", released], language, "acceptance")
    assert_next_step(sent["registration", released], language, "registration")
    assert_next_step(sent["release", released], language, "release")
    # the unpaid VAT: told at registration and again when the declaration waits for the official
    assert_next_step(sent["awaiting_official", unpaid], language, "awaiting_official")
    registration = sent["registration", unpaid]
    assert_next_step(registration, language, "registration")
    for sentence in NEXT_STEP[language]["awaiting_official"][-2:]:
        assert sentence in bodies(registration)[0] and sentence in bodies(registration)[1]
    assert_next_step(sent["registration_refusal", refused], language, "registration_refusal")
    assert_next_step(sent["registration_refusal", signed_by_another], language, "signature_refusal")
    assert NEXT_STEP[language]["signature_refusal"][0] not in bodies(sent["registration_refusal", refused])[0]
    assert ("awaiting_official", released) not in sent  # released at once: nothing waits
    decide(unpaid, act=officials.decision(unpaid, "refuse", INSPECTOR, grounds=["PAYMENTS_NOT_MADE"]))
    sent = {(kind_of(m), m["X-Customs-Application-Id"]): m for m in letters(settings)}
    assert_next_step(sent["release_refusal", unpaid], language, "release_refusal")


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_failure_letter_names_the_step_in_words(language):
    """The failure letter said "Processing step: clearance_run" (a run that ended without naming its step)."""
    for step, words in (("clearance_run", STEP_NAMES[language]), ("registration", None)):
        message, _ = rendered(NoticeKind.FAILURE_REPORTED, language, {"report_id": "SR261126-0A1B2C3D", "failed_step": step})
        text, markup = bodies(message)
        if words:
            assert words in text
        assert_next_step(message, language, "failure_reported")
