"""The declaration document, version 1: JSON modelled on the boxes of the EAEU goods declaration.

Field-level rules (identifier check digits, HS codes, country and currency codes, amounts written as
decimal strings, positive values) are validators with stable error codes, so pydantic reports all of
them in one pass. Rules across fields (totals, net against gross, known office) live in
``customs/rules/registration.py``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import cache, lru_cache
from typing import Annotated, Any, Literal

import pycountry
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from models.identifiers import identifier_problem, is_valid_identifier
from models.reasons import Reason, json_path

GOODS_DECLARATION = "kz.customs/goods-declaration@1"
RELEASE_STATEMENT = "kz.customs/release-statement@1"
SCHEMA_IDS = (GOODS_DECLARATION, RELEASE_STATEMENT)
MAX_GOODS_ITEMS = 999  # box 32 numbers them with three digits

_DECIMAL_RE = re.compile(r"^-?\d{1,18}(\.\d{1,6})?$")


def _decimal_from_string(value: Any) -> Decimal:
    if isinstance(value, (bool, int, float)):
        raise PydanticCustomError(
            "AMOUNT_NOT_STRING",
            'amounts are decimals written as JSON strings, e.g. "1250.00"; the number {value} was given',
            {"value": value},
        )
    if isinstance(value, Decimal):
        return value
    if not isinstance(value, str) or not _DECIMAL_RE.fullmatch(value):
        raise PydanticCustomError("AMOUNT_INVALID", "'{value}' is not a decimal amount such as \"1250.00\"", {"value": value})
    return Decimal(value)


def _positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise PydanticCustomError("VALUE_NOT_POSITIVE", "must be greater than zero, {value} given", {"value": str(value)})
    return value


def _not_negative(value: Decimal) -> Decimal:
    if value < 0:
        raise PydanticCustomError("VALUE_NEGATIVE", "must not be negative, {value} given", {"value": str(value)})
    return value


_DECIMAL_SCHEMA = {"type": "string", "pattern": _DECIMAL_RE.pattern, "description": "decimal number written as a string"}
Amount = Annotated[Decimal, BeforeValidator(_decimal_from_string), WithJsonSchema(_DECIMAL_SCHEMA)]
PositiveAmount = Annotated[Amount, AfterValidator(_positive)]
NonNegativeAmount = Annotated[Amount, AfterValidator(_not_negative)]


@lru_cache(maxsize=1)
def _countries() -> frozenset[str]:
    return frozenset(c.alpha_2 for c in pycountry.countries)


@lru_cache(maxsize=1)
def _currencies() -> frozenset[str]:
    return frozenset(c.alpha_3 for c in pycountry.currencies)


def _country(value: str) -> str:
    if value not in _countries():
        raise PydanticCustomError(
            "COUNTRY_CODE_INVALID", "'{value}' is not an ISO 3166-1 alpha-2 country code (e.g. KZ, CN, DE)", {"value": value}
        )
    return value


def _currency(value: str) -> str:
    if value not in _currencies():
        raise PydanticCustomError(
            "CURRENCY_CODE_INVALID", "'{value}' is not an ISO 4217 currency code (e.g. KZT, USD, EUR)", {"value": value}
        )
    return value


def _identifier(value: str) -> str:
    problem = identifier_problem(value)
    if problem:
        raise PydanticCustomError(
            "IIN_BIN_INVALID", "'{value}' {problem}", {"value": value, "problem": problem, **problem.params}
        )
    return value


def _pattern(code: str, regex: str, what: str):
    compiled = re.compile(regex)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise PydanticCustomError(code, "'{value}' is not " + what, {"value": value})
        return value

    return AfterValidator(check)


def _string_schema(pattern: str, description: str) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "pattern": f"^{pattern}$", "description": description})


CountryCode = Annotated[
    str,
    AfterValidator(_country),
    WithJsonSchema({"type": "string", "pattern": "^[A-Z]{2}$", "description": "ISO 3166-1 alpha-2"}),
]
CurrencyCode = Annotated[
    str, AfterValidator(_currency), WithJsonSchema({"type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217"})
]
Identifier = Annotated[
    str, AfterValidator(_identifier), _string_schema(r"\d{12}", "IIN or BIN: 12 digits with a valid check digit")
]
HsCode = Annotated[
    str,
    _pattern("HS_CODE_INVALID", r"\d{10}", "a 10-digit commodity code of the EAEU TN VED"),
    _string_schema(r"\d{10}", "HS code, 10 digits (box 33)"),
]
OfficeCode = Annotated[
    str,
    _pattern("OFFICE_CODE_INVALID", r"\d{5}", "a 5-digit customs office code"),
    _string_schema(r"\d{5}", "customs office code, 5 digits"),
]
ProcedureCode = Annotated[
    str,
    _pattern("PROCEDURE_CODE_INVALID", r"\d{2}", "a 2-digit customs procedure code (e.g. 40, 10)"),
    _string_schema(r"\d{2}", "customs procedure code (box 1/37)"),
]
UnitCode = Annotated[
    str,
    _pattern("UNIT_CODE_INVALID", r"\d{3}", "a 3-digit EAEU unit of measure code (e.g. 796 pieces, 166 kg)"),
    _string_schema(r"\d{3}", "EAEU unit of measure code"),
]
DocumentCode = Annotated[
    str,
    _pattern("DOCUMENT_CODE_INVALID", r"\d{5}", "a 5-digit EAEU document type code (e.g. 04021 invoice)"),
    _string_schema(r"\d{5}", "EAEU classifier of document types"),
]
PaymentCode = Annotated[
    str,
    _pattern("PAYMENT_CODE_INVALID", r"\d{4}", "a 4-digit payment type code (e.g. 1010 customs fee, 2010 import duty, 5010 VAT)"),
    _string_schema(r"\d{4}", "payment type code"),
]
Email = Annotated[
    str,
    _pattern("EMAIL_INVALID", r"[^@\s]+@[^@\s]+\.[^@\s]+", "an e-mail address"),
    WithJsonSchema({"type": "string", "format": "email"}),
]
Text = Annotated[str, Field(min_length=1, max_length=2000)]


class _Box(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Declarant(_Box):
    """Box 14. One of ``iin`` (individual) or ``bin`` (legal entity) is required."""

    iin: Identifier | None = None
    bin: Identifier | None = None
    name: Text
    address: Text
    email: Email
    phone: str | None = Field(None, max_length=40)
    language: Literal["kk", "ru", "en"] = Field("ru", description="Language of the documents sent to the declarant.")

    @model_validator(mode="after")
    def _one_identifier(self) -> Declarant:
        if self.iin is None and self.bin is None:
            raise PydanticCustomError("DECLARANT_ID_MISSING", "the declarant needs an IIN (individual) or a BIN (legal entity)")
        return self

    @property
    def identifiers(self) -> tuple[str, ...]:
        return tuple(x for x in (self.iin, self.bin) if x)


class Party(_Box):
    """Box 2 (sender) and box 8 (recipient)."""

    name: Text
    country: CountryCode
    address: Text
    iin: Identifier | None = None
    bin: Identifier | None = None


class GoodsItem(_Box):
    item_no: StrictInt = Field(ge=1, description="Item number, 1, 2, 3... in order (box 32).")
    hs_code: HsCode
    description: Text = Field(description="Box 31.")
    origin_country: CountryCode = Field(description="Box 34.")
    gross_kg: PositiveAmount = Field(description="Box 35.")
    net_kg: PositiveAmount = Field(description="Box 38.")
    quantity: PositiveAmount = Field(description="Box 41, in unit_code.")
    unit_code: UnitCode
    invoice_value: PositiveAmount = Field(description="Box 42, in the declaration currency.")
    customs_value: PositiveAmount = Field(description="Box 45, in KZT.")


class SupportingDocument(_Box):
    """Box 44."""

    code: DocumentCode
    number: Annotated[str, Field(min_length=1, max_length=100)]
    date: date


class Payment(_Box):
    """Box 47."""

    code: PaymentCode
    base: NonNegativeAmount
    rate: NonNegativeAmount
    amount: NonNegativeAmount
    currency: CurrencyCode
    paid: PaymentProof | None = Field(None, description="How it was paid; null while it is not paid.")


class PaymentProof(_Box):
    method: Annotated[str, Field(min_length=1, max_length=10)]
    document_number: Annotated[str, Field(min_length=1, max_length=100)]
    date: date


class Totals(_Box):
    items: StrictInt = Field(ge=1, description="Box 5: number of goods items.")
    packages: StrictInt = Field(ge=0, description="Box 6: number of packages.")
    customs_value: PositiveAmount = Field(description="Box 12: total customs value, the sum of box 45.")


class GoodsLocation(_Box):
    """Box 30: where the goods are, as the zone of customs control of the office (see reference/offices.json)."""

    zone: Annotated[str, Field(min_length=1, max_length=20)] = Field(description="Zone code, e.g. ALA-TSW.")
    address: Text | None = None


class GoodsDeclaration(_Box):
    """Electronic goods declaration or statement for release before the declaration (EAEU CC art. 120)."""

    schema_id: Literal["kz.customs/goods-declaration@1", "kz.customs/release-statement@1"] = Field(alias="schema")
    direction: Literal["IM", "EK"] = Field(description="Box 1: IM import, EK export.")
    procedure: ProcedureCode
    customs_office: OfficeCode
    declarant: Declarant
    sender: Party
    recipient: Party
    country_of_dispatch: CountryCode
    country_of_destination: CountryCode
    currency: CurrencyCode
    exchange_rate: PositiveAmount = Field(description="KZT per unit of currency.")
    goods: Annotated[list[GoodsItem], Field(min_length=1, max_length=MAX_GOODS_ITEMS)]
    documents: list[SupportingDocument] = Field(default_factory=list)
    payments: list[Payment] = Field(default_factory=list)
    totals: Totals
    goods_location: GoodsLocation | None = Field(None, description="Box 30; default: the first zone of the office.")

    @property
    def is_release_statement(self) -> bool:
        return self.schema_id == RELEASE_STATEMENT


Payment.model_rebuild()

_BUILTIN_CODES = {
    "missing": "FIELD_MISSING",
    "extra_forbidden": "FIELD_UNKNOWN",
    "literal_error": "VALUE_NOT_ALLOWED",
    "too_short": "TOO_SHORT",
    "too_long": "TOO_LONG",
    "string_too_short": "TOO_SHORT",
    "string_too_long": "TOO_LONG",
    "greater_than_equal": "VALUE_TOO_SMALL",
    "model_type": "OBJECT_EXPECTED",
    "model_attributes_type": "OBJECT_EXPECTED",
    "list_type": "LIST_EXPECTED",
}


# pydantic's own error types under FIELD_INVALID, by the kind of value expected (the variant of the message)
_INVALID_VARIANTS = {
    "string_type": "text",
    "string_unicode": "text",
    "int_type": "integer",
    "int_parsing": "integer",
    "int_from_float": "integer",
    "date_type": "date",
    "date_parsing": "date",
    "date_from_datetime_parsing": "date",
    "date_from_datetime_inexact": "date",
    "bool_type": "boolean",
    "bool_parsing": "boolean",
}
# context of our own errors that only the English message needs
_ENGLISH_ONLY = frozenset({"problem"})


def _shown(value: Any) -> str:
    """A value as a message repeats it: strings as written, anything else as JSON."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)


