"""The paper copy of an electronic declaration: a Jinja2 HTML template (templates/print/) rendered to PDF
by WeasyPrint with an embedded DejaVu font (Cyrillic and the Kazakh letters Ә Ғ Қ Ң Ө Ұ Ү Һ І).

The copy is wholly in the declarant's language (kk, ru, en): its words come from the catalogue
locale/<lang>/LC_MESSAGES/paper_copy.po, the codes it prints (status, unit, payment method and type, document
type, procedure, decision) by their names (the catalogue, reference/classifiers.json), officials by name
(reference/officials.json), dates dd.mm.yyyy and times HH:MM in Astana time (docs/explanation/paper-copies.md)."""

from __future__ import annotations

import atexit
import base64
import io
import itertools
import json
import logging
import multiprocessing
import multiprocessing.pool
import string
import threading
from datetime import date, datetime
from string import hexdigits
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup, escape

from customs.core.clock import kz_local
from customs.core.paths import TEMPLATES_DIR
from customs.core.settings import get_settings
from customs.notices.catalogue import entries
from customs.notices.render import template_environment
from customs.rules.printing import WaitingCopy, next_to_render
from customs.rules.signers import LEGAL_ENTITY
from models.declaration import Declaration, ReleaseMark
from models.outbox import addressee_of
from models.reference import Classifier, ClassifiersFile, ReferenceData

log = logging.getLogger(__name__)

CHECK_PATH = "/v1/documents/check"


def check_url(public_url: str, registration_number: str, sha256: str) -> str:
    """Where the copy's QR code leads: the check of the declaration's number and SHA-256 (customs.api.routers.documents)."""
    return f"{public_url.rstrip('/')}{CHECK_PATH}?{urlencode({'number': registration_number, 'sha256': sha256})}"


def qr_data_uri(text: str) -> str:
    """A QR code of ``text`` (segno, error correction M, the standard 4-module quiet zone) as an SVG data URI that
    WeasyPrint draws at the size the template gives it."""
    import segno

    out = io.BytesIO()
    segno.make(text, error="m", micro=False).save(out, kind="svg", border=4, xmldecl=False, dark="#000", light="#fff")
    return "data:image/svg+xml;base64," + base64.b64encode(out.getvalue()).decode("ascii")


COPY_DOMAIN = "paper_copy"  # locale/<lang>/LC_MESSAGES/paper_copy.po: every word the copy prints
CODE_NAMES = ("status", "channel", "direction", "role")  # the catalogue's msgctxt of code names


def copy_language(declaration: Declaration) -> str:
    """The declarant's language, as the stored document gives it (kk, ru, en; ru when it names none)."""
    return addressee_of(declaration.content)["language"]


def copy_words(language: str) -> dict[str, Any]:
    """The copy's words in ``language``: ``{msgid: text}``, and ``{context: {code: name}}`` for ``CODE_NAMES``.
    A word the language's catalogue lacks is the English one (logged; tests/unit/test_paper_copy_words.py keeps
    the three catalogues complete)."""
    english = entries("en", domain=COPY_DOMAIN)
    table = entries(language, domain=COPY_DOMAIN) if language != "en" else english
    words: dict[str, Any] = {context: {} for context in CODE_NAMES}
    for (context, key), text in english.items():
        if (context, key) not in table:
            log.warning("the %s paper copy catalogue has no %s; the English word is used", language, key)
        text = table.get((context, key), text)
        if context is None:
            words[key] = text
        else:
            words.setdefault(context, {})[key] = text
    return words


def copy_time(moment: datetime | None) -> str:
    """A time as the copy prints it: dd.mm.yyyy HH:MM in Astana time (UTC+5; the copy says so once)."""
    return kz_local(moment).strftime("%d.%m.%Y %H:%M") if moment else ""


def copy_date(value: Any) -> str:
    """A date of the document (ISO, as the declaration carries it) as dd.mm.yyyy; anything else as written."""
    try:
        return date.fromisoformat(str(value)).strftime("%d.%m.%Y")
    except ValueError:
        return str(value or "")


