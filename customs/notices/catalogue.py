"""Reasons in the letter's language: the message catalogue of reason codes (``locale/<lang>/LC_MESSAGES/reasons.po``).

A ``Reason`` is stored with its code, path and English message (the audit chain hashes them; they never
change). What a declarant reads is made when the letter is rendered: the catalogue of the letter's
language gives the message of the code (``CODE.variant`` when the reason names a variant), and the
reason's ``params`` fill its ``{placeholders}``. A reason stored without the values its message needs
(before reasons had params) gets the code's generic message (``msgctxt "generic"``). Signature messages
are built from parts: ``Signature of {document}: `` + [``CA certificate {ca_subject}: ``] + the code's
message + ``; certificate of {signer_holder}, serial number {signer_serial}``. A certificate is named by its holder
and serial, never by its distinguished name: ``{signer_holder}``, ``{ca_name}`` and ``{issuer_name}`` are made here
from the stored ``signer_subject``, ``ca_subject`` and ``issuer`` (customs.rules.signers.holder_of).

Places (``msgctxt "place"``): where a reason is, as a box of the form in the letter's language
(``place_name``, from customs.rules.places); steps (``msgctxt "step"``) and box-47 payments
(``msgctxt "payment"``) by their names.

The ``.po`` files are the catalogue: Babel reads them on first use (no compiled ``.mo`` to build or to
go stale in a fresh clone). A code missing from a catalogue falls back to the English catalogue, then to
the stored message; ``tests/unit/test_catalogue.py`` keeps every code the rules produce in all three.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from babel.messages.pofile import read_po

from customs.core.paths import LOCALE_DIR
from customs.rules.places import Place, place_of
from customs.rules.signers import holder_of

log = logging.getLogger(__name__)

LANGUAGES = ("kk", "ru", "en")
DOMAIN = "reasons"
GENERIC = "generic"
PART = "part"
PLACE = "place"
STEP = "step"
PAYMENT = "payment"
# Stored params naming a certificate by its DN -> the param a message names it with
CERTIFICATE_NAMES = {"signer_subject": "signer_holder", "ca_subject": "ca_name", "issuer": "issuer_name"}

Entries = dict[tuple[str | None, str], str]


class CatalogueError(ValueError):
    pass


def placeholders(text: str) -> set[str]:
    """The ``{names}`` a message uses (only plain names are allowed: no attributes, indexes or formats)."""
    names = set()
    for _, name, spec, conversion in string.Formatter().parse(text):
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise CatalogueError(f"placeholder {{{name}}} in {text!r}: only {{name}} is allowed")
        names.add(name)
    return names


@lru_cache(maxsize=16)
def entries(language: str, directory: Path = LOCALE_DIR, domain: str = DOMAIN) -> Entries:
    """(msgctxt, msgid) -> msgstr of the language's catalogue: translated, not fuzzy, placeholders checked.
    ``domain``: which catalogue (``reasons``; ``paper_copy``: the paper copy's words, customs.notices.paper_copy)."""
    path = directory / language / "LC_MESSAGES" / f"{domain}.po"
    with path.open("rb") as handle:
        catalog = read_po(handle, locale=language, domain=domain)
    found: Entries = {}
    for message in catalog:
        if not message.id or not message.string or message.fuzzy:
            continue
        placeholders(message.string)  # raises on anything but {name}
        found[(message.context, message.id)] = message.string
    return found


class _Missing(KeyError):
    pass


def _fill(text: str, params: Mapping[str, str]) -> str:
    try:
        return text.format_map(_Strict(params))
    except _Missing:
        raise
    except (IndexError, ValueError) as exc:  # a broken catalogue entry: never a broken letter
        raise _Missing(str(exc)) from None


class _Strict(dict):
    def __missing__(self, key: str) -> str:
        raise _Missing(key)


def _body(table: Entries, code: str, params: Mapping[str, str]) -> str | None:
    variant = params.get("variant")
    candidates = ([(None, f"{code}.{variant}")] if variant else []) + [(None, code), (GENERIC, code)]
    for key in candidates:
        text = table.get(key)
        if text is None:
            continue
        try:
            return _fill(text, params)
        except _Missing:
            continue  # this message needs a value the reason does not carry: try the next, more generic one
    return None


def _part(table: Entries, name: str, params: Mapping[str, str]) -> str:
    text = table.get((PART, name))
    if text is None:
        return ""
    try:
        return _fill(text, params)
    except _Missing:
        return ""


def _certificate_names(table: Entries, params: dict[str, str]) -> dict[str, str]:
    """``params`` with a holder's name for each DN in them (``signer_holder`` of ``signer_subject``...): the
    holder (CN) and organisation (O), else the IIN or BIN, else the catalogue's "holder not named"."""
    named = dict(params)
    for stored, shown in CERTIFICATE_NAMES.items():
        if stored not in params or shown in params:
            continue
        holder = holder_of(params[stored])
        name = holder.shown_name
        if name is None and holder.iin:
            name = _part(table, "holder_iin", {"iin": holder.iin})
        if name is None and holder.bin:
            name = _part(table, "holder_bin", {"bin": holder.bin})
        named[shown] = name or _part(table, "holder_unnamed", {})
    return named


def reason_message(reason: Mapping[str, Any], language: str, *, directory: Path = LOCALE_DIR) -> str:
    """The message of a stored reason (``{code, path, message[, params]}``) in ``language``."""
    code = str(reason.get("code") or "")
    stored = {str(k): str(v) for k, v in (reason.get("params") or {}).items()}
    for lang in dict.fromkeys((language, "en")):
        table = entries(lang, directory)
        params = _certificate_names(table, stored)
        body = _body(table, code, params)
        if body is None:
            continue
        if lang != language:
            log.warning("reason code %s has no message in the %s catalogue; the English one is used", code, language)
        text = body
        if "ca_subject" in params:
            text = _part(table, "ca_certificate", params) + text
        if "signer_subject" in params:
            text += _part(table, "certificate", params)
        lead = _part(table, "signature", params) if "document" in params else ""
        if lead:  # the part begins the sentence as its language does (Kazakh: with the file's name)
            return lead + text
        return text[:1].upper() + text[1:]
    log.warning("reason code %s is in no message catalogue; its stored message is used", code)
    return str(reason.get("message") or "")


def _entry(language: str, context: str, key: str, params: Mapping[str, str], directory: Path) -> str | None:
    """One entry of ``context`` filled in: the language's, else the English one, else ``None``."""
    for lang in dict.fromkeys((language, "en")):
        text = entries(lang, directory).get((context, key))
        if text is None:
            continue
        try:
            return _fill(text, params)
        except _Missing:
            continue
    return None


def _place_words(place: Place, language: str, directory: Path) -> str:
    def words(key: str, **params: Any) -> str:
        return _entry(language, PLACE, key, {k: str(v) for k, v in params.items()}, directory) or ""

    if not place.known:
        return words("unknown")
    parts = place.key.split(".")
    base = ".".join(parts[:2]) if parts[0] == "box" else place.key
    subs = parts[2:] if parts[0] == "box" else []
    text = words(base, entry=place.entry or "")
    if place.entry_kind and place.entry and place.entry_kind != "attachment":
        text += words(f"entry.{place.entry_kind}", entry=place.entry)
    for sub in subs:
        text += ", " + words(f"sub.{sub}")
    if place.unknown_field:
        text += words("unknown_field", field=place.unknown_field)
    return text


def place_name(path: str | None, language: str, *, directory: Path = LOCALE_DIR) -> str:
    """Where a reason is, as the declarant reads the form: ``графа 38 «Вес нетто (кг)», товар 2``, ``the declaration
    as a whole``; a path it cannot place gets the catalogue's generic phrase, never the path itself."""
    return _place_words(place_of(path), language, directory) or _entry(language, PLACE, "unknown", {}, directory) or ""


def step_name(step: str | None, language: str, *, directory: Path = LOCALE_DIR) -> str:
    """A processing step by its name in ``language`` (``clearance_run`` -> "обработка декларации")."""
    return _entry(language, STEP, str(step or ""), {}, directory) or _entry(language, STEP, "unknown", {}, directory) or ""


def payment_name(code: str | None, language: str, *, directory: Path = LOCALE_DIR) -> str:
    """A box-47 payment by its code and name: "платёж 5010 (НДС)"; an unnamed code as "платёж 4010"."""
    code = str(code or "")
    return _entry(language, PAYMENT, code, {}, directory) or _entry(language, PAYMENT, "other", {"code": code}, directory) or code


def localised_reasons(reasons: list[Mapping[str, Any]], language: str) -> list[dict[str, Any]]:
    """Reasons as a letter shows them: the code as stored, the place and the message in the letter's language (the
    stored path stays in the data: the declaration, the audit chain, decision.json)."""
    return [
        {"code": r.get("code"), "place": place_name(r.get("path"), language), "message": reason_message(r, language)}
        for r in reasons
        if isinstance(r, Mapping)
    ]