def _params(kind: str, item: dict[str, Any]) -> dict[str, Any]:
    """The values a translated message of this error needs (see locale/*/LC_MESSAGES/reasons.po)."""
    ctx = item.get("ctx") or {}
    if kind.isupper():  # ours: PydanticCustomError's context is the message's values
        return {k: _shown(v) for k, v in ctx.items() if k not in _ENGLISH_ONLY}
    if kind == "literal_error":
        return {"expected": str(ctx.get("expected", "")).replace(" or ", ", "), "given": _shown(item.get("input"))}
    if kind in ("string_too_short", "too_short"):
        return {"variant": "text" if kind.startswith("string") else "list", "limit": ctx.get("min_length")}
    if kind in ("string_too_long", "too_long"):
        return {"variant": "text" if kind.startswith("string") else "list", "limit": ctx.get("max_length")}
    if kind == "greater_than_equal":
        return {"limit": _shown(ctx.get("ge")), "given": _shown(item.get("input"))}
    if kind in _INVALID_VARIANTS:
        return {"variant": _INVALID_VARIANTS[kind]}
    return {}


def reasons_from_validation_error(error: ValidationError) -> list[Reason]:
    reasons = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        kind = item["type"]
        if loc == ("schema",) and kind == "literal_error":
            code = "SCHEMA_UNKNOWN"
            message = f"schema must be one of {', '.join(SCHEMA_IDS)}; {item.get('input')!r} given"
            params = {"allowed": ", ".join(SCHEMA_IDS), "given": _shown(item.get("input"))}
        else:
            code = kind if kind.isupper() else _BUILTIN_CODES.get(kind, "FIELD_INVALID")
            message = item["msg"]
            params = _params(kind, item)
            if kind == "missing":
                message = "this field is required"
            elif kind == "extra_forbidden":
                message = "this field is not part of the declaration document (check its spelling)"
        reasons.append(Reason(code=code, path=json_path(loc), message=message, params=params))
    return reasons


