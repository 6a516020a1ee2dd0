"""The customs rules as plain functions: no database, no Prefect."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from customs.core.clock import kz_date
from customs.core.reference import ReferenceDataError, load_reference
from customs.rules.registration import format_logical_control, logical_control, registration_number
from customs.rules.release import decide_release
from customs.rules.risk import assess_risk
from models.document import declaration_json_schema, parse_declaration
from models.identifiers import check_digit, identifier_problem, with_check_digit
from models.reference import RiskConditions, RiskProfile
from tests.helpers import ROOT, as_bytes, sample

REFERENCE = load_reference(ROOT / "reference")


def codes(reasons) -> list[tuple[str, str]]:
    return [(r.code, r.path) for r in reasons]


# --- IIN / BIN -------------------------------------------------------------------------------


def test_check_digit_first_weights():
    # 8,8,0,5,0,1,3,0,0,1,2 weighted 1..11 = 92; 92 mod 11 = 4
    assert check_digit("88050130012") == 4
    assert identifier_problem("880501300124") is None


def test_check_digit_falls_back_to_second_weights():
    # 1,0,0,0,0,0,0,0,0,2,0: weights 1..11 give 1 + 20 = 21 = 10 mod 11; weights 3..11,1,2 give 3 + 2 = 5
    assert check_digit("10000000020") == 5
    assert identifier_problem("100000000205") is None
    assert "5 expected" in identifier_problem("100000000200")


def test_number_with_ten_twice_is_invalid():
    prefix = next(
        f"{n:011d}"
        for n in range(10**10, 10**10 + 200_000)
        if sum(int(c) * w for c, w in zip(f"{n:011d}", range(1, 12), strict=True)) % 11 == 10
        and sum(int(c) * w for c, w in zip(f"{n:011d}", (3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2), strict=True)) % 11 == 10
    )
    assert check_digit(prefix) is None
    assert "cannot be computed" in identifier_problem(prefix + "0")
    with pytest.raises(ValueError):
        with_check_digit(prefix)


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("880501300125", "wrong check digit: 5 given, 4 expected"),
        ("88050130012", "12 digits"),
        ("88050130012a", "12 digits"),
        ("８８０５０１３００１２４", "12 digits"),
    ],
)
def test_bad_identifiers(value, fragment):
    assert fragment in identifier_problem(value)


# --- The document: field-level rules, every failure reported ------------------------------------


def test_sample_declaration_is_valid():
    doc, reasons = parse_declaration(sample())
    assert reasons == []
    assert doc.totals.customs_value == Decimal("12965680.00")
    assert logical_control(doc, REFERENCE) == []


def test_wrong_schema_id():
    data = sample()
    data["schema"] = "kz.customs/goods-declaration@2"
    _, reasons = parse_declaration(data)
    assert codes(reasons) == [("SCHEMA_UNKNOWN", "$.schema")]
    assert "goods-declaration@2" in reasons[0].message


def test_missing_required_fields_all_listed():
    data = sample()
    del data["customs_office"]
    del data["goods"][1]["hs_code"]
    del data["declarant"]["email"]
    _, reasons = parse_declaration(data)
    assert set(codes(reasons)) == {
        ("FIELD_MISSING", "$.customs_office"),
        ("FIELD_MISSING", "$.goods[1].hs_code"),
        ("FIELD_MISSING", "$.declarant.email"),
    }


def test_wrong_check_digit_of_declarant_bin():
    data = sample()
    data["declarant"]["bin"] = "050840001234"
    _, reasons = parse_declaration(data)
    assert codes(reasons) == [("IIN_BIN_INVALID", "$.declarant.bin")]
    assert "4 given, 3 expected" in reasons[0].message


def test_declarant_without_iin_or_bin():
    data = sample()
    del data["declarant"]["bin"]
    _, reasons = parse_declaration(data)
    assert codes(reasons) == [("DECLARANT_ID_MISSING", "$.declarant")]


@pytest.mark.parametrize("hs_code", ["84501111", "845011110A", "84501111000", ""])
def test_bad_hs_code(hs_code):
    data = sample()
    data["goods"][0]["hs_code"] = hs_code
    _, reasons = parse_declaration(data)
    assert ("HS_CODE_INVALID", "$.goods[0].hs_code") in codes(reasons)


def test_float_amounts_are_refused_with_their_paths():
    data = sample()
    data["goods"][0]["gross_kg"] = 1450.0
    data["exchange_rate"] = 545.2
    data["payments"][0]["amount"] = 20000
    _, reasons = parse_declaration(data)
    assert set(codes(reasons)) == {
        ("AMOUNT_NOT_STRING", "$.goods[0].gross_kg"),
        ("AMOUNT_NOT_STRING", "$.exchange_rate"),
        ("AMOUNT_NOT_STRING", "$.payments[0].amount"),
    }
    assert "1450.0" in next(r.message for r in reasons if r.path == "$.goods[0].gross_kg")


def test_negative_and_zero_values():
    data = sample()
    data["goods"][0]["quantity"] = "-5"
    data["goods"][1]["customs_value"] = "0"
    data["payments"][1]["amount"] = "-1.00"
    _, reasons = parse_declaration(data)
    assert set(codes(reasons)) == {
        ("VALUE_NOT_POSITIVE", "$.goods[0].quantity"),
        ("VALUE_NOT_POSITIVE", "$.goods[1].customs_value"),
        ("VALUE_NEGATIVE", "$.payments[1].amount"),
    }


def test_bad_country_currency_and_unknown_field():
    data = sample()
    data["goods"][0]["origin_country"] = "XX"
    data["currency"] = "EUX"
    data["goods"][0]["hs_cod"] = "8450111100"
    _, reasons = parse_declaration(data)
    assert set(codes(reasons)) == {
        ("COUNTRY_CODE_INVALID", "$.goods[0].origin_country"),
        ("CURRENCY_CODE_INVALID", "$.currency"),
        ("FIELD_UNKNOWN", "$.goods[0].hs_cod"),
    }


@pytest.mark.parametrize("amount", ["1 320,000", "1320.000\n", " 1320", "1e3", "NaN"])
def test_amount_that_is_not_a_plain_decimal(amount):
    data = sample()
    data["goods"][0]["net_kg"] = amount
    _, reasons = parse_declaration(data)
    assert codes(reasons) == [("AMOUNT_INVALID", "$.goods[0].net_kg")]


# --- Logic control (across fields) ---------------------------------------------------------


def test_unknown_office_totals_and_net_over_gross_all_listed():
    data = sample()
    data["customs_office"] = "99999"
    data["goods"][1]["net_kg"] = "1000.000"
    data["totals"]["items"] = 3
    data["totals"]["customs_value"] = "1.00"
    doc, reasons = parse_declaration(data)
    assert reasons == []
    assert codes(logical_control(doc, REFERENCE)) == [
        ("OFFICE_UNKNOWN", "$.customs_office"),
        ("NET_EXCEEDS_GROSS", "$.goods[1].net_kg"),
        ("TOTALS_MISMATCH", "$.totals.items"),
        ("TOTALS_MISMATCH", "$.totals.customs_value"),
    ]


def test_item_numbering():
    data = sample()
    data["goods"][1]["item_no"] = 5
    doc, _ = parse_declaration(data)
    assert codes(logical_control(doc, REFERENCE)) == [("ITEM_NUMBERING", "$.goods[1].item_no")]


def test_format_and_logic_failures_are_reported_in_one_pass():
    """Issue 17, item 10: a bad HS code and a bad country no longer hide net above gross and wrong totals (the
    declarant used to hear of these only after fixing the first two)."""
    data = sample()
    data["goods"][0]["hs_code"] = "85165"
    data["goods"][0]["origin_country"] = "XX"
    data["goods"][1]["net_kg"] = "1000.000"
    data["totals"]["customs_value"] = "1.00"
    doc, reasons = format_logical_control(as_bytes(data), REFERENCE)
    assert doc is None
    assert sorted(codes(reasons)) == sorted(
        [
            ("HS_CODE_INVALID", "$.goods[0].hs_code"),
            ("COUNTRY_CODE_INVALID", "$.goods[0].origin_country"),
            ("NET_EXCEEDS_GROSS", "$.goods[1].net_kg"),
            ("TOTALS_MISMATCH", "$.totals.customs_value"),
        ]
    )
    assert [r.code for r in reasons[-2:]] == ["NET_EXCEEDS_GROSS", "TOTALS_MISMATCH"]  # format first, then logic


def test_every_logic_check_with_valid_fields_runs_beside_format_failures():
    data = sample()
    data["sender"]["country"] = "XX"
    data["customs_office"] = "99999"
    data["goods"][1]["item_no"] = 7
    data["totals"]["items"] = 3
    _, reasons = format_logical_control(as_bytes(data), REFERENCE)
    assert codes(reasons) == [
        ("COUNTRY_CODE_INVALID", "$.sender.country"),
        ("OFFICE_UNKNOWN", "$.customs_office"),
        ("ITEM_NUMBERING", "$.goods[1].item_no"),
        ("TOTALS_MISMATCH", "$.totals.items"),
    ]
    zone = sample()
    zone["goods"][0]["hs_code"] = "1"
    zone["goods_location"] = {"zone": "NUR-AIR"}
    _, reasons = format_logical_control(as_bytes(zone), REFERENCE)
    assert codes(reasons) == [("HS_CODE_INVALID", "$.goods[0].hs_code"), ("ZONE_UNKNOWN", "$.goods_location.zone")]


def test_a_logic_check_with_an_invalid_field_is_not_run():
    """Its field is refused by format control; the check would compare with a value that is not one."""
    data = sample()
    data["goods"][0]["net_kg"] = 1000  # a number: AMOUNT_NOT_STRING, so net against gross is not compared
    data["goods"][1]["net_kg"] = "1000.000"  # above gross, and valid: compared
    data["goods"][1]["customs_value"] = "-5"  # invalid: the items' sum is unknown, box 12 is not compared
    data["totals"]["customs_value"] = "1.00"
    data["customs_office"] = "5010"  # invalid: neither the office nor the zone is looked up
    data["goods_location"] = {"zone": "NUR-AIR"}
    _, reasons = format_logical_control(as_bytes(data), REFERENCE)
    assert sorted(codes(reasons)) == sorted(
        [
            ("AMOUNT_NOT_STRING", "$.goods[0].net_kg"),
            ("VALUE_NOT_POSITIVE", "$.goods[1].customs_value"),
            ("OFFICE_CODE_INVALID", "$.customs_office"),
            ("NET_EXCEEDS_GROSS", "$.goods[1].net_kg"),
        ]
    )


def test_no_logic_check_on_a_document_of_an_unknown_schema():
    data = sample()
    data["schema"] = "kz.customs/goods-declaration@9"
    data["goods"][1]["net_kg"] = "1000.000"
    _, reasons = format_logical_control(as_bytes(data), REFERENCE)
    assert codes(reasons) == [("SCHEMA_UNKNOWN", "$.schema")]


@pytest.mark.parametrize(
    "content, code", [(b"{not json", "JSON_INVALID"), (b"[1, 2]", "OBJECT_EXPECTED"), (b"\xff\xfe{}", "JSON_INVALID")]
)
def test_format_control_of_raw_bytes(content, code):
    doc, reasons = format_logical_control(content, REFERENCE)
    assert doc is None and reasons[0].code == code


# --- Registration number --------------------------------------------------------------------


def test_registration_number_format():
    assert registration_number("50101", date(2026, 11, 26), 1) == "50101/261126/0000001"
    assert registration_number("50101", date(2024, 3, 31), 1234567) == "50101/310324/1234567"
    with pytest.raises(ValueError):
        registration_number("50101", date(2026, 1, 1), 10_000_000)


def test_registration_day_is_kazakhstan_day():
    # 19:30 UTC on 26 Nov is 00:30 on 27 Nov in Kazakhstan (UTC+5)
    assert kz_date(datetime(2026, 11, 26, 19, 30, tzinfo=UTC)) == date(2026, 11, 27)
    assert kz_date(datetime(2026, 11, 26, 18, 59, tzinfo=UTC)) == date(2026, 11, 26)
    # before 1 March 2024 Almaty was UTC+6
    assert kz_date(datetime(2024, 2, 1, 18, 30, tzinfo=UTC)) == date(2024, 2, 2)


# --- Risk and release -----------------------------------------------------------------------


def test_green_when_no_profile_matches():
    doc, _ = parse_declaration(sample())
    assert assess_risk(doc, REFERENCE.risk_profiles).lane == "green"


def test_yellow_profile_on_cheap_laptops_from_china():
    doc, _ = parse_declaration(sample("02-yellow-laptops-from-cn.json"))
    result = assess_risk(doc, REFERENCE.risk_profiles)
    assert (result.lane, result.matched_profiles) == ("yellow", ("RP-2024-017",))


def test_most_severe_lane_wins():
    profiles = (
        RiskProfile(id="Y", lane="yellow", conditions=RiskConditions(origin_countries=["DE"])),
        RiskProfile(id="R", lane="red", conditions=RiskConditions(hs_prefixes=["8418"])),
        RiskProfile(id="N", lane="red", conditions=RiskConditions(hs_prefixes=["2204"])),
    )
    doc, _ = parse_declaration(sample())
    result = assess_risk(doc, profiles)
    assert (result.lane, result.matched_profiles) == ("red", ("Y", "R"))


def test_declarant_and_total_value_conditions():
    doc, _ = parse_declaration(sample())
    by_declarant = RiskProfile(id="D", lane="red", conditions=RiskConditions(declarant_ids=["050840001233"]))
    by_value = RiskProfile(id="V", lane="yellow", conditions=RiskConditions(min_total_customs_value=Decimal("20000000")))
    assert assess_risk(doc, (by_declarant, by_value)).matched_profiles == ("D",)


def test_automatic_release_only_when_green_and_paid():
    doc, _ = parse_declaration(sample())
    decision = decide_release(doc, "green")
    assert (decision.automatic, decision.decision_code) == (True, "10")
    held = decide_release(doc, "yellow")
    assert not held.automatic and [r.code for r in held.reasons] == ["LANE_YELLOW"]
    unpaid, _ = parse_declaration(sample("03-unpaid-vat.json"))
    decision = decide_release(unpaid, "green")
    assert not decision.automatic and codes(decision.reasons) == [("PAYMENT_NOT_PAID", "$.payments[2].paid")]


# --- Schema and reference data --------------------------------------------------------------


def test_json_schema_is_generated_from_the_models():
    schema = declaration_json_schema()
    assert schema["properties"]["schema"]["enum"] == ["kz.customs/goods-declaration@1", "kz.customs/release-statement@1"]
    assert set(schema["required"]) >= {"schema", "direction", "procedure", "customs_office", "declarant", "goods", "totals"}
    goods_item = schema["$defs"]["GoodsItem"]
    assert goods_item["properties"]["gross_kg"]["type"] == "string"
    assert goods_item["additionalProperties"] is False


def test_bad_reference_data_is_named(tmp_path):
    (tmp_path / "offices.json").write_text('{"offices": [{"code": "5010", "name": "x", "zones": []}]}')
    (tmp_path / "risk_profiles.json").write_text('{"profiles": []}')
    with pytest.raises(ReferenceDataError) as error:
        load_reference(tmp_path)
    assert "offices.json" in str(error.value) and "offices.0.code" in str(error.value)


@pytest.mark.parametrize(
    "value,expected",
    [
        ("broker@alatau-import.kz", "broker@alatau-import.kz"),
        (" broker@alatau-import.kz ", "broker@alatau-import.kz"),
        ("broker@@alatau", None),
        ("broker@localhost", None),
        ("a@b.kz\r\nBcc: victim@x.kz", None),
        ("", None),
        (None, None),
        (42, None),
        ("Алатау <broker@alatau-import.kz>", None),
    ],
)
def test_usable_address(value, expected):
    from models.outbox import usable_address

    assert usable_address(value) == expected


# --- Runs that dangle ---------------------------------------------------------------------------


def _run(
    state_type: str,
    *,
    age_minutes: int = 20,
    run_count: int = 1,
    state_name: str = "",
    application_id: str | None = "A1",
    heartbeat_minutes: float | None = None,
    heartbeats_checked: bool = False,
):
    from datetime import timedelta

    from customs.rules.reconcile import RunView

    return RunView(
        "r1",
        "A1",
        state_type,
        state_name or state_type.title(),
        timedelta(minutes=age_minutes),
        run_count,
        application_id,
        heartbeat_age=None if heartbeat_minutes is None else timedelta(minutes=heartbeat_minutes),
        heartbeats_checked=heartbeats_checked,
    )


@pytest.mark.parametrize(
    "run,status,expected",
    [
        (_run("CRASHED"), "registered", "rerun"),  # its worker died mid-way: run it again
        (_run("CRASHED", age_minutes=0), "submitted", "rerun"),  # at once: a crash is final
        (_run("CRASHED", run_count=3), "lane_assigned", "report"),  # crashed three times: a person looks
        (_run("CRASHED"), "released", "rerun"),  # crashed after the release: it finishes its notices
        (_run("CRASHED", run_count=3), "released", None),  # settled; its crashes stay in its history
        (_run("RUNNING"), "released", "close"),  # dangling after the declaration was final
        (_run("PAUSED", state_name="Suspended"), "release_refused", "close"),  # decided through the API while it waited
        (_run("PENDING"), "registration_refused", "close"),
        (_run("RUNNING", age_minutes=5), "released", None),  # not yet: it may be sending its notices
        (_run("PAUSED", state_name="Suspended"), "awaiting_official", None),  # waiting, as it should
        (_run("RUNNING"), "registered", None),  # running: its heartbeats say whether its worker lives
        (_run("RUNNING", application_id="A-GONE"), None, "report"),  # a run for no stored declaration
        # heartbeats looked at (timeout 2 minutes):
        (_run("RUNNING", heartbeats_checked=True), "registered", "crash"),  # none lately: its worker died
        (_run("PENDING", heartbeats_checked=True), "submitted", "crash"),  # killed before its first heartbeat
        (_run("RUNNING", heartbeat_minutes=5, heartbeats_checked=True), "registered", "crash"),  # the last one is old
        (_run("RUNNING", heartbeat_minutes=0.5, heartbeats_checked=True), "registered", None),  # alive
        (_run("RUNNING", age_minutes=1, heartbeats_checked=True), "submitted", None),  # just claimed: give it time
        (_run("PAUSED", heartbeats_checked=True), "awaiting_official", None),  # a suspended run has no worker
        (_run("RUNNING", heartbeats_checked=True), "released", "close"),  # final: closed, not crashed
    ],
)
def test_reconcile_rules(run, status, expected):
    from datetime import timedelta

    from customs.rules.reconcile import reconcile_action

    decision = reconcile_action(run, status, max_attempts=3, after=timedelta(minutes=10), heartbeat_timeout=timedelta(minutes=2))
    assert (decision.action if decision else None) == expected
    if decision:
        assert decision.why


def test_a_run_failed_on_the_database_is_rerun_until_its_attempts_run_out():
    """Issue 18: runs whose step failed because the database was away longer than the retries waited for
    it were left for batch-recheck (17.7 min); the reconciler re-runs them once the database is back."""
    from datetime import timedelta

    from customs.rules.reconcile import RERUN, RunView, reconcile_action

    def view(**kw):
        values = dict(
            flow_run_id="r",
            name="A1",
            state_type="FAILED",
            state_name="Failed",
            state_age=timedelta(seconds=5),
            run_count=1,
            application_id="A1",
            failed_on_database=True,
        )
        return RunView(**(values | kw))

    options = dict(max_attempts=3, after=timedelta(minutes=5))
    assert reconcile_action(view(), "signatures_checked", **options).action == RERUN
    assert reconcile_action(view(run_count=3), "signatures_checked", **options) is None  # left for batch-recheck
    assert reconcile_action(view(failed_on_database=False), "signatures_checked", **options) is None  # a real failure
    assert reconcile_action(view(), "released", **options) is None  # settled meanwhile


@pytest.mark.parametrize(
    "message,run_count,crashed,expected",
    [
        ("OperationalError: could not connect to server", 1, False, True),  # the reconciler re-runs it: wait
        ("OperationalError: could not connect to server", 3, False, False),  # its last attempt: tell at once
        ("RuntimeError: risk profile service unavailable", 1, False, False),  # not healed by a re-run: tell
        ("worker process exited with SIGKILL", 1, True, True),  # crashed: re-run by the reconciler
        ("worker process exited with SIGKILL", 3, True, False),  # crashed on its last attempt: a person looks
    ],
)
def test_whether_the_declarant_waits_for_the_reconcilers_chance(message, run_count, crashed, expected):
    from customs.rules.reconcile import healed_by_reconciler

    assert healed_by_reconciler(message, run_count, max_attempts=3, crashed=crashed) is expected
