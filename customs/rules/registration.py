"""Automatic registration: format and logic control of the stored bytes, and the registration number."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

from models.document import GoodsDeclaration, parse_declaration
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


def logical_control(doc: GoodsDeclaration, reference: ReferenceData) -> list[Reason]:
    """Rules across fields of a structurally valid declaration; every failure is listed."""
    reasons: list[Reason] = []
    if doc.customs_office not in reference.offices:
        reasons.append(
            Reason(
                code="OFFICE_UNKNOWN",
                path="$.customs_office",
                message=f"customs office {doc.customs_office} is not a known office empowered to register declarations",
                params={"office": doc.customs_office},
            )
        )
    elif doc.goods_location is not None and doc.goods_location.zone not in reference.zones_of(doc.customs_office):
        reasons.append(
            Reason(
                code="ZONE_UNKNOWN",
                path="$.goods_location.zone",
                message=f"zone {doc.goods_location.zone} is not a zone of customs control of office {doc.customs_office} "
                f"({', '.join(reference.zones_of(doc.customs_office))})",
                params={
                    "zone": doc.goods_location.zone,
                    "office": doc.customs_office,
                    "zones": ", ".join(reference.zones_of(doc.customs_office)),
                },
            )
        )
    for index, item in enumerate(doc.goods):
        if item.item_no != index + 1:
            reasons.append(
                Reason(
                    code="ITEM_NUMBERING",
                    path=f"$.goods[{index}].item_no",
                    message=f"goods items are numbered 1, 2, 3... in order; item {index + 1} has number {item.item_no}",
                    params={"position": index + 1, "number": item.item_no},
                )
            )
        if item.net_kg > item.gross_kg:
            reasons.append(
                Reason(
                    code="NET_EXCEEDS_GROSS",
                    path=f"$.goods[{index}].net_kg",
                    message=f"net weight {item.net_kg} kg exceeds gross weight {item.gross_kg} kg",
                    params={"net": item.net_kg, "gross": item.gross_kg},
                )
            )
    if doc.totals.items != len(doc.goods):
        reasons.append(
            Reason(
                code="TOTALS_MISMATCH",
                path="$.totals.items",
                message=f"box 5 says {doc.totals.items} items but the declaration lists {len(doc.goods)}",
                params={"variant": "items", "declared": doc.totals.items, "counted": len(doc.goods)},
            )
        )
    value_sum = sum((item.customs_value for item in doc.goods), start=0)
    if doc.totals.customs_value != value_sum:
        reasons.append(
            Reason(
                code="TOTALS_MISMATCH",
                path="$.totals.customs_value",
                message=f"box 12 says {doc.totals.customs_value} "
                f"but the customs values of the items (box 45) add up to {value_sum}",
                params={"variant": "customs_value", "declared": doc.totals.customs_value, "total": value_sum},
            )
        )
    return reasons


def format_logical_control(content: bytes, reference: ReferenceData) -> tuple[GoodsDeclaration | None, list[Reason]]:
    """Format and logic control of the stored bytes: the parsed document and every failed rule."""
    data, reasons = decode_document(content)
    if data is None:
        return None, reasons
    doc, reasons = parse_declaration(data)
    if doc is None:
        return None, reasons
    return doc, logical_control(doc, reference)


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
