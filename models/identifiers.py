"""IIN and BIN: 12 digits with a check digit (rules of the Kazakhstan identifiers register)."""

from __future__ import annotations

from models.reasons import Detail

_FIRST_WEIGHTS = tuple(range(1, 12))
_SECOND_WEIGHTS = (3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2)


def check_digit(first_eleven: str) -> int | None:
    """The check digit for 11 digits, or ``None`` when the number cannot have one (10 twice)."""
    digits = [int(c) for c in first_eleven]
    value = sum(d * w for d, w in zip(digits, _FIRST_WEIGHTS, strict=False)) % 11
    if value == 10:
        value = sum(d * w for d, w in zip(digits, _SECOND_WEIGHTS, strict=False)) % 11
        if value == 10:
            return None
    return value


def identifier_problem(value: str) -> Detail | None:
    """Why ``value`` is not a valid IIN/BIN, or ``None`` when it is valid (with its ``variant`` for translations)."""
    if len(value) != 12 or not value.isascii() or not value.isdigit():
        return Detail("must be exactly 12 digits", variant="digits")
    expected = check_digit(value[:11])
    if expected is None:
        return Detail(
            "is not a valid number: its check digit cannot be computed (the sum is 10 with both weight sets)",
            variant="no_check_digit",
        )
    if expected != int(value[11]):
        return Detail(
            f"has a wrong check digit: {value[11]} given, {expected} expected",
            variant="check_digit",
            given=value[11],
            expected=expected,
        )
    return None


def is_valid_identifier(value: str) -> bool:
    return identifier_problem(value) is None


def with_check_digit(first_eleven: str) -> str:
    """Completes 11 digits into a valid IIN/BIN (test and demo data)."""
    digit = check_digit(first_eleven)
    if digit is None:
        raise ValueError(f"{first_eleven} cannot be completed into a valid IIN/BIN")
    return first_eleven + str(digit)
