"""Paper copies: how long a request takes to record, how long its copy takes to render, and what rendering
costs the process that answers the API.

For declarations of 10, 100 and 999 goods items (and 999 items with 2,000-character descriptions, the
largest the schema accepts), prints:
- the request recorded (``request_print``): milliseconds, whatever the size, since nothing is rendered then;
- the copy rendered (``render_print_copy``: WeasyPrint in a process of its own): seconds, pages' bytes;
- the longest stall of this process while the copy renders: a thread that wakes every 5 ms records the
  largest gap between its wake-ups. Rendered in this process instead (``render_copy_pdf``, as before issue
  15), WeasyPrint holds the GIL and the gap is what a /v1/health request waits.

    python bench/paper_copy.py [--items 10 100 999] [--long] [--database-url URL]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class StallMeter:
    """The longest gap between wake-ups of a thread that sleeps 5 ms at a time."""

    def __init__(self):
        self.longest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        last = time.perf_counter()
        while not self._stop.is_set():
            time.sleep(0.005)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last - 0.005)
            last = now

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def document_with(items: int, description_chars: int | None) -> dict:
    document = json.loads((ROOT / "samples" / "01-green-household-appliances.json").read_text(encoding="utf-8"))
    document["documents"][0]["number"] = f"INV-BENCH-{items}-{description_chars}-{time.time_ns()}"
    item = document["goods"][0]
    goods = []
    for n in range(items):
        text = f"Товар {n + 1}: стиральная машина автоматическая, загрузка 7 кг, Қазақстан ӘҒҚҢӨҰҮҺІ. "
        if description_chars:
            text = (text * (description_chars // len(text) + 1))[:description_chars]
        goods.append({**item, "item_no": n + 1, "hs_code": f"{8450111100 + n * 1013:010d}", "description": text})
        goods[-1]["customs_value"] = f"{1000 + n}.00"
    document["goods"] = goods
    document["totals"]["items"] = items
    document["totals"]["customs_value"] = f"{sum(Decimal(g['customs_value']) for g in goods):.2f}"
    return document


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[10, 100, 999])
    parser.add_argument("--long", action="store_true", help="also 999 items with 2,000-character descriptions")
    parser.add_argument("--database-url")
    args = parser.parse_args()

    from datetime import timedelta

    from sqlmodel import select

    from customs.core.clock import utcnow
    from customs.core.db import init_db, transaction
    from customs.core.settings import Settings, configure
    from customs.notices.paper_copy import copy_context, render_copy_pdf, stop_renderer
    from customs.pki.testing import CmsSigner, TestPki
    from customs.services.intake import submit_declaration
    from customs.services.printing import render_print_copy, request_print
    from customs.services.steps import assign_lane, check_signatures, register_declaration, release_or_hold
    from models.declaration import Declaration

    work = Path(tempfile.mkdtemp(prefix="bench-copy-"))
    pki = TestPki.create(work / "pki", now=utcnow() - timedelta(hours=1))
    issued = pki.issue(name="ТОО «Алатау Импорт»", bin="050840001233", label="company")
    signer = CmsSigner(issued.cert_path, issued.key_path, (pki.issuing_cert_path,))
    settings = Settings(data_dir=work / "data", trust_dir=pki.trust_dir, crl_dir=pki.crl_dir, database_url=args.database_url)
    configure(settings)
    init_db(settings)

    cases = [(n, None) for n in args.items] + ([(999, 2000)] if args.long else [])
    print(f"{'goods items':>24} | request recorded | copy rendered apart | PDF bytes | stall apart | stall in-process")
    for items, chars in cases:
        content = json.dumps(document_with(items, chars), ensure_ascii=False).encode("utf-8")
        application_id = submit_declaration(content, signer.sign(content)).application_id
        for step in (check_signatures, register_declaration, assign_lane, release_or_hold):
            step(application_id)
        started = time.perf_counter()
        request = request_print(application_id)
        recorded_ms = (time.perf_counter() - started) * 1000
        with StallMeter() as apart:
            outcome = render_print_copy(request.request_id)
        with transaction() as session:
            declaration = session.exec(select(Declaration).where(Declaration.application_id == application_id)).one()
            context = copy_context(declaration, None, _reference(settings), request.request_id, request.requested_at)
        with StallMeter() as inside:
            render_copy_pdf(context)
        label = f"{items}" + (f" x {chars} chars" if chars else "")
        print(
            f"{label:>24} | {recorded_ms:13.0f} ms | {outcome.seconds:17.1f} s | {outcome.bytes:9,} | "
            f"{apart.longest * 1000:8.0f} ms | {inside.longest * 1000:13.0f} ms",
            flush=True,
        )
    stop_renderer()


def _reference(settings):
    from customs.core.reference import load_reference

    return load_reference(settings.reference_dir)


if __name__ == "__main__":
    main()