def css_string(text: str) -> str:
    """``text`` as a CSS string: quoted, with quotes, backslashes and ``<`` escaped (it sits inside <style>)."""
    escaped = text.replace("\\", "\\\\").replace('"', "\\22 ").replace("<", "\\3c ").replace("\n", " ")
    return f'"{escaped}"'


def css_content(template: str, values: dict[str, str], counters: tuple[str, ...] = ()) -> Markup:
    """A catalogue text as the value of a CSS ``content``: its ``{names}`` filled from ``values``, except the page
    ``counters`` (``page``, ``pages``), which become ``counter(page)`` where the language puts them."""
    parts = []
    for literal, name, _, _ in string.Formatter().parse(template):
        if literal:
            parts.append(css_string(literal))
        if name in counters:
            parts.append(f"counter({name})")
        elif name is not None:
            parts.append(css_string(values[name]))
    return Markup(" ".join(parts) or '""')


def _named(classifier: Classifier | None, code: Any, language: str, short: bool = False) -> str:
    """A code by its name in the language (the short name where asked and known); an unknown code as written."""
    entry = classifier.find(code) if classifier else None
    if entry is None:
        return str(code or "")
    return (entry.names.get(language) if short else None) or entry.titles[language]  # type: ignore[index]


def _official(reference: ReferenceData, official_id: str | None) -> Markup:
    """An official by name, with the id staff look them up by (kept on one line); an id the reference data lacks as
    written."""
    official = reference.officials.get(official_id or "")
    if official is None:
        return _nowrap(official_id or "")
    return Markup("{} {}").format(official.name, _nowrap(f"({official.id})"))


def _nowrap(text: Any) -> Markup:
    return Markup('<span class="nowrap">{}</span>').format(text)


def _say(text: str, **values: Any) -> Markup:
    """A catalogue text with its ``{names}`` filled, as markup: the text and plain values escaped, markup kept."""
    return Markup(escape(text)).format(**values)


def _lines(document: dict[str, Any], classifiers: ClassifiersFile | None, words: dict[str, Any], language: str) -> dict:
    """Goods, documents and payments with their codes named (boxes 41, 44, 47) and their dates dd.mm.yyyy."""
    units = classifiers.units if classifiers else None
    goods = [
        {**g, "quantity_text": f"{g.get('quantity')} {_named(units, g.get('unit_code'), language, short=True)}"}
        for g in document.get("goods") or []
    ]
    documents = [
        {
            **doc,
            "type_text": _joined(
                doc.get("code"), _named(classifiers.document_types if classifiers else None, doc.get("code"), language)
            ),
            "date_text": copy_date(doc.get("date")),
        }
        for doc in document.get("documents") or []
    ]
    payments = []
    for p in document.get("payments") or []:
        paid = p.get("paid")
        methods = classifiers.payment_methods if classifiers else None
        paid_text = (
            words["not_paid"]
            if not paid
            else _say(
                words["paid"],
                method=_named(methods, paid.get("method"), language, short=True),
                number=paid.get("document_number"),
                date=_nowrap(copy_date(paid.get("date"))),
            )
        )
        kind = _named(classifiers.payment_types if classifiers else None, p.get("code"), language)
        payments.append({**p, "type_text": _joined(p.get("code"), kind), "paid_text": paid_text})
    return {"goods": goods, "documents": documents, "payments": payments}


def _box1(document: dict[str, Any], classifiers: ClassifiersFile | None, words: dict[str, Any], language: str) -> str:
    """Box 1 as the form writes it in the language (ИМ 40, IM 40), and the procedure by its name."""
    direction = words["direction"].get(document.get("direction"), str(document.get("direction") or ""))
    code = str(document.get("procedure") or "")
    procedure = _named(classifiers.procedures if classifiers else None, code, language)
    return _joined(" ".join(filter(None, [direction, code])), procedure if procedure != code else "")


def _joined(code: Any, name: str) -> str:
    return f"{code} · {name}" if name and name != str(code) else str(code or "")


