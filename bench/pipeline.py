"""The whole pipeline as it runs for real: `customs serve` in its own process, declarations submitted
through the HTTP API, each cleared as its own flow run of the `clearance` deployment.

Prints throughput, latency per step and end to end (p50/p95/p99, from the API's 202 to the release
notice in the outbox), CPU of the Prefect server and of the serving process, their memory, and the
same work done without orchestration (the steps called directly) in the same run, so the ratio of
orchestrated to bare throughput is printed. It checks at the end that every declaration reached its
final state exactly once (one registration number, one release notice).

    python bench/pipeline.py [--db sqlite|postgres] [-n 200] [--rate 0] [--concurrency 16] [--mix] [--minutes M]
                             [--workers N] [--ha]

--rate 0 submits as fast as the API takes them (16 submitting threads); --rate R submits R per second.
--mix adds yellow and red lanes (they end waiting for an official: their runs suspend).
--workers N runs `customs serve --no-worker` (intake, pool, deployments) and N `customs worker` processes
on the pool (0: the worker inside customs serve). --ha starts the Prefect server in its high-availability
shape (two API processes, a services process, PostgreSQL, Redis; needs --db postgres); the serving process
and the workers are spread over its two APIs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import psutil
from cpu import PostgresCpu, tree, tree_cpu

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HS_CODES = ["8450111100", "8418102001", "8516500000", "8509400000", "9403200000", "3926909709", "6403999600", "8528721000"]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def pct(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(int(round(share * len(ordered) + 0.5)) - 1, 0)] if ordered else float("nan")


def declarations(n: int, mix: bool, signer) -> list[tuple[bytes, bytes, list]]:
    """Realistic documents: 1-5 goods items of varied HS codes, two signed attachments each; --mix adds yellow and red lanes."""
    rng = random.Random(7)
    base = json.loads((ROOT / "samples" / "01-green-household-appliances.json").read_text(encoding="utf-8"))
    yellow = json.loads((ROOT / "samples" / "02-yellow-laptops-from-cn.json").read_text(encoding="utf-8"))
    red = json.loads((ROOT / "samples" / "04-red-wine.json").read_text(encoding="utf-8"))
    invoice, contract = b"%PDF-1.4 invoice " * 2000, b"%PDF-1.4 contract " * 1000
    attachments = [("invoice.pdf", invoice, signer.sign(invoice)), ("contract.pdf", contract, signer.sign(contract))]
    out = []
    for _ in range(n):
        roll = rng.random()
        if mix and roll < 0.15:
            document = json.loads(json.dumps(yellow))
            document["declarant"] = dict(
                base["declarant"]
            )  # the sample's own declarant is a person; the benchmark signs for the company
        elif mix and roll < 0.2:
            document = json.loads(json.dumps(red))
        else:
            document = json.loads(json.dumps(base))
            items = rng.randint(1, 5)
            item = document["goods"][0]
            document["goods"] = [
                {
                    **item,
                    "item_no": k + 1,
                    "hs_code": rng.choice(HS_CODES),
                    "customs_value": f"{rng.randint(100_000, 900_000)}.00",
                }
                for k in range(items)
            ]
            document["totals"]["items"] = items
            document["totals"]["customs_value"] = f"{sum(int(g['customs_value'][:-3]) for g in document['goods'])}.00"
        document["documents"][0]["number"] = f"INV-{uuid.uuid4().hex[:12]}"
        content = json.dumps(document, ensure_ascii=False).encode()
        out.append((content, signer.sign(content), attachments))
    return out


class Meter:
    """CPU seconds and resident memory of groups of process trees, sampled every second."""

    def __init__(self, pids: dict[str, list[int]]):
        self.procs = {name: [psutil.Process(pid) for pid in group] for name, group in pids.items()}
        self.peak_rss = dict.fromkeys(pids, 0)
        self.stop = threading.Event()
        self.cpu0 = self.cpu()
        self.postgres = PostgresCpu()

    def _others(self, name) -> frozenset[int]:
        return frozenset(p.pid for other, group in self.procs.items() if other != name for p in group)

    def tree(self, name):
        return [p for proc in self.procs[name] for p in tree(proc.pid, self._others(name))]

    def cpu(self) -> dict[str, float]:
        return {name: sum(tree_cpu(proc.pid, self._others(name)) for proc in group) for name, group in self.procs.items()}

    def run(self):
        while not self.stop.wait(1.0):
            self.postgres.sample()
            for name in self.procs:
                rss = 0
                for p in self.tree(name):
                    try:
                        rss += p.memory_info().rss
                    except psutil.NoSuchProcess:
                        pass
                self.peak_rss[name] = max(self.peak_rss[name], rss)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--mix", action="store_true")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--bare", type=int, default=100, help="declarations for the run without orchestration")
    parser.add_argument(
        "--workers", type=int, default=0, help="customs worker processes on the pool (0: the one in customs serve)"
    )
    parser.add_argument("--ha", action="store_true", help="the high-availability Prefect server (needs --db postgres)")
    parser.add_argument(
        "--minutes",
        type=float,
        default=0.0,
        help="with --rate: submit for this long (n = rate x minutes), e.g. the 10-minute memory run",
    )
    args = parser.parse_args()
    if args.ha and args.db != "postgres":
        parser.error("--ha needs --db postgres (Prefect's high-availability shape runs on PostgreSQL)")
    if args.minutes:
        if args.rate <= 0:
            parser.error("--minutes needs --rate")
        args.n = int(args.rate * args.minutes * 60)

    from customs.core.clock import utcnow
    from customs.pki.testing import CmsSigner, TestPki

    data = Path(tempfile.mkdtemp(prefix="customs-bench-pipeline-"))
    pki = TestPki.create(data / "pki", now=utcnow() - timedelta(hours=1))
    issued = pki.issue(name="ТОО «Алатау Импорт»", bin="050840001233")
    signer = CmsSigner(issued.cert_path, issued.key_path, (pki.issuing_cert_path,))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "CUSTOMS_"))}
    env.update(
        CUSTOMS_DATA_DIR=str(data / "data"),
        CUSTOMS_TRUST_DIR=str(pki.trust_dir),
        CUSTOMS_CRL_DIR=str(pki.crl_dir),
        CUSTOMS_PREFECT_PORT=str(free_port()),
        CUSTOMS_API_PORT=str(free_port()),
        CUSTOMS_WORKER_CONCURRENCY=str(args.concurrency),
        CUSTOMS_WORKER_POLL_SECONDS="0.2",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    cleanup_sql = []
    if args.db == "postgres":
        import sqlalchemy

        suffix = uuid.uuid4().hex[:8]
        admin = sqlalchemy.create_engine(
            f"{args.postgres_url.replace('postgresql://', 'postgresql+psycopg://')}/postgres", isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as connection:
            for db in (f"bench_app_{suffix}", f"bench_prefect_{suffix}"):
                connection.execute(sqlalchemy.text(f"CREATE DATABASE {db}"))
                cleanup_sql.append(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        env.update(
            CUSTOMS_DATABASE_URL=f"{args.postgres_url}/bench_app_{suffix}",
            CUSTOMS_PREFECT_DATABASE_URL=f"{args.postgres_url}/bench_prefect_{suffix}",
        )
    api = f"http://127.0.0.1:{env['CUSTOMS_API_PORT']}"
    log = open(data / "serve.log", "wb")
    started = time.perf_counter()
    api_urls = [f"http://127.0.0.1:{env['CUSTOMS_PREFECT_PORT']}/api"]
    if args.ha:
        ports = [free_port(), free_port()]
        env.update(
            CUSTOMS_PREFECT_HA_PORTS=json.dumps(ports), CUSTOMS_REDIS_URL=f"redis://127.0.0.1:6379/{random.randint(8, 15)}"
        )
        subprocess.run([str(BIN / "customs"), "server", "start", "--ha"], env=env, cwd=ROOT, check=True, capture_output=True)
        api_urls = [f"http://127.0.0.1:{port}/api" for port in ports]
        env["CUSTOMS_PREFECT_API_URL"] = api_urls[0]
    serve = subprocess.Popen(
        [str(BIN / "customs"), "serve", *(["--no-worker"] if args.workers else [])],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    workers = []
    try:
        while True:
            try:
                if httpx.get(f"{api}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if serve.poll() is not None or time.perf_counter() - started > 180:
                raise SystemExit(f"customs serve did not start; see {data / 'serve.log'}")
            time.sleep(0.5)
        for index in range(args.workers):
            worker_env = env | {"CUSTOMS_PREFECT_API_URL": api_urls[(index + 1) % len(api_urls)]}
            workers.append(
                subprocess.Popen(
                    [str(BIN / "customs"), "worker", "--name", f"bench-{index + 1}"],
                    env=worker_env,
                    cwd=ROOT,
                    stdout=open(data / f"worker-{index + 1}.log", "wb"),
                    stderr=subprocess.STDOUT,
                )
            )
        if workers:
            time.sleep(8)  # the workers connect and poll
        print(
            f"customs serve ready in {time.perf_counter() - started:.1f} s "
            f"({args.db}{', high-availability Prefect' if args.ha else ''}; "
            f"{f'{args.workers} worker processes' if args.workers else 'the worker in customs serve'}, "
            f"each running {args.concurrency} at once); data in {data}"
        )
        added = subprocess.run(
            [str(BIN / "customs"), "clients", "add", "bench", "--kind", "declarant", "--id", "050840001233"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        token = next(line.split()[-1] for line in added.stdout.splitlines() if line.startswith("token:"))
        work = declarations(args.n, args.mix, signer)
        prefect_home = data / "data" / "prefect"
        server_pids = (
            [int(f.read_text()) for f in sorted((prefect_home / "ha").glob("*.pid"))]
            if args.ha
            else [int((prefect_home / "server.pid").read_text())]
        )
        groups = {"prefect server": server_pids, "customs serve": [serve.pid]}
        if workers:
            groups["workers"] = [w.pid for w in workers]
        meter = Meter(groups)
        threading.Thread(target=meter.run, daemon=True).start()

        accepted: dict[str, float] = {}
        failures: list[str] = []
        lock = threading.Lock()
        http = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60)

        def submit(item):
            content, signature, attachments = item
            files = [("declaration", ("declaration.json", content)), ("signature", ("declaration.json.p7s", signature))]
            for name, data_, sig in attachments:
                files += [("attachments", (name, data_)), ("attachment_signatures", (name + ".p7s", sig))]
            try:
                response = http.post(f"{api}/v1/declarations", files=files)
            except httpx.HTTPError as exc:
                with lock:
                    failures.append(f"{type(exc).__name__}: {exc}")
                return
            with lock:
                if response.status_code == 202:
                    accepted[response.json()["application_id"]] = time.time()
                else:
                    failures.append(f"{response.status_code}: {response.text[:200]}")

        t0 = time.time()
        with ThreadPoolExecutor(max_workers=16 if args.rate <= 0 else 8) as pool:
            futures = []
            for i, item in enumerate(work):
                if args.rate > 0:
                    time.sleep(max(0.0, t0 + i / args.rate - time.time()))
                futures.append(pool.submit(submit, item))
            for future in futures:
                future.result()
        submitted_in = time.time() - t0

        from sqlalchemy import create_engine, text

        app_url = env.get("CUSTOMS_DATABASE_URL", f"sqlite:///{data / 'data' / 'customs.db'}").replace(
            "postgresql://", "postgresql+psycopg://"
        )
        engine = create_engine(app_url)
        final = ("released", "awaiting_official", "registration_refused", "release_refused")
        final_sql = tuple(f.upper() for f in final)  # SQLAlchemy stores the enum's names
        deadline = time.time() + 600
        while time.time() < deadline:
            with engine.connect() as connection:
                done = connection.execute(text(f"SELECT count(*) FROM declaration WHERE status IN {final_sql}")).scalar()
            if done >= len(accepted):
                break
            time.sleep(0.5)
        finished = time.time()
        meter.stop.set()
        cpu = meter.cpu()
        postgres = meter.postgres.used()
        with engine.connect() as connection:
            events = connection.execute(
                text("SELECT application_id, to_status, at FROM audit_event WHERE event = 'transition'")
            ).all()
            notices = connection.execute(text("SELECT application_id, kind, created_at FROM notice")).all()
            numbers = connection.execute(text("SELECT application_id, registration_number, status FROM declaration")).all()
        engine.dispose()
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGINT)
        for worker in workers:
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
        if serve.poll() is None:
            serve.send_signal(signal.SIGINT)
            try:
                serve.wait(60)
            except subprocess.TimeoutExpired:
                serve.kill()
        subprocess.run([str(BIN / "customs"), "server", "stop"], env=env, cwd=ROOT, capture_output=True)
        if args.ha:
            import redis

            redis.Redis.from_url(env["CUSTOMS_REDIS_URL"]).flushdb()
        log.close()

    def ts(value) -> float:
        if isinstance(value, str):
            from datetime import datetime

            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            from datetime import UTC

            value = value.replace(tzinfo=UTC)
        return value.timestamp()

    at: dict[str, dict[str, float]] = {}
    for application_id, to_status, moment in events:
        at.setdefault(application_id, {})[str(to_status).lower()] = ts(moment)
    notices = [(a, str(k).lower(), c) for a, k, c in notices]
    release_notice = {a: ts(c) for a, k, c in notices if k == "release"}
    statuses = {a: str(s).lower() for a, _, s in numbers}
    ours = list(accepted)
    end_to_end = [release_notice[a] - accepted[a] for a in ours if a in release_notice]
    steps = {
        "202 -> signatures checked": ("submitted", "signatures_checked"),
        "signatures -> registered": ("signatures_checked", "registered"),
        "registered -> lane": ("registered", "lane_assigned"),
        "lane -> released": ("lane_assigned", "released"),
    }
    first = min(accepted.values())
    span = finished - first
    if failures:
        print(f"{len(failures)} submissions failed, e.g. {failures[0]}")
    print(
        f"\n{len(ours)} declarations submitted in {submitted_in:.1f} s ({len(ours) / submitted_in:.1f}/s offered); "
        f"all final after {span:.1f} s"
    )
    print(f"throughput: {len(ours) / span:.2f} declarations/s (submission of the first to the final state of the last)")
    print("final states: " + ", ".join(f"{s} {sum(1 for a in ours if statuses.get(a) == s)}" for s in final))
    if end_to_end:
        print(
            f"202 -> release notice in the outbox: p50 {pct(end_to_end, 0.5):.2f} s, p95 {pct(end_to_end, 0.95):.2f} s, "
            f"p99 {pct(end_to_end, 0.99):.2f} s"
            f" ({len(end_to_end)} released)"
        )
    waits = [at[a]["signatures_checked"] - accepted[a] for a in ours if "signatures_checked" in at.get(a, {})]
    if waits:
        print(f"  202 -> first step done: p50 {pct(waits, 0.5):.2f} s, p95 {pct(waits, 0.95):.2f} s")
    for label, (a_, b_) in list(steps.items())[1:]:
        values = [at[a][b_] - at[a][a_] for a in ours if a_ in at.get(a, {}) and b_ in at.get(a, {})]
        if values:
            print(f"  {label}: p50 {pct(values, 0.5) * 1000:.0f} ms, p95 {pct(values, 0.95) * 1000:.0f} ms")
    measured = 0.0
    for name in meter.procs:
        used = cpu[name] - meter.cpu0[name]
        measured += used
        print(
            f"{name}: {used:.1f} CPU s ({used / span * 100:.0f}% of one core, {used / len(ours) * 1000:.0f} ms per declaration), "
            f"peak resident {meter.peak_rss[name] / 2**20:.0f} MiB"
        )
    if args.db == "postgres":
        print(
            f"PostgreSQL (application and Prefect databases): {postgres:.1f} CPU s "
            f"({postgres / len(ours) * 1000:.0f} ms per declaration)"
        )
        measured += postgres
    print(
        f"serving side together: {measured / len(ours) * 1000:.0f} ms of CPU per declaration "
        f"({measured / span * 100:.0f}% of one core; the machine has {psutil.cpu_count()})"
    )
    print(f"together: peak resident {sum(meter.peak_rss.values()) / 2**20:.0f} MiB")
    registrations = [n for a, n, _ in numbers if a in accepted and n]
    lost = [a for a in ours if statuses.get(a) not in final]
    doubled = len(registrations) - len(set(registrations))
    releases = [a for a, k, _ in notices if k == "release"]
    print(
        f"check: {len(lost)} not final, {doubled} duplicate registration numbers, "
        f"{len(releases) - len(set(releases))} declarations with more than one release notice"
    )

    bare(args, pki, signer, work[: args.bare], len(ours) / span)
    if cleanup_sql:
        with admin.connect() as connection:
            for statement in cleanup_sql:
                connection.execute(sqlalchemy.text(statement))


def bare(args, pki, signer, work, orchestrated: float) -> None:
    """The same steps called directly, one after the other, on a fresh database of the same kind."""
    from customs.core.db import dispose_engines, init_db
    from customs.core.settings import Settings, configure
    from customs.services.intake import IncomingAttachment, submit_declaration
    from customs.services.outbox import dispatch_due_sync
    from customs.services.steps import assign_lane, check_signatures, register_declaration, release_or_hold

    data = Path(tempfile.mkdtemp(prefix="customs-bench-bare-"))
    url = None
    if args.db == "postgres":
        import sqlalchemy

        schema = f"bench_bare_{uuid.uuid4().hex[:8]}"
        admin = sqlalchemy.create_engine(f"{args.postgres_url.replace('postgresql://', 'postgresql+psycopg://')}/test")
        with admin.begin() as connection:
            connection.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
        url = f"{args.postgres_url}/test?options=-csearch_path%3D{schema}"
    settings = Settings(data_dir=data, trust_dir=pki.trust_dir, crl_dir=pki.crl_dir, database_url=url)
    configure(settings)
    init_db(settings)
    started = time.perf_counter()
    for content, signature, attachments in work:
        application_id = submit_declaration(
            content, signature, [IncomingAttachment(n, d, s) for n, d, s in attachments]
        ).application_id
        check_signatures(application_id)
        if register_declaration(application_id).status == "registered":
            assign_lane(application_id)
            release_or_hold(application_id)
        dispatch_due_sync(application_id=application_id)
    elapsed = time.perf_counter() - started
    configure(None)
    dispose_engines()
    if url:
        with admin.begin() as connection:
            connection.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
    rate = len(work) / elapsed
    print(
        f"without orchestration (same steps, same database kind, one at a time): {rate:.1f} declarations/s; "
        f"orchestrated/bare = {orchestrated / rate:.2f}"
    )


if __name__ == "__main__":
    main()
