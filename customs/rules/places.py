"""Where in a declaration a reason is: from the JSON path a rule stores to the place a person reads.

A reason keeps the path it was found at (``$.goods[1].net_kg``: data, in the declaration, the audit chain and
decision.json). A letter names the place as the declarant reads the form: the box of the EAEU goods
declaration (Decision of the EEC Commission No. 257 of 20 May 2010, the DT form) and, in a list, which goods
item, document or payment. ``place_of`` is the pure half: it parses the path into a ``Place`` (a catalogue
key and the numbers to fill in); ``customs.notices.catalogue.place_name`` says it in the letter's language
from ``locale/<lang>/LC_MESSAGES/reasons.po`` (``msgctxt "place"``).

Keys: ``box.<n>`` (a box of the form, titled), ``field.<name>`` (a field with no box of its own, named
plainly), ``declaration`` (the document as a whole: ``$`` and the signature label ``declaration``),
``attachment`` (a supporting document's file: ``attachments[0]``), ``unknown`` (anything else: a generic
phrase, never the path). A key may carry a sub-field (``box.14.iin``: "box 14 «Declarant», IIN").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Top-level fields of the document (models/document.py GoodsDeclaration) -> catalogue key
TOP: dict[str, str] = {
    "schema": "field.schema",
    "direction": "box.1",
    "procedure": "box.37",
    "customs_office": "field.customs_office",
    "declarant": "box.14",
    "sender": "box.2",
    "recipient": "box.8",
    "country_of_dispatch": "box.15",
    "country_of_destination": "box.17",
    "currency": "box.22",
    "exchange_rate": "box.23",
    "goods": "goods",
    "documents": "box.44",
    "payments": "box.47",
    "totals": "totals",
    "goods_location": "box.30",
}
# Fields of one goods item (GoodsItem) -> key
GOODS_ITEM: dict[str, str] = {
    "item_no": "box.32",
    "hs_code": "box.33",
    "description": "box.31",
    "origin_country": "box.34",
    "gross_kg": "box.35",
    "net_kg": "box.38",
    "quantity": "box.41",
    "unit_code": "box.41.unit_code",
    "invoice_value": "box.42",
    "customs_value": "box.45",
}
TOTALS: dict[str, str] = {"items": "box.5", "packages": "box.6", "customs_value": "box.12"}
# Sub-fields named within their box: box 14 (declarant), 2 and 8 (parties), 44 (documents), 47 (payments), 30
SUBFIELDS: dict[str, frozenset[str]] = {
    "box.14": frozenset({"iin", "bin", "name", "address", "email", "phone", "language"}),
    "box.2": frozenset({"name", "country", "address", "iin", "bin"}),
    "box.8": frozenset({"name", "country", "address", "iin", "bin"}),
    "box.44": frozenset({"code", "number", "date"}),
    "box.47": frozenset({"code", "base", "rate", "amount", "currency", "paid"}),
    "box.47.paid": frozenset({"method", "document_number", "date"}),
    "box.30": frozenset({"zone", "address"}),
}
# Which number a list's entries carry in a letter: goods items, documents of box 44, payments of box 47
ENTRY_KINDS = {"goods": "item", "box.44": "document", "box.47": "payment", "attachment": "attachment"}

_STEP = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")


@dataclass(frozen=True)
class Place:
    """A place in words: ``key`` names it in the catalogue; ``entry`` says which item/document/payment (from
    1); ``field`` is a field the declarant wrote that the document does not know (shown as written)."""

    key: str
    entry_kind: str | None = None
    entry: int | None = None
    unknown_field: str | None = field(default=None)

    @property
    def known(self) -> bool:
        return self.key != "unknown"


UNKNOWN = Place("unknown")


def _steps(path: str) -> list[str | int] | None:
    """``$.goods[1].net_kg`` -> ``["goods", 1, "net_kg"]``; ``None`` when it is not such a path."""
    rest = path[1:]
    steps: list[str | int] = []
    position = 0
    while position < len(rest):
        match = _STEP.match(rest, position)
        if match is None:
            return None
        steps.append(match.group(1) if match.group(1) is not None else int(match.group(2)))
        position = match.end()
    return steps


def place_of(path: str | None) -> Place:
    """The place of a reason's path: a JSON path into the document (``$``, ``$.totals.customs_value``), a signed
    document's label (``declaration``, ``attachments[0]``), or anything else (``UNKNOWN``)."""
    path = (path or "").strip()
    if path in ("$", "declaration"):
        return Place("declaration")
    attachment = re.fullmatch(r"attachments\[(\d+)\]", path)
    if attachment:
        return Place("attachment", "attachment", int(attachment.group(1)) + 1)
    if not path.startswith("$"):
        return UNKNOWN
    steps = _steps(path)
    if not steps or not isinstance(steps[0], str):
        return UNKNOWN
    head, rest = steps[0], steps[1:]
    key = TOP.get(head)
    if key is None:
        return Place("declaration", unknown_field=head) if not rest else UNKNOWN
    entry = None
    if key in ENTRY_KINDS and key != "attachment" and rest and isinstance(rest[0], int):
        entry, rest = rest[0] + 1, rest[1:]
    if not rest:
        return Place(key, ENTRY_KINDS.get(key) if entry else None, entry)
    name = rest[0]
    if not isinstance(name, str):
        return UNKNOWN
    inner = {"goods": GOODS_ITEM, "totals": TOTALS}.get(key)
    if inner is not None:
        if name in inner and len(rest) == 1:
            return Place(inner[name], ENTRY_KINDS.get(key) if entry else None, entry)
        if len(rest) == 1:  # a field the document does not have: the place around it, and the name as written
            return Place(key, ENTRY_KINDS.get(key) if entry else None, entry, unknown_field=name)
        return UNKNOWN
    return _subfield(key, rest, entry)


def _subfield(key: str, rest: list[str | int], entry: int | None) -> Place:
    kind = ENTRY_KINDS.get(key) if entry else None
    if key in ENTRY_KINDS and entry is None:  # a list box without its entry's number: not a path the rules give
        return UNKNOWN
    known = SUBFIELDS.get(key, frozenset())
    name = rest[0]
    if name not in known:
        return Place(key, kind, entry, unknown_field=str(name)) if len(rest) == 1 else UNKNOWN
    sub = f"{key}.{name}"
    if len(rest) == 1:
        return Place(sub, kind, entry)
    deeper = SUBFIELDS.get(sub)
    if deeper is None or len(rest) != 2 or not isinstance(rest[1], str):
        return UNKNOWN
    if rest[1] in deeper:
        return Place(f"{sub}.{rest[1]}", kind, entry)
    return Place(sub, kind, entry, unknown_field=rest[1])


def place_keys() -> set[str]:
    """Every key ``place_of`` can answer with: the catalogue must name each in every language."""
    keys = {"declaration", "attachment", "unknown", *TOP.values(), *GOODS_ITEM.values(), *TOTALS.values()}
    for box, names in SUBFIELDS.items():
        keys |= {f"{box}.{name}" for name in names}
    return keys
