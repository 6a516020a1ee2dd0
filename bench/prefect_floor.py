"""What a flow run costs Prefect itself, with no customs work in it: the floor under bench/pipeline.py.

Starts a Prefect server the way `customs serve` does (SQLite, or PostgreSQL with --db postgres),
registers deployments of empty flows (0 tasks, and --tasks more with that many empty tasks), creates
N runs of each from its deployment (as intake does) and executes them with the clearance worker
`customs serve` uses (ClearanceWorker in a thread of this process, on a work pool of its own). Prints,
per flow run: CPU seconds of the Prefect server, of this process (the client: creating runs, claiming
them, the engine) and of PostgreSQL, and the runs per second.

    python bench/prefect_floor.py [--db sqlite|postgres] [-n 200] [--tasks 5] [--concurrency 16]

Two cores' worth of CPU divided by the sum of the three is the most flow runs per second this design
can reach on this machine before a single customs rule runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
from cpu import PostgresCpu, tree_cpu
from prefect import flow, task

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@task(name="empty-step")
def empty_step(i: int) -> int:
    return i


@flow(name="floor-0-tasks", persist_result=False)
def floor_0(i: int = 0) -> int:
    return i


@flow(name="floor-with-tasks", persist_result=False)
def floor_tasks(i: int = 0, tasks: int = 5) -> int:
    for k in range(tasks):
        empty_step(k)
    return i


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args()

    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from customs.core.settings import Settings
    from customs.orchestration.deployments import DeploymentSpec, register_deployments
    from customs.orchestration.pool import ensure_pool, read_pool
    from customs.orchestration.server import ensure_server, prefect_api, stop_server
    from customs.orchestration.worker import ClearanceWorker, WorkerThread

    data = Path(tempfile.mkdtemp(prefix="customs-bench-floor-"))
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    prefect_db = None
    if args.db == "postgres":
        import sqlalchemy

        prefect_db = f"bench_floor_{uuid.uuid4().hex[:8]}"
        admin = sqlalchemy.create_engine(
            f"{args.postgres_url.replace('postgresql://', 'postgresql+psycopg://')}/postgres", isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f"CREATE DATABASE {prefect_db}"))
    settings = Settings(
        data_dir=data, prefect_port=port, prefect_database_url=f"{args.postgres_url}/{prefect_db}" if prefect_db else None
    )
    started = time.perf_counter()
    api_url = ensure_server(settings)
    server_pid = int((data / "prefect" / "server.pid").read_text())
    print(f"Prefect server ({args.db}) ready in {time.perf_counter() - started:.1f} s")
    try:
        with prefect_api(api_url):
            from prefect.client.orchestration import get_client

            pool = f"bench-floor-{uuid.uuid4().hex[:6]}"
            with get_client(sync_client=True) as client:
                ensure_pool(client, read_pool(name=pool))
                specs = [
                    DeploymentSpec("floor-0", "bench/prefect_floor.py:floor_0", "", (), {}, (), "clearance"),
                    DeploymentSpec(
                        "floor-tasks", "bench/prefect_floor.py:floor_tasks", "", (), {"tasks": args.tasks}, (), "clearance"
                    ),
                ]
                deployments = register_deployments(specs, work_pool=pool)
                runner = WorkerThread(ClearanceWorker(pool, limit=args.concurrency, poll_seconds=0.2))
                worker = runner.start()
                for name, label in (
                    ("floor-0", "empty flow, 0 tasks"),
                    ("floor-tasks", f"empty flow, {args.tasks} empty tasks"),
                ):
                    deployment_id, _ = deployments[name]
                    executed = worker.executed
                    cpu_server, cpu_client, postgres = tree_cpu(server_pid), time.process_time(), PostgresCpu()
                    t0 = time.perf_counter()
                    for i in range(args.n):
                        client.create_flow_run_from_deployment(deployment_id, parameters={"i": i}, name=f"{name}-{i}")
                    while worker.executed - executed < args.n:
                        time.sleep(0.5)
                        postgres.sample()
                    wall = time.perf_counter() - t0
                    server = tree_cpu(server_pid) - cpu_server
                    own = time.process_time() - cpu_client
                    pg = postgres.used() if args.db == "postgres" else 0.0
                    machine = server + own + pg
                    per = lambda v: v / args.n * 1000  # noqa: E731
                    print(
                        f"{label}: {args.n} runs in {wall:.1f} s = {args.n / wall:.1f} runs/s; CPU per run: "
                        f"server {per(server):.0f} ms, client {per(own):.0f} ms, PostgreSQL {per(pg):.0f} ms, "
                        f"together {per(machine):.0f} ms -> "
                        f"at most {psutil.cpu_count() / (machine / args.n):.1f} runs/s on {psutil.cpu_count()} cores"
                    )
                runner.stop(30)
            from prefect.logging.handlers import APILogHandler

            APILogHandler.flush()  # the runs' last logs, before the server stops
    finally:
        stop_server(settings)
        if prefect_db:
            with admin.connect() as connection:
                connection.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {prefect_db} WITH (FORCE)"))


if __name__ == "__main__":
    main()