def _decision(
    declaration: Declaration, mark: ReleaseMark | None, reference: ReferenceData, words: dict, language: str, zone_name: str
) -> dict[str, Markup]:
    """Box C (the decision by its code's name, when and by whom) and box D (the release mark)."""
    decisions = reference.classifiers.decisions if reference.classifiers else None
    when = _nowrap(copy_time(declaration.decided_at))
    if declaration.decided_by == "system":
        who = words["decided_by_system"]
    else:
        who = _say(words["decided_by_official"], name=_official(reference, declaration.decided_by))
    status = str(declaration.status)
    if declaration.decision_code:
        what = _say(
            words["decision"], code=declaration.decision_code, name=_named(decisions, declaration.decision_code, language)
        )
        if status == "release_cancelled":
            what += Markup(" ({})").format(words["decision_cancelled"])
        decision = Markup(" · ").join([what, when, who])
    elif status == "release_refused":
        decision = Markup(" · ").join([words["decision_refused"], when, who])
    else:
        decision = escape(words["no_decision"])
    if mark is None:
        stamp = escape("—")
    elif mark.affixed_at:
        stamp = _say(
            words["mark_affixed"],
            at=_nowrap(copy_time(mark.affixed_at)),
            official=_official(reference, mark.affixed_by),
            zone=zone_name,
        )
    elif mark.withdrawn_at is not None:
        stamp = escape(words["mark_withdrawn"])
    else:
        stamp = _say(words["mark_waiting"], zone=zone_name)
    return {"decision_text": decision, "mark_text": stamp}


def copy_context(
    declaration: Declaration,
    mark: ReleaseMark | None,
    reference: ReferenceData,
    request_id: str,
    requested_at: datetime,
    *,
    public_url: str = "http://127.0.0.1:8080",
    signed_by: dict[str, str] | None = None,
    language: str | None = None,
) -> dict[str, Any]:
    """Everything the copy prints, in ``language`` (by default the declarant's, ``copy_language``): its words from the
    catalogue, codes by their names (reference/classifiers.json), officials by name, times dd.mm.yyyy HH:MM.
    ``signed_by``: the service certificate that will sign the copy (``name``, ``serial``, ``algorithm``; ``None``: it
    goes out unsigned, and says so). Plain data: it goes to the rendering process as it is."""
    language = language or copy_language(declaration)
    words = copy_words(language)
    document = json.loads(declaration.content.decode("utf-8-sig"))
    office = reference.offices.get(declaration.customs_office or "")
    zone = office.zone(declaration.zone) if office else None
    zone_name = zone.name_in(language) if zone else str(declaration.zone or "")
    number = declaration.registration_number or ""
    url = check_url(public_url, number, declaration.content_sha256)
    authority = reference.authority
    classifiers = reference.classifiers
    statement = str(document.get("schema") or "").endswith("release-statement@1")
    return {
        "lang": language,
        "t": words,
        "title": words["title.statement" if statement else "title.declaration"],
        "doc_title": words["doc_title"].format(number=number),
        "copy_line": words["copy_line"].format(number=number, request=request_id, requested_at=copy_time(requested_at)),
        "footer_css": css_content(words["footer"], {"number": number, "request": request_id}),
        "page_css": css_content(words["page_of"], {}, ("page", "pages")),
        "box1": _box1(document, classifiers, words, language),
        "price_heading": words["col.42"].format(currency=document.get("currency") or ""),
        "check_url": url,
        "check_base": url.partition("?")[0],
        "check_qr": qr_data_uri(url),
        "sha256_advice": words["sha256_advice"].format(number=number),
        "signed_text": _signed_text(words, authority, signed_by, language),
        "d": document,
        **_lines(document, classifiers, words, language),
        "request_id": request_id,
        "application_id": declaration.application_id,
        "registration_number": number,
        "office_name": office.name_in(language) if office else "",
        "zone_name": zone_name,
        "channel_name": words["channel"].get(declaration.channel, declaration.channel),
        "status_name": words["status"].get(str(declaration.status), str(declaration.status)),
        "submitted_at": copy_time(declaration.submitted_at),
        "registered_at": copy_time(declaration.registered_at),
        **_decision(declaration, mark, reference, words, language, zone_name),
        "sha256": declaration.content_sha256,
        "signers": [readable_signer(s, words) for s in declaration.signers or []],
    }


