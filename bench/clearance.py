"""The whole pipeline: N signed green-lane declarations (two signed attachments each) submitted and
cleared, one Prefect flow run each, against a real local Prefect server (SQLite, as `make run` uses).

Prints throughput and the p50/p95 time from submission (intake fixes the time) to release.

    python bench/clearance.py [-n 200] [--workers 1] [--port 4290] [--database-url URL]
"""

from __future__ import annotations

import argparse
import contextvars
import json
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1, help="declarations cleared at once (threads in this process)")
    parser.add_argument("--port", type=int, default=4290)
    parser.add_argument("--database-url", default=None, help="application database (default: SQLite in a temporary directory)")
    args = parser.parse_args()

    from customs.core.db import init_db
    from customs.core.settings import Settings, configure
    from customs.orchestration.server import ensure_server, prefect_api, stop_server
    from customs.pki.testing import CmsSigner, TestPki
    from customs.services.intake import IncomingAttachment, submit_declaration
    from flows.clearance import clearance

    data = Path(tempfile.mkdtemp(prefix="customs-bench-"))
    pki = TestPki.create(data / "pki")
    settings = Settings(
        data_dir=data, trust_dir=pki.trust_dir, crl_dir=pki.crl_dir, prefect_port=args.port, database_url=args.database_url
    )
    configure(settings)
    init_db(settings)
    issued = pki.issue(name="ТОО «Алатау Импорт»", bin="050840001233")
    signer = CmsSigner(issued.cert_path, issued.key_path, (pki.issuing_cert_path,))
    template = json.loads((ROOT / "samples" / "01-green-household-appliances.json").read_text(encoding="utf-8"))
    invoice, contract = b"%PDF-1.4 invoice " * 2000, b"%PDF-1.4 contract " * 1000
    attachments = [
        IncomingAttachment("invoice.pdf", invoice, signer.sign(invoice)),
        IncomingAttachment("contract.pdf", contract, signer.sign(contract)),
    ]
    payloads = []
    for _ in range(args.n):
        template["documents"][0]["number"] = f"INV-{uuid.uuid4().hex[:12]}"
        content = json.dumps(template, ensure_ascii=False).encode()
        payloads.append((content, signer.sign(content)))

    started = time.monotonic()
    api_url = ensure_server(settings)
    print(f"Prefect server ready in {time.monotonic() - started:.1f} s at {api_url}; data in {data}")

    def one(payload) -> tuple[float, str]:
        content, signature = payload
        t0 = time.perf_counter()
        submission = submit_declaration(content, signature, attachments)
        result = clearance(submission.application_id)
        return time.perf_counter() - t0, result["status"]

    try:
        with prefect_api(api_url):
            one(payloads[0])  # warm-up (imports, first flow registration), not counted
            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.workers) as pool:
                # each thread runs in a copy of this context, so it sees the Prefect API chosen above
                futures = [pool.submit(contextvars.copy_context().run, one, payload) for payload in payloads[1:]]
                results = [f.result() for f in futures]
            elapsed = time.perf_counter() - t0
    finally:
        stop_server(settings)
    latencies = sorted(r[0] for r in results)
    statuses = {s: sum(1 for r in results if r[1] == s) for s in {r[1] for r in results}}

    def p(q):
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    print(
        f"declarations: {len(results)} ({statuses}), workers: {args.workers}, database: {settings.sqlalchemy_url.split('://')[0]}"
    )
    print(f"throughput:   {len(results) / elapsed:.2f} declarations/s ({elapsed:.1f} s)")
    print(f"submission -> release: p50 {statistics.median(latencies):.3f} s, p95 {p(0.95):.3f} s, max {latencies[-1]:.3f} s")


if __name__ == "__main__":
    main()