def parse_declaration(data: dict[str, Any]) -> tuple[GoodsDeclaration | None, list[Reason]]:
    """Validate a decoded JSON object; returns the document or every structural reason it fails."""
    try:
        return GoodsDeclaration.model_validate(data), []
    except ValidationError as error:
        return None, reasons_from_validation_error(error)


@cache
def _field_adapter(model: type[BaseModel], name: str) -> TypeAdapter:
    field = model.model_fields[name]
    return TypeAdapter(Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation)


def valid_field(model: type[BaseModel], name: str, value: Any) -> Any | None:
    """``value`` validated as the field ``name`` of ``model`` alone, by the same rules as the whole document;
    ``None`` when it fails them (for required fields, whose valid values are never ``None``).

    Lets the logic control read the fields that are valid in a document that is not (``format_logical_control``)."""
    try:
        return _field_adapter(model, name).validate_python(value)
    except ValidationError:
        return None


def declaration_json_schema() -> dict[str, Any]:
    schema = GoodsDeclaration.model_json_schema(by_alias=True)
    schema["$id"] = "https://customs.kgd.gov.kz/schemas/goods-declaration-1.json"
    schema["title"] = "Goods declaration / release statement, version 1"
    return schema


# ----------------------------------------------------------------------------------------------
# The declarant as the stored bytes name it, read leniently: intake, signatures, notices, access checks
# and print requests need it before (or without) the document passing format control.


