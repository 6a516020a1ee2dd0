"""Print-request deadlines: a watcher flow every minute, or a flow run scheduled at each deadline?

Both run the way `customs serve` runs them (a real local Prefect server, the deployments registered,
the clearance worker executing their runs, on a work pool of the benchmark's own). Print requests
are made with short deadlines (alert at `--alert` seconds, breach at `--due` seconds) a few seconds
apart; the benchmark prints how late each alert and breach was recorded after its stored time, for
each design.

    python bench/print_timer.py [-n 6] [--alert 70] [--due 100] [--port 4292]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def phase(design: str, args, api_url: str, registered: dict, settings) -> list[tuple[float, float]]:
    from sqlmodel import select

    from customs.core.db import transaction
    from customs.orchestration.timers import schedule_print_timers
    from customs.orchestration.worker import ClearanceWorker, WorkerThread
    from customs.services.printing import request_print
    from models.printing import PrintRequest

    name = "print-deadlines" if design == "watcher" else "print-deadline-timer"
    runner = WorkerThread(ClearanceWorker(registered[name], limit=4, poll_seconds=0.5))
    runner.start()
    ids = []
    for application_id in settings["applications"][design]:
        result = request_print(application_id)
        if design == "timer":
            schedule_print_timers(result.request_id, result.requested_at + timedelta(seconds=args.alert), result.due_at)
        ids.append(result.request_id)
        time.sleep(args.spacing)
    deadline = time.monotonic() + args.due + 150
    while time.monotonic() < deadline:
        with transaction() as session:
            done = session.exec(
                select(PrintRequest).where(PrintRequest.request_id.in_(ids), PrintRequest.breached_at.is_not(None))
            ).all()
        if len(done) == len(ids):
            break
        time.sleep(1)
    runner.stop(5)
    with transaction() as session:
        rows = session.exec(select(PrintRequest).where(PrintRequest.request_id.in_(ids))).all()
    return [
        (
            (r.alerted_at - r.alert_at).total_seconds() if r.alerted_at else float("nan"),
            (r.breached_at - r.due_at).total_seconds() if r.breached_at else float("nan"),
        )
        for r in rows
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=6)
    parser.add_argument("--alert", type=int, default=70)
    parser.add_argument("--due", type=int, default=100)
    parser.add_argument("--spacing", type=float, default=7.0)
    parser.add_argument("--port", type=int, default=4292)
    args = parser.parse_args()

    from customs.core.clock import utcnow
    from customs.core.db import init_db
    from customs.core.settings import Settings, configure
    from customs.orchestration.deployments import read_deployments, register_deployments
    from customs.orchestration.server import ensure_server, prefect_api, stop_server
    from customs.pki.testing import CmsSigner, TestPki
    from customs.services.intake import submit_declaration
    from customs.services.steps import check_signatures, register_declaration

    data = Path(tempfile.mkdtemp(prefix="customs-bench-print-"))
    pki = TestPki.create(data / "pki", now=utcnow() - timedelta(hours=1))
    settings = Settings(
        data_dir=data,
        trust_dir=pki.trust_dir,
        crl_dir=pki.crl_dir,
        prefect_port=args.port,
        print_deadline=timedelta(seconds=args.due),
        print_alert_after=timedelta(seconds=args.alert),
    )
    configure(settings)
    init_db(settings)
    issued = pki.issue(name="ТОО «Алатау Импорт»", bin="050840001233")
    signer = CmsSigner(issued.cert_path, issued.key_path, (pki.issuing_cert_path,))
    template = json.loads((ROOT / "samples" / "01-green-household-appliances.json").read_text(encoding="utf-8"))
    applications = {"watcher": [], "timer": []}
    for design in applications:
        for _ in range(args.n):
            template["documents"][0]["number"] = f"INV-{uuid.uuid4().hex[:12]}"
            content = json.dumps(template, ensure_ascii=False).encode()
            application_id = submit_declaration(content, signer.sign(content)).application_id
            check_signatures(application_id)
            register_declaration(application_id)
            applications[design].append(application_id)
    api_url = ensure_server(settings)
    try:
        with prefect_api(api_url):
            from prefect.client.orchestration import get_client

            from customs.orchestration.pool import ensure_pool, read_pool

            # one work pool per design, so that the watcher's schedule runs only in its phase
            registered = {}
            with get_client(sync_client=True) as client:
                for spec in read_deployments():
                    if spec.name in ("print-deadlines", "print-deadline-timer"):
                        pool = f"bench-{spec.name}-{uuid.uuid4().hex[:6]}"
                        ensure_pool(client, read_pool(name=pool))
                        register_deployments([spec], work_pool=pool)
                        registered[spec.name] = pool
            for design in ("watcher", "timer"):
                lateness = phase(design, args, api_url, registered, {"applications": applications})
                alerts = [a for a, _ in lateness]
                breaches = [b for _, b in lateness]
                what = (
                    "watcher every minute (print-deadlines)"
                    if design == "watcher"
                    else "a run scheduled at each deadline (print-deadline-timer)"
                )
                print(f"{what}: {len(lateness)} requests")
                for label, values in (("alert", alerts), ("breach", breaches)):
                    print(
                        f"  {label:<6} recorded late by: median {statistics.median(values):5.1f} s, "
                        f"max {max(values):5.1f} s, min {min(values):5.1f} s"
                    )
    finally:
        stop_server(settings)


if __name__ == "__main__":
    main()
