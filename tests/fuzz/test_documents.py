"""Hypothesis against the document parser: intake's read_document, then format and logic control as
registration does them (parse_declaration, logical_control, format_logical_control). No database.

Every generated document is either accepted or refused with a reason (a stable code, a JSON path, a one-line
message); no other exception. What intake accepts, registration reads the same way, and it can be stored
(UTF-8 text without NUL, finite numbers)."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from customs.core.reference import load_reference
from customs.core.settings import Settings
from customs.rules import Refused
from customs.rules.registration import decode_document, format_logical_control, logical_control
from customs.services.intake import MAX_DEPTH, read_document
from models.document import parse_declaration, written_declarant
from models.outbox import addressee_of
from models.reasons import MAX_MESSAGE, MAX_PATH, Reason
from tests.fuzz.strategies import document_bytes, dumps, mutated_documents
from tests.fuzz.support import fuzz_settings, outcome, tally

pytestmark = pytest.mark.fuzz

SETTINGS = Settings(data_dir="data")  # read_document needs only its limits; nothing is written
REFERENCE = load_reference(SETTINGS.reference_dir)

INTAKE_CODES = {
    "EMPTY",
    "TOO_LARGE",
    "NOT_UTF8",
    "JSON_INVALID",
    "OBJECT_EXPECTED",
    "DUPLICATE_KEY",
    "TOO_DEEP",
    "NUMBER_TOO_LARGE",
    "NUMBER_NOT_FINITE",
    "CHARACTER_NOT_ALLOWED",
}
CODE = re.compile(r"^[A-Z][A-Z0-9_]*$")


def check_reason(reason: Reason, *, in_document: bool = True) -> None:
    """A stable code, a path (a JSON path into the document, or else the parameter), one line of message."""
    assert CODE.match(reason.code), reason
    assert reason.path and len(reason.path) <= MAX_PATH, reason
    assert reason.path.startswith("$") or not in_document, reason
    assert reason.message and len(reason.message) <= MAX_MESSAGE, reason
    assert "\n" not in reason.message and "\r" not in reason.message, reason
    json.dumps(reason.model_dump(), ensure_ascii=False).encode("utf-8")  # storable as it is


def depth(value) -> int:
    """Levels of objects and arrays (the root object is level 1), as intake counts them."""
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


def strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, child in value.items():
            yield key
            yield from strings(child)
    elif isinstance(value, list):
        for child in value:
            yield from strings(child)


def read_or_refuse(content: bytes, group: str) -> dict | None:
    """read_document's answer: the object, or None after checking the refusal is one of intake's reasons."""
    try:
        data = read_document(content, SETTINGS)
    except Refused as refused:
        assert refused.code in INTAKE_CODES, refused
        assert refused.kind in ("invalid", "too_large"), refused
        check_reason(refused.reason)
        outcome(group, refused.code)
        return None
    assert isinstance(data, dict)
    assert depth(data) <= MAX_DEPTH
    for text in strings(data):
        assert "\x00" not in text, f"a NUL in {text!r}: PostgreSQL text cannot hold it"
        text.encode("utf-8")  # no lone surrogate: UTF-8 (and so the database) cannot hold one
    json.dumps(data, allow_nan=False)  # finite numbers only
    decoded, reasons = decode_document(content)  # registration reads the stored bytes with the plain decoder
    assert reasons == [] and decoded == data
    return data


def control(content: bytes, data: dict, group: str) -> None:
    """Format and logic control as registration does it: a document, or every reason; never an exception."""
    written_declarant(data)
    addressee_of(content)
    document, reasons = parse_declaration(data)
    for reason in reasons:
        check_reason(reason)
    if document is None:
        assert reasons
        outcome(group, f"format: {reasons[0].code}")
    else:
        logic = logical_control(document, REFERENCE)
        for reason in logic:
            check_reason(reason)
        outcome(group, f"logic: {logic[0].code}" if logic else "valid")
    again, every = format_logical_control(content, REFERENCE)
    assert (again is None) == (document is None)


@fuzz_settings(4000)
@given(content=document_bytes())
def test_read_document_accepts_an_object_or_refuses_with_a_reason(content):
    tally("hypothesis: read_document (bytes: mutated, re-encoded, damaged)")
    data = read_or_refuse(content, "hypothesis: read_document (bytes: mutated, re-encoded, damaged)")
    if data is not None:
        outcome("hypothesis: read_document (bytes: mutated, re-encoded, damaged)", "accepted")


@fuzz_settings(3000)
@given(document=mutated_documents(), ensure_ascii=st.booleans())
def test_format_and_logic_control_of_what_intake_accepts(document, ensure_ascii):
    group = "hypothesis: read_document + format/logic control (UTF-8)"
    tally(group)
    content = dumps(document, ensure_ascii=ensure_ascii, indent=None).encode("utf-8", "surrogatepass")
    data = read_or_refuse(content, group)
    if data is not None:
        control(content, data, group)