def _algorithm(algorithm: str, words: dict[str, Any]) -> str:
    return (algorithm or "").replace("GOST", words["gost"]).replace("bits", words["bits"])


def _signed_text(words: dict[str, Any], authority: Any, signed_by: dict[str, str] | None, language: str) -> str | None:
    """What the copy says of the authority's signature on its file (``None``: unsigned)."""
    if not signed_by:
        return None
    certificate = words["certificate"].format(
        name=signed_by.get("name", ""),
        serial=signed_by.get("serial", ""),
        algorithm=_algorithm(signed_by.get("algorithm", ""), words),
    )
    name = authority.name_in(language) if authority else ""
    return words["signed"].format(authority=name, bin=authority.bin if authority else "", certificate=certificate)


def dn_attributes(dn: str) -> dict[str, str]:
    """The attributes of a name as ``rfc4514_string`` wrote it (``CN=ТЕСТОВ ТЕСТ,SN=ТЕСТОВ,O=АО \\"ТЕСТ\\"``):
    label -> value with its escapes undone (``\\,`` ``\\"`` ... and ``\\XX`` bytes); a label's first value."""
    attributes: dict[str, str] = {}
    i, n = 0, len(dn)
    while i < n:
        equals = dn.find("=", i)
        if equals < 0:
            break
        label, i = dn[i:equals].strip().upper(), equals + 1
        text, pending = [], bytearray()
        while i < n and dn[i] not in ",+":
            pair = dn[i + 1 : i + 3]
            if dn[i] == "\\" and len(pair) == 2 and all(c in hexdigits for c in pair):
                pending.append(int(pair, 16))
                i += 3
                continue
            if pending:
                text.append(pending.decode("utf-8", "replace"))
                pending.clear()
            if dn[i] == "\\" and i + 1 < n:
                i += 1
            text.append(dn[i])
            i += 1
        if pending:
            text.append(pending.decode("utf-8", "replace"))
        attributes.setdefault(label, "".join(text))
        i += 1
    return attributes


def readable_signer(summary: dict[str, Any], words: dict[str, Any] | None = None) -> dict[str, Any]:
    """A signer of the copy as people name them: the holder's full name (NCA writes surname and name in CN,
    the patronymic in G), the organisation (O), IIN and BIN, the NCA roles by name in the copy's language (``words``,
    ``copy_words``; Russian by default), the certificate's serial and its key's algorithm (ГОСТ 34.310-2004, RSA 2048)."""
    words = words or copy_words("ru")
    who = summary.get("signer") or {}
    attributes = dn_attributes(str(who.get("subject") or ""))
    name = attributes.get("CN", "")
    patronymic = attributes.get("G") or attributes.get("GIVENNAME", "")
    if patronymic and patronymic not in name.split():
        name = f"{name} {patronymic}".strip()
    roles = [r for r in who.get("roles") or [] if isinstance(r, str)]
    if len(roles) > 1:
        roles = [r for r in roles if r != LEGAL_ENTITY]  # the entity's role below it says more
    return {
        "document": summary.get("filename") or summary.get("document") or "",
        "name": name,
        "organization": attributes.get("O", ""),
        "iin": who.get("iin") or "",
        "bin": who.get("bin") or "",
        "roles": roles,
        "role_names": [words["role"].get(role, role) for role in roles],
        "serial": who.get("serial") or "",
        "algorithm": _algorithm(who.get("algorithm") or "", words),
        "valid": summary.get("valid"),
    }


class _HarfBuzzSubsetNotice(logging.Filter):
    """WeasyPrint warns on every page when the system's HarfBuzz lacks its subsetter; it falls back to
    fontTools, which embeds the same glyphs. Once is enough for operations staff."""

    seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "HarfBuzz-Subset" not in record.getMessage():
            return True
        first, _HarfBuzzSubsetNotice.seen = not _HarfBuzzSubsetNotice.seen, True
        return first


logging.getLogger("weasyprint").addFilter(_HarfBuzzSubsetNotice())


