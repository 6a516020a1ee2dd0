"""The paper copy of an electronic declaration: a Jinja2 HTML template (templates/print/) rendered to PDF
by WeasyPrint with an embedded DejaVu font (Cyrillic and the Kazakh letters Ә Ғ Қ Ң Ө Ұ Ү Һ І)."""

from __future__ import annotations

import atexit
import base64
import io
import itertools
import json
import logging
import multiprocessing
import multiprocessing.pool
import threading
from datetime import datetime
from string import hexdigits
from typing import Any
from urllib.parse import urlencode

from customs.core.clock import kz_display
from customs.core.paths import TEMPLATES_DIR
from customs.core.settings import get_settings
from customs.notices.render import template_environment
from customs.rules.printing import WaitingCopy, next_to_render
from customs.rules.signers import LEGAL_ENTITY
from models.declaration import Declaration, ReleaseMark
from models.reference import ReferenceData

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


def copy_context(
    declaration: Declaration,
    mark: ReleaseMark | None,
    reference: ReferenceData,
    request_id: str,
    requested_at: datetime,
    *,
    public_url: str = "http://127.0.0.1:8080",
    signed_by: str | None = None,
) -> dict[str, Any]:
    """``signed_by``: the service certificate that will sign the copy (``None``: it goes out unsigned, and says so)."""
    document = json.loads(declaration.content.decode("utf-8-sig"))
    office = reference.offices.get(declaration.customs_office or "")
    url = check_url(public_url, declaration.registration_number or "", declaration.content_sha256)
    authority = reference.authority
    return {
        "check_url": url,
        "check_base": url.partition("?")[0],
        "check_qr": qr_data_uri(url),
        "signed_by": signed_by,
        "authority_name": authority.name if authority else "",
        "authority_bin": authority.bin if authority else "",
        "d": document,
        "request_id": request_id,
        "requested_at_kz": kz_display(requested_at),
        "application_id": declaration.application_id,
        "registration_number": declaration.registration_number,
        "office_name": office.name if office else "",
        "zone": declaration.zone,
        "channel": declaration.channel,
        "status": str(declaration.status),
        "submitted_at_kz": kz_display(declaration.submitted_at),
        "registered_at_kz": kz_display(declaration.registered_at),
        "decision_code": declaration.decision_code,
        "decided_at_kz": kz_display(declaration.decided_at) if declaration.decided_at else "",
        "decided_by": declaration.decided_by,
        "mark": None
        if mark is None
        else {
            "affixed_at_kz": kz_display(mark.affixed_at) if mark.affixed_at else "",
            "affixed_by": mark.affixed_by,
            "zone": mark.zone,
            "withdrawn": mark.withdrawn_at is not None,
        },
        "sha256": declaration.content_sha256,
        "signers": [readable_signer(s) for s in declaration.signers or []],
    }


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


def readable_signer(summary: dict[str, Any]) -> dict[str, Any]:
    """A signer of the copy as people name them: the holder's full name (NCA writes surname and name in CN,
    the patronymic in G), the organisation (O), IIN and BIN, the NCA roles, the certificate's serial and its key's
    algorithm (ГОСТ 34.310-2004, RSA 2048, ...)."""
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
        "serial": who.get("serial") or "",
        "algorithm": (who.get("algorithm") or "").replace("GOST", "ГОСТ").replace("bits", "бит"),
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
