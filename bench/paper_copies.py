"""Paper copies asked at once: does each one come within its 30 minutes, whatever the others asked for?

Issue 25 part 7: with one renderer a 1-item copy was ready 8.6 minutes after its request, behind four 999-item copies.
This asks for 4 large copies (999 goods items; --long: with 2,000-character descriptions, the largest the schema
accepts) and then 20 small ones (1 item) at the same moment, renders each in a thread of its own as the worker's
paper-copy runs do (``render_print_copy``: the renderer processes of customs.notices.paper_copy, in their order), and
prints per copy the time from request to ready against its deadline, and whether every copy was ready in time.

    python bench/paper_copies.py [--large 4] [--small 20] [--long] [--processes 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from paper_copy import document_with  # noqa: E402  (the 999-item declarations of bench/paper_copy.py)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=4)
    parser.add_argument("--small", type=int, default=20)
    parser.add_argument("--long", action="store_true", help="large copies with 2,000-character descriptions")
    parser.add_argument("--processes", type=int, default=None, help="CUSTOMS_PRINT_RENDER_PROCESSES (default: the setting's)")
    args = parser.parse_args()

    from sqlmodel import select

    from customs.core.clock import utcnow
    from customs.core.db import init_db, transaction
    from customs.core.settings import Settings, configure
    from customs.notices.paper_copy import stop_renderer
    from customs.pki.testing import CmsSigner, TestPki
    from customs.services.intake import submit_declaration
    from customs.services.printing import render_print_copy, request_print
    from customs.services.steps import assign_lane, check_signatures, register_declaration, release_or_hold
    from models.printing import PrintRequest

    work = Path(tempfile.mkdtemp(prefix="bench-copies-"))
    pki = TestPki.create(work / "pki", now=utcnow() - timedelta(hours=1))
    issued = pki.issue(name="ТОО «Алатау Импорт»", bin="050840001233", label="company")
    signer = CmsSigner(issued.cert_path, issued.key_path, (pki.issuing_cert_path,))
    extra = {"print_render_processes": args.processes} if args.processes else {}
    settings = Settings(data_dir=work / "data", trust_dir=pki.trust_dir, crl_dir=pki.crl_dir, **extra)
    configure(settings)
    init_db(settings)

    sizes = [(999, 2000 if args.long else None)] * args.large + [(1, None)] * args.small
    declarations = []
    for items, chars in sizes:
        content = json.dumps(document_with(items, chars), ensure_ascii=False).encode("utf-8")
        application_id = submit_declaration(content, signer.sign(content)).application_id
        for step in (check_signatures, register_declaration, assign_lane, release_or_hold):
            step(application_id)
        declarations.append((application_id, items))

    print(
        f"{args.large} copies of 999 items{' x 2,000 chars' if args.long else ''} and {args.small} of 1 item, asked at once; "
        f"{settings.print_render_processes} renderer processes",
        flush=True,
    )
    started = time.perf_counter()
    requests = [(request_print(application_id), items) for application_id, items in declarations]  # the large ones first
    threads = [threading.Thread(target=render_print_copy, args=(r.request_id,)) for r, _ in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    stop_renderer()

    with transaction() as session:
        rows = {r.request_id: r for r in session.exec(select(PrintRequest))}
    print(f"{'request':>18} | items | ready after | rendering | deadline | in time")
    late = 0
    for result, items in requests:
        row = rows[result.request_id]
        ready = (row.rendered_at - row.requested_at).total_seconds() if row.rendered_at else None
        deadline = (row.due_at - row.requested_at).total_seconds()
        in_time = ready is not None and ready < deadline
        late += not in_time
        shown = f"{ready:9.1f} s" if ready is not None else "not ready"
        print(
            f"{result.request_id:>18} | {items:5} | {shown:>11} | {row.render_seconds or 0:7.1f} s "
            f"| {deadline / 60:5.0f} min | {'yes' if in_time else 'NO'}"
        )
    small = [(rows[r.request_id].rendered_at - rows[r.request_id].requested_at).total_seconds() for r, n in requests if n == 1]
    large = [(rows[r.request_id].rendered_at - rows[r.request_id].requested_at).total_seconds() for r, n in requests if n > 1]
    print(
        f"small copies ready after {min(small):.1f}-{max(small):.1f} s; large after {min(large):.1f}-{max(large):.1f} s; "
        f"all {len(requests)} in {wall:.1f} s"
    )
    print("every copy ready before its deadline" if not late else f"{late} copies NOT ready before their deadline")
    sys.exit(1 if late else 0)


if __name__ == "__main__":
    main()
