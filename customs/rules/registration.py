"""Automatic registration: format and logic control of the stored bytes, and the registration number."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from models.document import (
    MAX_GOODS_ITEMS,
    SCHEMA_IDS,
    GoodsDeclaration,
    GoodsItem,
    GoodsLocation,
    Totals,
    parse_declaration,
    valid_field,
)
from models.reasons import Reason
from models.reference import ReferenceData


def decode_document(content: bytes) -> tuple[dict | None, list[Reason]]:
    """The stored bytes as a JSON object (intake already refused anything else; kept defensive)."""
    try:
        data = json.loads(content.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [Reason(code="JSON_INVALID", path="$", message=f"the document is not UTF-8 JSON: {exc}")]
    if not isinstance(data, dict):
        return None, [Reason(code="OBJECT_EXPECTED", path="$", message="the document must be a JSON object")]
    return data, []


@dataclass(frozen=True)
class ItemInputs:
    """What the logic control reads of one goods item; ``None`` where the field is not valid."""

    item_no: int | None = None
    gross_kg: Decimal | None = None
    net_kg: Decimal | None = None
    customs_value: Decimal | None = None


@dataclass(frozen=True)
class LogicInputs:
    """The fields the rules across fields read, each one only when it passed format control (``None`` otherwise).

    From a valid document every field is there; from one that failed format control, the valid ones are, so
    that every check whose own fields are valid still runs and a declarant hears of every failure at once."""

    customs_office: str | None = None
    zone: str | None = None  # box 30; None when absent or not valid
    goods: tuple[ItemInputs, ...] | None = None  # None when box 31 is not a list of items
    totals_items: int | None = None
    totals_customs_value: Decimal | None = None

    @classmethod
    def of_document(cls, doc: GoodsDeclaration) -> LogicInputs:
        return cls(
            customs_office=doc.customs_office,
            zone=doc.goods_location.zone if doc.goods_location is not None else None,
            goods=tuple(ItemInputs(i.item_no, i.gross_kg, i.net_kg, i.customs_value) for i in doc.goods),
            totals_items=doc.totals.items,
            totals_customs_value=doc.totals.customs_value,
        )

    @classmethod
    def of_data(cls, data: dict[str, Any]) -> LogicInputs:
        """The valid fields of a decoded document that failed format control."""

        def box(value: Any) -> dict[str, Any]:
            return value if isinstance(value, dict) else {}

        def valid(model: type, values: dict[str, Any], name: str) -> Any:
            return valid_field(model, name, values[name]) if name in values else None

        goods = data.get("goods")
        items = None
        if isinstance(goods, list) and 1 <= len(goods) <= MAX_GOODS_ITEMS:
            items = tuple(
                ItemInputs(*(valid(GoodsItem, box(item), name) for name in ("item_no", "gross_kg", "net_kg", "customs_value")))
                for item in goods
            )
        totals = box(data.get("totals"))
        return cls(
            customs_office=valid(GoodsDeclaration, data, "customs_office"),
            zone=valid(GoodsLocation, box(data.get("goods_location")), "zone"),
            goods=items,
            totals_items=valid(Totals, totals, "items"),
            totals_customs_value=valid(Totals, totals, "customs_value"),
        )


def logical_control(doc: GoodsDeclaration, reference: ReferenceData) -> list[Reason]:
    """Rules across fields of a structurally valid declaration; every failure is listed."""
    return logic_checks(LogicInputs.of_document(doc), reference)


def logic_checks(inputs: LogicInputs, reference: ReferenceData) -> list[Reason]:
    """Every rule across fields whose own fields are valid (a rule with an invalid field is not run: its
    field is refused by format control already); every failure is listed."""
    reasons: list[Reason] = []
    office = inputs.customs_office
    if office is not None and office not in reference.offices:
        reasons.append(
            Reason(
                code="OFFICE_UNKNOWN",
                path="$.customs_office",
                message=f"customs office {office} is not a known office empowered to register declarations",
                params={"office": office},
            )
        )
    elif office is not None and inputs.zone is not None and inputs.zone not in reference.zones_of(office):
        reasons.append(
            Reason(
                code="ZONE_UNKNOWN",
                path="$.goods_location.zone",
                message=f"zone {inputs.zone} is not a zone of customs control of office {office} "
                f"({', '.join(reference.zones_of(office))})",
                params={"zone": inputs.zone, "office": office, "zones": ", ".join(reference.zones_of(office))},
            )
        )
    goods = inputs.goods
    for index, item in enumerate(goods or ()):
        if item.item_no is not None and item.item_no != index + 1:
            reasons.append(
                Reason(
                    code="ITEM_NUMBERING",
                    path=f"$.goods[{index}].item_no",
                    message=f"goods items are numbered 1, 2, 3... in order; item {index + 1} has number {item.item_no}",
                    params={"position": index + 1, "number": item.item_no},
                )
            )
        if item.net_kg is not None and item.gross_kg is not None and item.net_kg > item.gross_kg:
            reasons.append(
                Reason(
                    code="NET_EXCEEDS_GROSS",
                    path=f"$.goods[{index}].net_kg",
                    message=f"net weight {item.net_kg} kg exceeds gross weight {item.gross_kg} kg",
                    params={"net": item.net_kg, "gross": item.gross_kg},
                )
            )
    if goods is not None and inputs.totals_items is not None and inputs.totals_items != len(goods):
        reasons.append(
            Reason(
                code="TOTALS_MISMATCH",
                path="$.totals.items",
                message=f"box 5 says {inputs.totals_items} items but the declaration lists {len(goods)}",
                params={"variant": "items", "declared": inputs.totals_items, "counted": len(goods)},
            )
        )
    values = [item.customs_value for item in goods or ()]
    if goods is not None and inputs.totals_customs_value is not None and None not in values:
        value_sum = sum(values, start=Decimal(0))
        if inputs.totals_customs_value != value_sum:
            reasons.append(
                Reason(
                    code="TOTALS_MISMATCH",
                    path="$.totals.customs_value",
                    message=f"box 12 says {inputs.totals_customs_value} "
                    f"but the customs values of the items (box 45) add up to {value_sum}",
                    params={"variant": "customs_value", "declared": inputs.totals_customs_value, "total": value_sum},
                )
            )
    return reasons


def format_logical_control(content: bytes, reference: ReferenceData) -> tuple[GoodsDeclaration | None, list[Reason]]:
    """Format and logic control of the stored bytes: the parsed document (``None`` when it fails format
    control) and every failed rule, in one pass.

    A document that fails format control still goes through every logic check whose own fields are valid
    (a bad HS code does not hide net weight above gross), as long as it names a schema this service knows:
    the boxes mean what version 1 says only in a version 1 document."""
    data, reasons = decode_document(content)
    if data is None:
        return None, reasons
    doc, reasons = parse_declaration(data)
    if doc is not None:
        return doc, logical_control(doc, reference)
    if data.get("schema") not in SCHEMA_IDS:
        return None, reasons
    return None, reasons + logic_checks(LogicInputs.of_data(data), reference)


def zone_of(doc: GoodsDeclaration, reference: ReferenceData) -> str | None:
    """Where the goods are: box 30's zone, or the office's first zone when the declaration names none."""
    if doc.goods_location is not None:
        return doc.goods_location.zone
    zones = reference.zones_of(doc.customs_office)
    return zones[0] if zones else None


def registration_number(office: str, day: date, serial: int) -> str:
    """``OOOOO/DDMMYY/NNNNNNN``: office, date of registration in Kazakhstan time, serial per office per day."""
    if not 1 <= serial <= 9_999_999:
        raise ValueError(f"registration serial {serial} is out of range for office {office} on {day}")
    return f"{office}/{day:%d%m%y}/{serial:07d}"


def parse_registration_number(number: str) -> tuple[str, date, int] | None:
    """The office, day and serial of a number ``registration_number`` made; ``None`` for anything else."""
    office, _, rest = number.partition("/")
    day_text, _, serial_text = rest.partition("/")
    if not (office.isdigit() and len(day_text) == 6 and day_text.isdigit() and serial_text.isdigit()):
        return None
    try:
        day = date(2000 + int(day_text[4:]), int(day_text[2:4]), int(day_text[:2]))
    except ValueError:
        return None
    return office, day, int(serial_text)


def registration_deadline_stage(
    submitted_at: datetime, now: datetime, deadline: timedelta, alert_fraction: float
) -> tuple[str | None, datetime]:
    """Where an unregistered declaration stands against the registration deadline: ``alert`` once
    ``alert_fraction`` of it has passed, ``breach`` at the deadline, else ``None``; and the deadline."""
    due = submitted_at + deadline
    if now >= due:
        return "breach", due
    if now >= submitted_at + deadline * alert_fraction:
        return "alert", due
    return None, due