def render_copy_pdf(context: dict[str, Any]) -> bytes:
    """The copy as PDF: Jinja2 HTML (templates/print/declaration_copy.html.j2) through WeasyPrint."""
    from weasyprint import HTML

    html = template_environment().get_template("print/declaration_copy.html.j2").render(**context)
    return HTML(string=html, base_url=str(TEMPLATES_DIR / "print") + "/").write_pdf()


class RenderTimedOut(TimeoutError):
    pass


class CopyRenderers:
    """A few processes that render copies (``processes``), each started once and reused, and the copies waiting for
    one, taken in the order of their ``priority`` (customs.rules.printing.render_priority: the most urgent, then the
    smallest), not in the order they asked.

    WeasyPrint lays out in Python and holds the GIL throughout: a 999-item copy takes seconds to minutes. Rendered
    inside the process that answers the intake API and runs the worker's flows, it stalled both (/v1/health took
    6.4 s): hence processes of their own. With one process, a 1-item copy waited behind four 999-item ones (8.6 min,
    issue 25 part 7); now a large copy (``large=True``) may hold every process but one: the last is kept for small
    copies, so a small copy never waits behind large ones (with ``processes`` of 1 it has no other choice).
    A copy that takes longer than ``timeout`` seconds has its process stopped (the others go on)."""

    def __init__(self, processes: int):
        self.processes = max(1, processes)
        self._slots: list[multiprocessing.pool.Pool | None] = [None] * self.processes
        self._free = list(range(self.processes))
        self._large_rendering = 0
        self._waiting: list[WaitingCopy] = []
        self._numbers = itertools.count()
        self._changed = threading.Condition()
        self.started: list[tuple] = []  # the priorities in the order their rendering began (tests, the benchmark)

    @property
    def waiting(self) -> int:
        with self._changed:
            return len(self._waiting)

    def _may_start(self, ticket: WaitingCopy) -> bool:
        return next_to_render(self._waiting, len(self._free), self._large_rendering, self.processes) is ticket

    def render(self, context: dict[str, Any], timeout: float, priority: tuple = (), *, large: bool = False) -> bytes:
        """``render_copy_pdf(context)`` in one of the processes, once the copy's turn comes."""
        ticket = WaitingCopy(priority, next(self._numbers), large)
        with self._changed:
            self._waiting.append(ticket)
            while not self._may_start(ticket):
                self._changed.wait()
            self._waiting.remove(ticket)
            slot = self._free.pop(0)
            self._large_rendering += large
            self.started.append(priority)
            if self._slots[slot] is None:
                self._slots[slot] = multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=50)
            pool = self._slots[slot]
            self._changed.notify_all()  # another copy may start in the next free process
        try:
            return pool.apply_async(render_copy_pdf, (context,)).get(timeout)
        except multiprocessing.TimeoutError:
            pool.terminate()
            with self._changed:
                self._slots[slot] = None
            raise RenderTimedOut(f"rendering the copy took more than {timeout:.0f} s; its process was stopped") from None
        finally:
            with self._changed:
                self._free.append(slot)
                self._large_rendering -= large
                self._changed.notify_all()

    def stop(self) -> None:
        with self._changed:
            for index, pool in enumerate(self._slots):
                if pool is not None:
                    pool.terminate()
                    self._slots[index] = None


_renderers: CopyRenderers | None = None
_renderers_lock = threading.Lock()


def copy_renderers() -> CopyRenderers:
    """This process's renderers (``print_render_processes`` of them), started at the first copy."""
    global _renderers
    with _renderers_lock:
        if _renderers is None:
            _renderers = CopyRenderers(get_settings().print_render_processes)
            atexit.register(stop_renderer)  # terminated before the interpreter tears down what Pool.__del__ needs
        return _renderers


def render_copy_pdf_apart(context: dict[str, Any], timeout: float, priority: tuple = (), *, large: bool = False) -> bytes:
    """``render_copy_pdf`` in a process of its own (``CopyRenderers``), in its turn among the copies waiting."""
    return copy_renderers().render(context, timeout, priority, large=large)


def stop_renderer() -> None:
    global _renderers
    with _renderers_lock:
        if _renderers is not None:
            _renderers.stop()
            _renderers = None