def decoded_object(content: bytes) -> dict[str, Any] | None:
    """The stored bytes as a JSON object, or ``None`` when they are not one."""
    try:
        data = json.loads(content.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class WrittenDeclarant:
    """Box 14 as written: each field only when it is a string, nothing validated (that is registration's)."""

    iin: str | None = None
    bin: str | None = None
    name: str | None = None
    email: str | None = None
    language: str | None = None

    @property
    def identifier(self) -> str | None:
        """Who the declarant is: a legal entity by its BIN, a person by the IIN."""
        return self.bin or self.iin

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(x for x in (self.iin, self.bin) if x)

    @property
    def valid_ids(self) -> frozenset[str]:
        """The IIN and BIN that have valid check digits."""
        return frozenset(x for x in self.ids if is_valid_identifier(x))


def written_declarant(document: bytes | dict[str, Any] | None) -> WrittenDeclarant:
    """The declarant named by a document (its stored bytes or the decoded object)."""
    data = decoded_object(document) if isinstance(document, bytes) else document
    declarant = data.get("declarant") if isinstance(data, dict) else None
    if not isinstance(declarant, dict):
        return WrittenDeclarant()

    def text(key: str) -> str | None:
        value = declarant.get(key)
        return value if isinstance(value, str) and value else None

    return WrittenDeclarant(iin=text("iin"), bin=text("bin"), name=text("name"), email=text("email"), language=text("language"))
