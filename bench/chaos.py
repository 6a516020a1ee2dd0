"""Fault injection (issue 18): `customs serve` under load while its parts fail, and what it keeps.

Each scenario starts `customs serve` in its own process (its own data directory and ports; the application
database on a private PostgreSQL cluster this suite creates with initdb on a free port, never the machine's
shared server; Prefect's own database in a second private cluster that no scenario stops, or with
``--prefect-db sqlite`` its embedded SQLite), submits N signed green declarations through the HTTP API at a
steady rate from several client threads, probes /v1/health and /v1/health/ready every 0.25 s, injects one
fault mid-stream, ends it after its duration, and waits until every declaration is final. Nothing else is
done: no person acts (for serve-kill the suite starts `customs serve` again, as a service manager would).

    python bench/chaos.py [--only NAME[,NAME...]] [-n 60] [--prefect-db postgres|sqlite] [--keep] [--list]

Scenarios (``--only`` takes names or prefixes, e.g. ``serve-kill``):

- ``prefect-kill``: kill -9 of the Prefect server's process group (DATA/prefect/server.pid); serve's
  supervisor restarts it;
- ``serve-kill-<step>``: `customs serve` killed with SIGKILL while every clearance run is held at the start
  of <step>, and started again 5 s later (without the hook); steps signature_check, registration,
  risk_assessment, release, notices;
- ``db-30s``, ``db-120s``: the application's PostgreSQL stopped (pg_ctl stop -m immediate) and started again;
- ``smtp-down``, ``smtp-4xx``, ``smtp-hang`` (60 s each): the SMTP server (aiosmtpd in this process) stopped,
  answering 451 to RCPT and DATA, or replaced on its port by a socket that accepts and never answers;
- ``disk-full`` (60 s, no SMTP: notices are .eml files): the outbox folder on a tmpfs of its own, filled to
  the last byte, then enlarged with ``mount -o remount,size=``;
- ``prefect-db-lost``: kill -9 of the Prefect server, its database dropped and created again empty (with
  ``--prefect-db sqlite``: its file deleted); the supervisor restarts it on the empty database;
- ``zombie-worker``: a second ``customs worker`` process beside serve's worker, stopped with SIGSTOP while it
  holds runs at the start of registration (``--zombie-seconds``, 180), then SIGCONT; besides the suite's
  invariants: its runs crashed and were completed by the other worker, no run has a state after Completed
  (Prefect's state history of each run), one operations alert per crashed or failed attempt;
- ``redis-down`` (30 s, needs ``--prefect-db postgres``): Prefect in its high-availability shape (`customs server
  start --ha`, two API processes and a services process) with a private redis-server of the scenario, killed and
  started again empty; besides: /v1/health/ready never says ready within 0.5 s of a Prefect call (a worker's poll,
  a read of flow runs) answered 5xx or not at all, one alert per crashed or failed attempt;
- ``restore``: ``customs backup create`` 25 s in with the runs held at the start of release (let go once the
  backup is written: registered in it, released after it), 30 s more clearing, serve stopped (Ctrl-C),
  ``customs backup restore``, serve started again; besides (the declarations accepted after the backup are lost
  by design): no registration number held by two declarations (the database before and after, every number in a
  message the SMTP server received), no Message-ID received twice, the restore report lists exactly the
  declarations accepted after the backup that the database lacks; gaps only where a lost declaration's number was.

Runs are held at a step by the test-only hook of flows/clearance.py (CUSTOMS_TEST_PAUSE_AT_STEP, and
CUSTOMS_TEST_PAUSE_WHILE: while a file exists). For prefect-kill and the db scenarios every run is held at the
start of registration until the fault begins, then let go all at once, so that a dozen clearances meet the
fault mid-way (at the steady rate alone hardly one would).

After each: the invariants (every accepted declaration released exactly once; registration numbers unique
and gapless per office and day; exactly one release notice per declaration, sent once, received once: by
Message-ID and message SHA-256 at the SMTP server, or the .eml file; `customs audit verify` passes; every
clearance run ended Completed in Prefect; no run left for a person) and the figures (intake latency and
/v1/health latency during the fault, readiness states, time from the end of the fault until every
declaration is final). A table is printed and the results are written to bench/results/chaos-<time>.json.
Needs root for the tmpfs (disk-full); PostgreSQL runs as the ``postgres`` user when run as root.
"""

from __future__ import annotations

import argparse
import contextlib
import email
import hashlib
import heapq
import json
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CUSTOMS = str(BIN / "customs")
RESULTS = ROOT / "bench" / "results"
DECLARANT_BIN = "050840001233"
STEPS = ("signature_check", "registration", "risk_assessment", "release", "notices")
FINAL = ("released", "registration_refused", "release_refused", "release_cancelled")
TARGET_RECOVERY_S = 120.0
TARGET_INTAKE_P99_S = 1.0
TARGET_HEALTH_S = 1.0
REGISTRATION_NUMBER = re.compile(r"\b\d{5,8}/\d{6}/\d{4,8}\b")  # office/DDMMYY/serial (customs.rules.registration)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def pct(values: list[float], share: float) -> float | None:
    ordered = sorted(values)
    return ordered[max(int(round(share * len(ordered) + 0.5)) - 1, 0)] if ordered else None


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


# ----------------------------------------------------------------------------------------------
# Scenarios


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: str  # prefect-kill | serve-kill | db | smtp-down | smtp-4xx | smtp-hang | disk-full | prefect-db-lost
    # | zombie-worker | redis-down | restore
    duration: float  # how long the fault lasts (serve-kill: until serve is started again; prefect-kill: 0)
    step: str | None = None  # where the test hook holds every run (serve-kill: the kill lands there)
    let_go: bool = False  # the held runs are let go the moment the fault begins (they meet it mid-clearance)
    lead: float = 15.0  # seconds of load before the fault
    tail: float = 30.0  # seconds of load after the fault ends
    smtp: bool = True
    second_worker: bool = False  # a `customs worker` process beside serve's own worker (zombie-worker)
    ha: bool = False  # Prefect in its high-availability shape with a private Redis (redis-down)
    what: str = ""


SCENARIOS = [
    Scenario(
        "prefect-kill",
        "prefect-kill",
        0,
        step="registration",
        let_go=True,
        tail=45,
        what="kill -9 of the Prefect server's process group, the runs held before registration let go into it; "
        "the supervisor restarts it",
    ),
    *[
        Scenario(
            f"serve-kill-{step}",
            "serve-kill",
            5,
            step=step,
            tail=40,
            what=f"kill -9 of `customs serve` with its runs held at the start of {step}; started again 5 s later",
        )
        for step in STEPS
    ],
    Scenario(
        "db-30s",
        "db",
        30,
        step="registration",
        let_go=True,
        what="application PostgreSQL stopped (-m immediate) for 30 s, the runs held before registration let go into it",
    ),
    Scenario(
        "db-120s",
        "db",
        120,
        step="registration",
        let_go=True,
        lead=30,
        what="application PostgreSQL stopped (-m immediate) for 120 s, the runs held before registration let go into it",
    ),
    Scenario("smtp-down", "smtp-down", 60, what="SMTP server stopped for 60 s (connection refused)"),
    Scenario("smtp-4xx", "smtp-4xx", 60, what="SMTP server answering 451 to RCPT and DATA for 60 s"),
    Scenario("smtp-hang", "smtp-hang", 60, what="a socket on the SMTP port that accepts and never answers, 60 s"),
    Scenario(
        "disk-full", "disk-full", 60, smtp=False, what="outbox folder (.eml, no SMTP) on a tmpfs filled for 60 s, then enlarged"
    ),
    Scenario(
        "prefect-db-lost",
        "prefect-db-lost",
        0,
        step="registration",
        let_go=True,
        tail=45,
        what="kill -9 of the Prefect server, its database dropped and created again empty (SQLite: the file deleted), "
        "the runs held before registration let go into it; the supervisor restarts it",
    ),
    Scenario(
        "zombie-worker",
        "zombie-worker",
        180,
        step="registration",
        let_go=True,
        lead=20,
        second_worker=True,
        what="SIGSTOP of a second `customs worker` process holding runs before registration (180 s, --zombie-seconds), "
        "then SIGCONT: its runs crash and are re-run by serve's worker while it sleeps",
    ),
    Scenario(
        "redis-down",
        "redis-down",
        30,
        step="registration",
        let_go=True,
        ha=True,
        what="the high-availability Prefect server (two API processes, services, a private Redis): Redis stopped for "
        "30 s, the runs held before registration let go into it",
    ),
    Scenario(
        "restore",
        "restore",
        30,
        step="release",
        let_go=True,
        lead=25,
        tail=40,
        what="customs backup create mid-stream with the runs held before release (registered in the backup, "
        "released after it), 30 s more clearing, customs serve stopped, customs backup restore, serve started again",
    ),
]


# ----------------------------------------------------------------------------------------------
# A private PostgreSQL cluster


def _pg_binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise SystemExit(f"{name} not found (PostgreSQL server binaries are needed for the private cluster)")


class PgCluster:
    """initdb in a directory of its own, on a free port, trust authentication; run as ``postgres`` when we are root."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.data = directory / "data"
        self.port = free_port()
        self.user = None
        if os.geteuid() == 0:
            self.user = pwd.getpwnam("postgres")
        directory.mkdir(parents=True, exist_ok=True)
        if self.user:
            os.chown(directory, self.user.pw_uid, self.user.pw_gid)

    def _run(self, *command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if self.user else []
        return subprocess.run(
            [*prefix, *command], capture_output=True, text=True, check=check, timeout=timeout, cwd=str(self.dir)
        )

    def init(self) -> PgCluster:
        self._run(_pg_binary("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"\n# bench/chaos.py\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.dir}'\nmax_connections = 200\n"
            )
        return self

    def start(self) -> None:
        self._run(_pg_binary("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "postgres.log"), "-w", "-t", "120", "start")

    def stop_immediate(self) -> None:
        self._run(_pg_binary("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def running(self) -> bool:
        return self._run(_pg_binary("pg_ctl"), "-D", str(self.data), "status", check=False).returncode == 0

    def destroy(self) -> None:
        if self.data.exists() and self.running():
            self._run(_pg_binary("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.data, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


# ----------------------------------------------------------------------------------------------
# An SMTP server that records what it accepts, and can be made to fail


def numbers_in(message) -> list[str]:
    """The registration numbers a message tells its reader (subject and text)."""
    text = str(message.get("Subject", ""))
    with contextlib.suppress(Exception):  # a message without a text part tells its number nowhere we read
        body = message.get_body(("plain", "html"))
        text += "\n" + (body.get_content() if body is not None else "")
    return sorted(set(REGISTRATION_NUMBER.findall(text)))


class RecordingHandler:
    def __init__(self):
        self.mode = "up"  # up | 4xx
        self.received: list[dict[str, Any]] = []
        self.refused = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.mode == "4xx":
            self.refused += 1
            return "451 4.3.0 Temporary failure, try again later (bench/chaos.py)"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.mode == "4xx":
            self.refused += 1
            return "451 4.3.0 Temporary failure, try again later (bench/chaos.py)"
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=policy.default)
        self.received.append(
            {
                "at": time.time(),
                "message_id": str(message.get("Message-ID", "")),
                "application_id": str(message.get("X-Customs-Application-Id", "")),
                "kind": str(message.get("X-Customs-Notice", "")).split(";")[0].strip(),
                "sha256": hashlib.sha256(raw).hexdigest(),
                "to": list(envelope.rcpt_tos),
                "numbers": numbers_in(message),
            }
        )
        return "250 2.0.0 Message accepted for delivery"


class SmtpRecorder:
    """aiosmtpd on a loopback port: ``up``, ``down`` (stopped: refused), ``4xx`` (451), ``hang`` (a socket on the
    same port that accepts and never says a word)."""

    def __init__(self):
        self.port = free_port()
        self.handler = RecordingHandler()
        self.controller = None
        self._hang: socket.socket | None = None
        self._held: list[socket.socket] = []
        self.mode = "down"

    def _start_controller(self) -> None:
        from aiosmtpd.controller import Controller

        for _ in range(50):  # the port may take a moment to be free again after the hanging socket
            try:
                self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
                self.controller.start()
                return
            except Exception:
                self.controller = None
                time.sleep(0.2)
        raise RuntimeError(f"the SMTP recorder could not listen on {self.port} again")

    def _stop_controller(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def _start_hang(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._hang = listener

        def accept() -> None:
            while True:
                try:
                    connection, _ = listener.accept()
                except OSError:
                    return
                self._held.append(connection)  # accepted, never answered

        threading.Thread(target=accept, name="smtp-hang", daemon=True).start()

    def _stop_hang(self) -> None:
        listener, self._hang = self._hang, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        held, self._held = self._held, []
        for connection in held:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def set_mode(self, mode: str) -> None:
        if mode == self.mode:
            return
        self._stop_hang()
        if mode in ("down", "hang"):
            self._stop_controller()
        if mode == "hang":
            self._start_hang()
        if mode in ("up", "4xx"):
            self.handler.mode = mode
            if self.controller is None:
                self._start_controller()
        self.mode = mode

    def close(self) -> None:
        self._stop_hang()
        self._stop_controller()
        self.mode = "down"


# ----------------------------------------------------------------------------------------------
# The served process


class Served:
    def __init__(self, env: dict[str, str], log_path: Path):
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.api = f"http://127.0.0.1:{env['CUSTOMS_API_PORT']}"
        self.prefect = env.get("CUSTOMS_PREFECT_API_URL") or f"http://127.0.0.1:{env['CUSTOMS_PREFECT_PORT']}/api"
        self.pids: set[int] = set()

    def start(self, extra: dict[str, str] | None = None) -> None:
        with open(self.log_path, "ab") as log_file:
            log_file.write(f"\n===== bench/chaos.py: customs serve started at {datetime.now():%H:%M:%S} =====\n".encode())
            log_file.flush()
            self.process = subprocess.Popen(
                [CUSTOMS, "serve"], env=self.env | (extra or {}), cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT
            )
        self.pids.add(self.process.pid)

    def healthy(self, timeout: float = 1.0) -> bool:
        try:
            return httpx.get(f"{self.api}/v1/health", timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 300) -> float:
        started = time.time()
        while time.time() - started < timeout:
            if self.healthy():
                return time.time()
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"customs serve exited with {self.process.returncode}; see {self.log_path}")
            time.sleep(0.25)
        raise RuntimeError(f"customs serve did not answer within {timeout:.0f} s; see {self.log_path}")

    def kill9(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def prefect_pid(self) -> int | None:
        try:
            return int((Path(self.env["CUSTOMS_DATA_DIR"]) / "prefect" / "server.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def interrupt(self) -> None:
        """Stop `customs serve` as an operator does (Ctrl-C); the Prefect server it started keeps running."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)

    def prefect_login(self) -> tuple[str, str]:
        login = (Path(self.env["CUSTOMS_DATA_DIR"]) / "prefect-auth").read_text().strip()  # the server's (issue 23)
        user, _, password = login.partition(":")
        return user, password

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        with contextlib.suppress(Exception):
            subprocess.run([CUSTOMS, "server", "stop"], env=self.env, cwd=ROOT, capture_output=True, timeout=120)
        pid = self.prefect_pid()
        if pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([CUSTOMS, *args], env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def processes_under(root: Path) -> list[psutil.Process]:
    """Processes of ours: their command line, working directory or environment names a path under ``root``."""
    needle = str(root)
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid == os.getpid():
            continue
        try:
            if any(needle in part for part in proc.info["cmdline"] or []):
                found.append(proc)
                continue
            if any(needle in value for value in proc.environ().values()):
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def kill_processes_under(root: Path, *, spare_postgres: bool = False) -> list[str]:
    killed = []
    for proc in processes_under(root):
        try:
            name = " ".join(proc.cmdline())[:120]
            if spare_postgres and proc.username() == "postgres":
                continue
            proc.kill()
            killed.append(f"{proc.pid} {name}")
        except psutil.Error:
            continue
    return killed


# ----------------------------------------------------------------------------------------------
# Load: signed declarations submitted at a steady rate, each retried (the same bytes) until accepted


def signed_declarations(n: int, workdir: Path):
    """N green declarations (the first sample, each with its own invoice number) signed for the company, and the PKI."""
    from customs.pki.testing import CmsSigner, TestPki

    pki = TestPki.create(workdir / "pki", now=datetime.now(UTC) - timedelta(hours=1))
    issued = pki.issue(name="ТОО «Алатау Импорт»", bin=DECLARANT_BIN, label="company")
    signer = CmsSigner(issued.cert_path, issued.key_path, (pki.issuing_cert_path,))
    template = json.loads((ROOT / "samples" / "01-green-household-appliances.json").read_text(encoding="utf-8"))
    out = []
    for _ in range(n):
        document = json.loads(json.dumps(template))
        document["documents"][0]["number"] = f"INV-{uuid.uuid4().hex[:12]}"
        content = json.dumps(document, ensure_ascii=False, indent=1).encode()
        out.append((content, signer.sign(content)))
    return out, pki


class Load:
    """Declarations submitted at ``rate`` per second by ``threads`` client threads (httpx, 10 s time-out). A
    submission that got no answer, or a 5xx, is sent again (the same bytes: the same application if it was
    stored) every ``retry_every`` seconds for up to ``give_up_after``, as a declarant's system would."""

    def __init__(self, api: str, token: str, items, rate: float, threads: int = 8, retry_every: float = 5.0, give_up_after=300):
        self.api = api
        self.headers = {"Authorization": f"Bearer {token}"}
        self.items = items
        self.rate = rate
        self.threads = threads
        self.retry_every = retry_every
        self.give_up_after = give_up_after
        self.attempts: list[dict[str, Any]] = []
        self.accepted: dict[int, dict[str, Any]] = {}
        self.gave_up: list[int] = []
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._thread: threading.Thread | None = None

    def _client(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(headers=self.headers, timeout=10.0)
        return client

    def _submit(self, index: int, attempt: int, first_at: float) -> float | None:
        """One attempt; returns when to try again (None: settled)."""
        content, signature = self.items[index]
        started = time.time()
        record: dict[str, Any] = {"i": index, "attempt": attempt, "t": started}
        try:
            response = self._client().post(
                f"{self.api}/v1/declarations",
                files={"declaration": ("declaration.json", content), "signature": ("declaration.json.p7s", signature)},
            )
            record["latency"] = time.time() - started
            record["status"] = response.status_code
        except httpx.TimeoutException as exc:
            record["latency"] = time.time() - started
            record["error"] = type(exc).__name__
        except httpx.HTTPError as exc:
            record["error"] = type(exc).__name__
            self._local.client = None  # a new connection next time
        with self._lock:
            self.attempts.append(record)
        status = record.get("status")
        if status in (200, 202):
            body = response.json()
            with self._lock:
                self.accepted[index] = {
                    "application_id": body["application_id"],
                    "status": status,
                    "at": time.time(),
                    "attempts": attempt,
                }
            return None
        if status is not None and status < 500:
            with self._lock:
                self.gave_up.append(index)
            record["body"] = response.text[:300]
            return None
        if time.time() - first_at > self.give_up_after:
            with self._lock:
                self.gave_up.append(index)
            return None
        return time.time() + self.retry_every

    def start(self) -> Load:
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        t0 = time.time()
        due = [(t0 + i / self.rate, i, 1, t0 + i / self.rate) for i in range(len(self.items))]
        heapq.heapify(due)
        heap_lock = threading.Lock()
        outstanding = [len(self.items)]
        settled = threading.Event()

        def one(index: int, attempt: int, first_at: float) -> None:
            again = self._submit(index, attempt, first_at)
            with heap_lock:
                if again is None:
                    outstanding[0] -= 1
                    if outstanding[0] == 0:
                        settled.set()
                else:
                    heapq.heappush(due, (again, index, attempt + 1, first_at))

        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            while not settled.is_set():
                with heap_lock:
                    head = due[0] if due else None
                    if head is not None and head[0] <= time.time():
                        heapq.heappop(due)
                if head is None or head[0] > time.time():
                    time.sleep(0.02 if head is None else min(0.05, max(0.0, head[0] - time.time())))
                    continue
                pool.submit(one, head[1], head[2], head[3])
        self.done.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)


# ----------------------------------------------------------------------------------------------
# Probes: liveness, readiness, and the Prefect server


class Prober:
    def __init__(self, served: Served, *, api_calls: bool = False):
        self.served = served
        self.api_calls = api_calls  # also two calls of Prefect's API a worker makes (not only /health)
        self.health: list[dict[str, Any]] = []
        self.ready: list[dict[str, Any]] = []
        self.prefect: list[dict[str, Any]] = []
        self.stop = threading.Event()

    def start(self) -> Prober:
        for target in (self._health, self._ready, self._prefect):
            threading.Thread(target=target, daemon=True).start()
        return self

    def _loop(self, every: float, call) -> None:
        with httpx.Client(timeout=5.0) as client:
            while not self.stop.is_set():
                started = time.time()
                call(client, started)
                self.stop.wait(max(0.0, every - (time.time() - started)))

    def _health(self) -> None:
        def probe(client, started):
            record: dict[str, Any] = {"t": started}
            try:
                response = client.get(f"{self.served.api}/v1/health")
                record.update(latency=time.time() - started, status=response.status_code)
            except httpx.HTTPError as exc:
                record.update(error=type(exc).__name__, latency=time.time() - started)
            self.health.append(record)

        self._loop(0.25, probe)

    def _ready(self) -> None:
        def probe(client, started):
            record: dict[str, Any] = {"t": started}
            try:
                response = client.get(f"{self.served.api}/v1/health/ready")
                body = response.json()
                record.update(
                    latency=time.time() - started,
                    status=response.status_code,
                    ready=body.get("status"),
                    dependencies={name: d.get("state") for name, d in (body.get("dependencies") or {}).items()},
                )
            except (httpx.HTTPError, ValueError) as exc:
                record.update(error=type(exc).__name__, latency=time.time() - started)
            self.ready.append(record)

        self._loop(0.25, probe)

    def _prefect(self) -> None:
        login = self.served.prefect_login() if self.api_calls else None

        def probe(client, started):
            try:
                ok = client.get(f"{self.served.prefect}/health", timeout=2.0).status_code == 200
            except httpx.HTTPError:
                ok = False
            record: dict[str, Any] = {"t": started, "ok": ok}
            if login is not None:
                record["api"] = self._api_statuses(client, login)
            self.prefect.append(record)

        self._loop(0.5, probe)

    def _api_statuses(self, client: httpx.Client, login: tuple[str, str]) -> list[int | str]:
        """What Prefect answers a worker's poll and a read of flow runs (the status, or the error's name)."""
        statuses: list[int | str] = []
        for path, body in (("work_pools/customs/get_scheduled_flow_runs", {}), ("flow_runs/filter", {"limit": 1})):
            try:
                statuses.append(client.post(f"{self.served.prefect}/{path}", json=body, auth=login, timeout=5.0).status_code)
            except httpx.HTTPError as exc:
                statuses.append(type(exc).__name__)
        return statuses


# ----------------------------------------------------------------------------------------------
# Faults


class Tmpfs:
    def __init__(self, path: Path, size: str = "16m"):
        self.path = path
        self.size = size
        self.mounted = False

    def mount(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0755", "tmpfs", str(self.path)], check=True)
        self.mounted = True

    def fill(self) -> int:
        """Write a filler file until the file system refuses (ENOSPC); returns its size."""
        written = 0
        chunk = b"\0" * 65536
        with open(self.path / ".chaos-filler", "wb", buffering=0) as filler:
            while True:
                try:
                    written += filler.write(chunk)
                except OSError:
                    break
            with contextlib.suppress(OSError):  # the last few bytes, one at a time
                while filler.write(b"\0"):
                    written += 1
        return written

    def enlarge(self, size: str = "256m") -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)

    def unmount(self) -> None:
        if self.mounted:
            result = subprocess.run(["umount", str(self.path)], capture_output=True)
            if result.returncode != 0:
                subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
            self.mounted = False


# ----------------------------------------------------------------------------------------------
# What some scenarios add: a second worker, a private Redis for the high-availability Prefect server


class PrivateRedis:
    """redis-server on a free port in the scenario's directory (never the machine's shared Redis); no persistence."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server not found (the redis-down scenario runs a private one)")
        with open(self.dir / "redis.log", "ab") as log_file:
            self.process = subprocess.Popen(
                [server, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
                + ["--save", "", "--appendonly", "no"],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.time() + 30
        while time.time() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as probe:
                probe.sendall(b"PING\r\n")
                if probe.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.2)
        raise RuntimeError(f"the private redis-server did not answer on {self.port}; see {self.dir / 'redis.log'}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


class SecondWorker:
    """`customs worker` in a process of its own beside serve's worker (as on a second host, docs/how-to/
    deploy-several-hosts.md): the same settings, the Prefect API of serve's server and its login."""

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.stopped = False

    def start(self, served: Served, extra: dict[str, str] | None) -> None:
        env = served.env | (extra or {})
        env.update(CUSTOMS_PREFECT_API_URL=served.prefect, CUSTOMS_PREFECT_AUTH_STRING=":".join(served.prefect_login()))
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [CUSTOMS, "worker", "--name", "chaos-second"], env=env, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        self.stopped = True

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self.stopped = False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        if self.stopped:
            self.thaw()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)


@dataclass
class Rig:
    """The parts of a scenario beyond serve: Prefect's own cluster, a second worker, Redis, the backup taken."""

    prefect_cluster: PgCluster | None = None
    worker: SecondWorker | None = None
    redis: PrivateRedis | None = None
    restore: dict[str, Any] = field(default_factory=dict)  # restore: the backup, what was seen before, the report


def start_ha_server(env: dict[str, str], redis: PrivateRedis, workdir: Path) -> dict[str, str]:
    """`customs server start --ha` on two free ports with the private Redis; returns what serve is to be given."""
    if not env.get("CUSTOMS_PREFECT_DATABASE_URL", "").startswith("postgresql://"):
        raise RuntimeError("the high-availability Prefect server needs PostgreSQL: run with --prefect-db postgres")
    redis.start()
    ports = [free_port(), free_port()]
    ha = {"CUSTOMS_PREFECT_HA_PORTS": json.dumps(ports), "CUSTOMS_REDIS_URL": redis.url, "CUSTOMS_PREFECT_HA": "true"}
    started = subprocess.run(
        [CUSTOMS, "server", "start", "--ha"], env=env | ha, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    (workdir / "server-start-ha.log").write_text(started.stdout + started.stderr)
    if started.returncode != 0:
        raise RuntimeError(f"customs server start --ha failed: {(started.stdout + started.stderr)[-600:]}")
    return ha | {"CUSTOMS_PREFECT_API_URL": f"http://127.0.0.1:{ports[0]}/api"}


# ----------------------------------------------------------------------------------------------
# One scenario


@dataclass
class Run:
    scenario: Scenario
    workdir: Path
    n: int
    figures: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    forgotten: set[str] = field(default_factory=set)  # restore: accepted, then lost with the restore (its report's)

    @property
    def hold(self) -> Path:
        return self.workdir / "hold-runs"

    def let_go(self) -> None:
        if self.scenario.let_go and self.hold.exists():
            self.hold.unlink()
            self.mark(f"the runs held at the start of {self.scenario.step} let go")

    def mark(self, what: str) -> float:
        now = time.time()
        self.events.append((now, what))
        log(f"{self.scenario.name}: {what}")
        return now

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append({"check": name, "ok": bool(ok), "detail": detail})
        if not ok:
            log(f"{self.scenario.name}: CHECK FAILED {name}: {detail}")


def run_scenario(scenario: Scenario, args, items, pki) -> dict[str, Any]:
    workdir = args.root / scenario.name
    workdir.mkdir(parents=True, exist_ok=True)
    run = Run(scenario, workdir, len(items))
    cluster = PgCluster(workdir / "pg")
    rig = Rig(prefect_cluster=PgCluster(workdir / "prefect-pg") if args.prefect_db == "postgres" else None)
    prefect_cluster = rig.prefect_cluster
    smtp = SmtpRecorder() if scenario.smtp else None
    tmpfs = Tmpfs(workdir / "outbox-tmpfs") if scenario.fault == "disk-full" else None
    served: Served | None = None
    prober: Prober | None = None
    load: Load | None = None
    error = None
    try:
        cluster.init().start()
        database_url = cluster.create_database(f"chaos_{scenario.name.replace('-', '_')}")
        if prefect_cluster is not None:  # Prefect's own database: a cluster of its own, which no scenario stops
            prefect_cluster.init().start()
            env_prefect = {"CUSTOMS_PREFECT_DATABASE_URL": prefect_cluster.create_database("prefect")}
        else:
            env_prefect = {}
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "CUSTOMS_"))}
        env.update(
            CUSTOMS_DATA_DIR=str(workdir / "data"),
            CUSTOMS_DATABASE_URL=database_url,
            CUSTOMS_TRUST_DIR=str(pki.trust_dir),
            CUSTOMS_CRL_DIR=str(pki.crl_dir),
            CUSTOMS_PREFECT_PORT=str(free_port()),
            CUSTOMS_API_PORT=str(free_port()),
            CUSTOMS_WORKER_POLL_SECONDS="0.3",
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            **env_prefect,
        )
        if smtp is not None:
            smtp.set_mode("up")
            env.update(CUSTOMS_SMTP_HOST="127.0.0.1", CUSTOMS_SMTP_PORT=str(smtp.port))
        if tmpfs is not None:
            tmpfs.mount()
            env["CUSTOMS_OUTBOX_DIR"] = str(tmpfs.path)
        if scenario.ha:  # the high-availability Prefect server, started apart; serve is given its first API
            rig.redis = PrivateRedis(workdir / "redis")
            env.update(start_ha_server(env, rig.redis, workdir))
        served = Served(env, workdir / "serve.log")
        hook = None
        if scenario.step:  # the test-only hook of flows/clearance.py: every run waits there while the file exists
            run.hold.touch()
            hook = {
                "CUSTOMS_TEST_PAUSE_AT_STEP": scenario.step,
                "CUSTOMS_TEST_PAUSE_WHILE": str(run.hold),
                "CUSTOMS_TEST_PAUSE_SECONDS": "900",
            }
        started = time.time()
        served.start(hook)
        served.wait_ready()
        run.figures["serve_ready_s"] = round(time.time() - started, 1)
        added = served.cli("clients", "add", "chaos", "--kind", "declarant", "--id", DECLARANT_BIN, "--json")
        if added.returncode != 0:
            raise RuntimeError(f"customs clients add failed: {added.stdout} {added.stderr}")
        token = json.loads(added.stdout)["token"]
        if scenario.second_worker:
            rig.worker = SecondWorker(workdir / "worker.log")
            rig.worker.start(served, hook)
        prober = Prober(served, api_calls=scenario.ha).start()
        stream = scenario.lead + scenario.duration + scenario.tail
        rate = len(items) / stream
        run.figures["rate_per_s"] = round(rate, 2)
        load = Load(served.api, token, items, rate).start()
        run.mark(f"load started: {len(items)} declarations at {rate:.2f}/s")
        time.sleep(scenario.lead)
        window_end = inject(run, scenario, served, cluster, smtp, tmpfs, prober, rig, load)
        fault_end = run.figures["fault_end"]
        if not load.wait(max(60.0, stream + 400 - (time.time() - run.figures["fault_start"]))):
            run.mark("the load did not finish (submissions still retrying)")
        run.mark(f"load done: {len(load.accepted)} accepted, {len(load.gave_up)} given up")
        final_at = wait_final(run, served, load, fault_end, args.wait)
        notices_at = wait_notices(run, served, load, smtp, tmpfs, args.wait) if final_at else None
        run.figures["_application_ids"] = sorted({v["application_id"] for v in load.accepted.values()} - run.forgotten)
        settled_at = wait_runs(run, served, args.wait) if final_at else None
        run.figures.pop("_application_ids")
        run.figures["runs_settled_after_fault_end_s"] = (
            round(settled_at - run.figures["fault_end"], 1) if settled_at is not None else None
        )
        prober.stop.set()
        measure(run, served, load, prober, window_end, final_at, notices_at)
        invariants(run, served, load, smtp, tmpfs, rig, prober)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        log(f"{scenario.name}: ERROR {error}")
        run.check("scenario ran to the end", False, error)
    finally:
        run.hold.unlink(missing_ok=True)
        if prober is not None:
            prober.stop.set()
        if rig.worker is not None:  # before serve: it would otherwise run on against a stopped server
            rig.worker.stop()
        if served is not None:
            served.stop()
        if rig.redis is not None:
            rig.redis.kill()
        if smtp is not None:
            smtp.close()
        leftovers = kill_processes_under(workdir, spare_postgres=True)
        if leftovers:
            log(f"{scenario.name}: killed what was left: {leftovers}")
        cluster.destroy()
        if prefect_cluster is not None:
            prefect_cluster.destroy()
        if tmpfs is not None:
            tmpfs.unmount()
        leftovers = kill_processes_under(workdir)
        if leftovers:
            log(f"{scenario.name}: killed what was left after the cluster: {leftovers}")
    result = {
        "scenario": scenario.name,
        "what": scenario.what,
        "fault": scenario.fault,
        "duration_s": scenario.duration,
        "step": scenario.step,
        "workdir": str(workdir),
        "figures": run.figures,
        "checks": run.checks,
        "ok": all(c["ok"] for c in run.checks) and error is None,
        "timeline": [(round(t - run.events[0][0], 1), what) for t, what in run.events] if run.events else [],
        "error": error,
    }
    if load is not None:
        result["intake_outcomes"] = dict(Counter(str(a.get("status", a.get("error"))) for a in load.attempts).most_common())
    return result


def inject(
    run: Run, scenario: Scenario, served: Served, cluster: PgCluster, smtp, tmpfs, prober: Prober, rig: Rig, load: Load
) -> float:
    """Cause the fault, end it after its duration; returns the end of the window in which its effects are measured."""
    fault = scenario.fault
    if fault == "prefect-kill":
        pid = served.prefect_pid()
        start = run.mark(f"kill -9 of the Prefect server's process group ({pid})")
        os.killpg(pid, signal.SIGKILL)
        run.figures["fault_start"] = run.figures["fault_end"] = start
        run.let_go()
        return wait_prefect_back(run, served, prober, start)
    if fault == "prefect-db-lost":
        return lose_prefect_database(run, served, prober, rig)
    if fault == "zombie-worker":
        return freeze_worker(run, scenario, served, rig)
    if fault == "redis-down":
        return stop_redis(run, scenario, rig)
    if fault == "restore":
        return back_up_and_restore(run, scenario, served, smtp, rig, load)
    if fault == "serve-kill":
        start = run.mark(f"kill -9 of customs serve (pid {served.process.pid}), its runs held at {scenario.step}")
        served.kill9()
        run.figures["fault_start"] = start
        time.sleep(scenario.duration)
        end = run.mark("customs serve started again (without the hook)")
        served.start()
        run.figures["fault_end"] = end
        back = served.wait_ready()
        run.mark("customs serve answers again")
        run.figures["serve_down_s"] = round(back - start, 1)
        return back
    if fault == "db":
        start = run.mark("pg_ctl stop -m immediate")
        cluster.stop_immediate()
        run.figures["fault_start"] = start
        run.let_go()
        time.sleep(max(0.0, scenario.duration - (time.time() - start)))
        cluster.start()
        end = run.mark("PostgreSQL started again")
        run.figures["fault_end"] = end
        return end
    if fault in ("smtp-down", "smtp-4xx", "smtp-hang"):
        mode = fault.removeprefix("smtp-")
        start = run.mark(f"SMTP server {mode}")
        smtp.set_mode(mode)
        run.figures["fault_start"] = start
        time.sleep(scenario.duration)
        smtp.set_mode("up")
        end = run.mark("SMTP server up again")
        run.figures["fault_end"] = end
        return end
    if fault == "disk-full":
        start = run.mark("outbox tmpfs filled")
        filled = tmpfs.fill()
        run.figures["filler_bytes"] = filled
        run.figures["fault_start"] = start
        time.sleep(scenario.duration)
        tmpfs.enlarge()
        end = run.mark("outbox tmpfs enlarged (remount)")
        run.figures["fault_end"] = end
        return end
    raise ValueError(fault)


def wait_prefect_back(run: Run, served: Served, prober: Prober, start: float) -> float:
    """Until the Prefect server, seen down since ``start``, answers again (the supervisor restarted it)."""
    deadline = time.time() + 600
    seen_down = False
    while time.time() < deadline:
        time.sleep(0.5)
        last = prober.prefect[-1] if prober.prefect else None
        if last and last["t"] > start and not last["ok"]:
            seen_down = True
        if seen_down and last and last["ok"] and last["t"] > start:
            break
    back = run.mark(f"the Prefect server answers again (pid {served.prefect_pid()})")
    run.figures["prefect_outage_s"] = round(back - start, 1)
    return back


def lose_prefect_database(run: Run, served: Served, prober: Prober, rig: Rig) -> float:
    """prefect-db-lost: kill -9 of the Prefect server, its database gone (created again empty) before the
    supervisor starts it again: the pool, the deployments, the automations and every run's record are lost."""
    pid = served.prefect_pid()
    start = run.mark(f"kill -9 of the Prefect server's process group ({pid}); its database to be lost")
    os.killpg(pid, signal.SIGKILL)
    run.figures["fault_start"] = run.figures["fault_end"] = start
    if rig.prefect_cluster is not None:
        import psycopg

        with psycopg.connect(rig.prefect_cluster.url("postgres"), autocommit=True) as connection:
            connection.execute('DROP DATABASE "prefect" WITH (FORCE)')
            connection.execute('CREATE DATABASE "prefect"')
        lost = "PostgreSQL database prefect dropped and created again, empty"
    else:
        files = sorted((Path(served.env["CUSTOMS_DATA_DIR"]) / "prefect").glob("prefect.db*"))
        for path in files:
            path.unlink()
        lost = f"SQLite files deleted: {[p.name for p in files]}"
    run.mark(lost)
    run.let_go()
    return wait_prefect_back(run, served, prober, start)


def runs_held_by(served: Served, pid: int) -> list[str]:
    """The clearance runs Running in a worker process (its pid in the run's infrastructure_pid, host:pid:run)."""
    return [r["id"] for r in clearance_runs(served) if r["state"] == "RUNNING" and f":{pid}:" in (r["infrastructure_pid"] or "")]


def freeze_worker(run: Run, scenario: Scenario, served: Served, rig: Rig) -> float:
    """zombie-worker: SIGSTOP of the second worker while it holds runs at the hook's step; the held runs are let go
    (serve's continue, the frozen worker's cannot); SIGCONT after the scenario's duration."""
    worker = rig.worker
    deadline, held = time.time() + 90, []
    while time.time() < deadline:  # its share of the held runs: two at least, or what it has after 90 s
        with contextlib.suppress(httpx.HTTPError, ValueError):
            held = runs_held_by(served, worker.pid)
        if len(held) >= 2:
            break
        time.sleep(2)
    start = run.mark(f"SIGSTOP of the second worker (pid {worker.pid}), holding {len(held)} runs at {scenario.step}")
    worker.freeze()
    run.figures["fault_start"] = start
    run.figures["zombie_pid"] = worker.pid
    run.figures["zombie_runs"] = held
    run.let_go()
    time.sleep(scenario.duration)
    worker.thaw()
    end = run.mark("SIGCONT of the second worker: the zombie wakes")
    run.figures["fault_end"] = end
    return end


def stop_redis(run: Run, scenario: Scenario, rig: Rig) -> float:
    """redis-down: the high-availability server's Redis killed, started again (empty) after the duration."""
    start = run.mark(f"Redis (port {rig.redis.port}) stopped")
    rig.redis.kill()
    run.figures["fault_start"] = start
    run.let_go()
    time.sleep(scenario.duration)
    rig.redis.start()
    end = run.mark("Redis started again (empty: no persistence)")
    run.figures["fault_end"] = end
    return end


def numbers_held(served: Served) -> dict[str, str]:
    """Every registration number in the application's database, with its declaration."""
    from sqlalchemy import text

    engine = engine_of(served)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT application_id, registration_number FROM declaration")).all()
    finally:
        engine.dispose()
    return {a: n for a, n in rows if n}


def back_up_and_restore(run: Run, scenario: Scenario, served: Served, smtp, rig: Rig, load: Load) -> float:
    """restore: `customs backup create` mid-stream, clearing goes on for the duration, serve stopped (Ctrl-C),
    `customs backup restore`, serve started again. What was announced before the restore is kept for the checks."""
    backup_started = run.mark("customs backup create")
    made = served.cli("backup", "create", "--json", timeout=600)
    if made.returncode != 0:
        raise RuntimeError(f"customs backup create failed: {made.stdout[-400:]} {made.stderr[-400:]}")
    folder = json.loads(made.stdout)["folder"]
    run.figures["fault_start"] = run.mark(f"backup written to {folder}")
    run.let_go()  # the runs held before release go on: the backup has them registered, not released
    time.sleep(scenario.duration)
    run.mark("customs serve stopped (Ctrl-C) for the restore")
    served.interrupt()
    time.sleep(1)  # the load thread records the last answers
    accepted = {v["application_id"]: v["at"] for v in load.accepted.values()}
    before = numbers_held(served)
    restored = served.cli("backup", "restore", folder, "--json", timeout=600)
    if restored.returncode != 0:
        raise RuntimeError(f"customs backup restore failed: {restored.stdout[-400:]} {restored.stderr[-400:]}")
    report = json.loads(restored.stdout)["check"]
    run.forgotten = set(accepted) - set(_declaration_ids(served))
    verify = served.cli("audit", "verify")
    rig.restore.update(
        folder=folder,
        backup_started=backup_started,
        accepted=accepted,
        numbers_before=before,
        numbers_told=[(m["application_id"], n) for m in smtp.handler.received for n in m["numbers"]] if smtp else [],
        report=report,
        verify_after_restore=(verify.returncode, (verify.stdout.strip() or verify.stderr.strip())[-300:]),
    )
    run.mark(f"restored: {restored.stdout and json.loads(restored.stdout)['summary']}")
    end = run.mark("customs serve started again on the restored database")
    served.start()
    run.figures["fault_end"] = end
    back = served.wait_ready()
    run.mark("customs serve answers again")
    return back


def _declaration_ids(served: Served) -> list[str]:
    from sqlalchemy import text

    engine = engine_of(served)
    try:
        with engine.connect() as connection:
            return [a for (a,) in connection.execute(text("SELECT application_id FROM declaration"))]
    finally:
        engine.dispose()


def engine_of(served: Served):
    from sqlalchemy import create_engine

    return create_engine(served.env["CUSTOMS_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://"), pool_pre_ping=True)


def wait_final(run: Run, served: Served, load: Load, fault_end: float, wait: float) -> float | None:
    """Until every stored declaration is final (and every accepted one stored); returns when (None: not in time)."""
    from sqlalchemy import text

    engine = engine_of(served)
    deadline = time.time() + wait
    try:
        while time.time() < deadline:
            try:
                with engine.connect() as connection:
                    rows = connection.execute(text("SELECT application_id, status FROM declaration")).all()
            except Exception:
                time.sleep(1)
                continue
            statuses = {a: str(s).lower() for a, s in rows}
            accepted = {v["application_id"] for v in load.accepted.values()} - run.forgotten
            if accepted <= set(statuses) and all(s in FINAL for s in statuses.values()) and load.done.is_set():
                at = run.mark(f"all {len(statuses)} declarations final")
                return at
            time.sleep(0.5)
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT status, count(*) FROM declaration GROUP BY status")).all()
        run.mark(f"NOT all final after {wait:.0f} s: { {str(s).lower(): c for s, c in rows} }")
        return None
    finally:
        engine.dispose()


def wait_notices(run: Run, served: Served, load: Load, smtp, tmpfs, wait: float) -> float | None:
    """Until every declaration's release notice has been delivered (SMTP recorder, or its .eml) and none is pending."""
    from sqlalchemy import text

    engine = engine_of(served)
    deadline = time.time() + wait
    try:
        while time.time() < deadline:
            with engine.connect() as connection:
                ids = {a for (a,) in connection.execute(text("SELECT application_id FROM declaration"))}
                pending = connection.execute(
                    text(
                        "SELECT count(*) FROM notice "
                        "WHERE lower(CAST(kind AS TEXT)) = 'release' AND lower(CAST(status AS TEXT)) <> 'sent'"
                    )
                ).scalar()
            if smtp is not None:
                delivered = {m["application_id"] for m in smtp.handler.received if m["kind"] == "release"}
            else:
                delivered = {p.stem.split("-release-", 1)[1] for p in tmpfs.path.glob("*-release-*.eml")}
            if ids <= delivered and not pending:
                return run.mark("every release notice delivered")
            time.sleep(1)
        run.mark(f"NOT every release notice delivered after {wait:.0f} s")
        return None
    finally:
        engine.dispose()


def clearance_runs(served: Served) -> list[dict[str, Any]]:
    """Every clearance flow run in Prefect: its id, application, state type, run count and worker (infrastructure_pid)."""
    runs, offset = [], 0
    with httpx.Client(timeout=10.0, auth=served.prefect_login()) as client:
        while True:
            page = client.post(
                f"{served.prefect}/flow_runs/filter",
                json={"flow_runs": {"tags": {"all_": ["clearance"]}}, "limit": 200, "offset": offset},
            ).json()
            runs += [
                {
                    "id": r.get("id"),
                    "application_id": (r.get("parameters") or {}).get("application_id"),
                    "state": (r.get("state") or {}).get("type"),
                    "run_count": r.get("run_count"),
                    "infrastructure_pid": r.get("infrastructure_pid"),
                }
                for r in page
            ]
            if len(page) < 200:
                return runs
            offset += 200


def state_histories(served: Served, run_ids: list[str]) -> dict[str, list[tuple[str, float]]]:
    """Each flow run's states in Prefect, oldest first: type (SCHEDULED, PENDING, RUNNING, CRASHED, ...) and time."""
    histories = {}
    with httpx.Client(timeout=10.0, auth=served.prefect_login()) as client:
        for run_id in run_ids:
            states = client.get(f"{served.prefect}/flow_run_states/", params={"flow_run_id": run_id}).json()
            stamped = [(s["type"], datetime.fromisoformat(s["timestamp"]).timestamp()) for s in states]
            histories[run_id] = sorted(stamped, key=lambda state: state[1])
    return histories


def wait_runs(run: Run, served: Served, wait: float) -> float | None:
    """Until Prefect shows every clearance run ended Completed (or Cancelled), one Completed per declaration: nothing
    dangles (runs of a killed worker crashed and run again by the reconciler, runs failed on the database re-run)."""
    deadline = time.time() + wait
    runs: list[dict[str, Any]] = []
    while time.time() < deadline:
        try:
            runs = clearance_runs(served)
        except (httpx.HTTPError, ValueError):
            time.sleep(2)
            continue
        completed = {r["application_id"] for r in runs if r["state"] == "COMPLETED"}
        open_runs = [r for r in runs if r["state"] not in ("COMPLETED", "CANCELLED")]
        wanted = set(run.figures.get("_application_ids", []))
        if not open_runs and wanted <= completed:
            run.figures["clearance_runs"] = dict(Counter(r["state"] for r in runs))
            run.figures["clearance_run_attempts_max"] = max((r["run_count"] or 0 for r in runs), default=0)
            return run.mark(f"every clearance run settled ({len(runs)} runs)")
        time.sleep(2)
    run.figures["clearance_runs"] = dict(Counter(r["state"] for r in runs))
    run.mark(f"clearance runs NOT settled after {wait:.0f} s: {run.figures['clearance_runs']}")
    return None


def _stats(values: list[float]) -> dict[str, float | None]:
    rounded = lambda v: round(v, 3) if v is not None else None  # noqa: E731
    return {
        "n": len(values),
        "p50": rounded(pct(values, 0.5)),
        "p99": rounded(pct(values, 0.99)),
        "max": rounded(max(values) if values else None),
    }


def measure(run: Run, served: Served, load: Load, prober: Prober, window_end: float, final_at: float | None, notices_at) -> None:
    from sqlalchemy import text

    figures = run.figures
    start, end = figures["fault_start"], window_end
    figures["window_s"] = round(end - start, 1)
    during = [a for a in load.attempts if start <= a["t"] <= end]
    answered = [a["latency"] for a in during if "latency" in a]
    figures["intake_during"] = _stats(answered) | {
        "errors": dict(Counter(str(a.get("status", a.get("error"))) for a in during if a.get("status") not in (200, 202)))
    }
    figures["intake_all"] = _stats([a["latency"] for a in load.attempts if "latency" in a])
    figures["accepted"] = len(load.accepted)
    figures["accepted_as_existing"] = sum(1 for v in load.accepted.values() if v["status"] == 200)
    figures["retried"] = sum(1 for v in load.accepted.values() if v["attempts"] > 1)
    figures["gave_up"] = len(load.gave_up)
    health_during = [h for h in prober.health if start <= h["t"] <= end]
    figures["health_during"] = _stats([h["latency"] for h in health_during if "status" in h]) | {
        "failed": sum(1 for h in health_during if h.get("status") != 200)
    }
    ready_during = [r for r in prober.ready if start <= r["t"] <= end]
    figures["ready_during"] = _stats([r["latency"] for r in ready_during if "status" in r]) | {
        "states": dict(Counter(r.get("ready", r.get("error")) for r in ready_during)),
        "dependencies": {
            name: sorted({r["dependencies"][name] for r in ready_during if name in (r.get("dependencies") or {})})
            for name in ("database", "prefect", "smtp")
        },
    }
    fault_end = figures["fault_end"]
    if final_at is not None:
        figures["all_final_after_fault_end_s"] = round(final_at - fault_end, 1)
        # When each declaration became final (its release transition), counted from the fault's end, or from its
        # acceptance when it was accepted after the fault ended (the last of the load).
        engine = engine_of(served)
        with engine.connect() as connection:
            released = {
                a: at.timestamp()
                for a, at in connection.execute(
                    text(
                        "SELECT application_id, max(at) FROM audit_event "
                        "WHERE event = 'transition' AND lower(to_status) = 'released' GROUP BY application_id"
                    )
                )
            }
        engine.dispose()
        accepted_at = {v["application_id"]: v["at"] for v in load.accepted.values()}
        first_try: dict[int, float] = {}
        for attempt in load.attempts:
            first_try.setdefault(attempt["i"], attempt["t"])
        waits = [released[a] - max(fault_end, accepted_at.get(a, 0)) for a in released]
        figures["recovery_s"] = round(max(0.0, max(waits)), 1) if waits else None
        before = [released[a] - fault_end for a in released if accepted_at.get(a, 0) <= fault_end]
        figures["accepted_before_end_all_final_after_s"] = round(max(0.0, max(before)), 1) if before else None
        after = [released[a] - accepted_at[a] for a in released if accepted_at.get(a, 0) > fault_end]
        figures["accepted_after_end_202_to_released_max_s"] = round(max(after), 1) if after else None
        # Each declaration, in seconds from the fault's end: first submitted, accepted, released; attempts; answer.
        figures["declarations"] = [
            [
                round(first_try.get(i, 0) - fault_end, 1),
                round(v["at"] - fault_end, 1),
                round(released[v["application_id"]] - fault_end, 1) if v["application_id"] in released else None,
                v["attempts"],
                v["status"],
            ]
            for i, v in sorted(load.accepted.items())
        ]
    if notices_at is not None:
        figures["release_notices_delivered_after_fault_end_s"] = round(notices_at - fault_end, 1)


def alerts_per_crash(run: Run, served: Served, histories: dict[str, list[str]]) -> None:
    """One operations alert per declaration and failure (issue 26: keyed clearance_failure:<application>:<status>:
    <since>, whatever the run or its count): every declaration whose runs crashed or failed has at least one alert
    and no more than its crashed or failed states; a declaration without one has none."""
    from sqlalchemy import text

    engine = engine_of(served)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT application_id FROM ops_alert WHERE kind = 'clearance_run_failed'")).all()
    finally:
        engine.dispose()
    alerts = Counter(a for (a,) in rows)
    application_of = {r["id"]: r["application_id"] for r in clearance_runs(served)}
    crashes: Counter = Counter()
    for rid, states in histories.items():
        crashes[application_of.get(rid)] += sum(1 for t in states if t in ("CRASHED", "FAILED"))
    wrong = {
        a: {"crashed_or_failed": crashes.get(a, 0), "alerts": alerts.get(a, 0)}
        for a in set(crashes) | set(alerts)
        if (crashes.get(a, 0) == 0) != (alerts.get(a, 0) == 0) or alerts.get(a, 0) > crashes.get(a, 0)
    }
    run.figures["crashes_and_alerts"] = {"crashed_or_failed": sum(crashes.values()), "alerts": sum(alerts.values())}
    run.check(
        "one alert per declaration and failure (ops_alert against the crashed and failed states in Prefect's history)",
        not wrong,
        f"{sum(crashes.values())} crashed or failed states, {sum(alerts.values())} alerts; declarations where they differ "
        f"{list(wrong.items())[:5]}",
    )


def zombie_invariants(run: Run, served: Served, smtp, rig: Rig, prober: Prober) -> None:
    runs = clearance_runs(served)
    stamps = state_histories(served, [r["id"] for r in runs])
    histories = {rid: [t for t, _ in states] for rid, states in stamps.items()}
    final = {r["id"]: r for r in runs}
    zombie, pid = run.figures.get("zombie_runs", []), run.figures.get("zombie_pid")
    not_rerun = [
        rid
        for rid in zombie
        if "CRASHED" not in histories.get(rid, [])
        or final.get(rid, {}).get("state") != "COMPLETED"
        or f":{pid}:" in (final.get(rid, {}).get("infrastructure_pid") or "")
    ]
    run.check(
        "the frozen worker's runs crashed and were completed by the other worker",
        bool(zombie) and not not_rerun,
        f"{len(zombie)} runs held by the frozen worker; not crashed, not completed or last run by it: "
        f"{[(r, histories.get(r), final.get(r, {}).get('infrastructure_pid')) for r in not_rerun][:3]}",
    )
    # A terminal state written after the run was Completed: the zombie finishing an attempt another one completed.
    after_done = {rid: states[states.index("COMPLETED") :] for rid, states in histories.items() if "COMPLETED" in states[:-1]}
    woke = run.figures.get("fault_end", 0)
    run.figures["states_after_completed"] = {  # when, from the SIGCONT: the zombie's, or another's
        rid: [f"{t} {at - woke:+.1f} s" for t, at in stamps[rid][histories[rid].index("COMPLETED") :]] for rid in after_done
    }
    run.figures["completed_states_per_run_max"] = max((s.count("COMPLETED") for s in histories.values()), default=0)
    run.check(
        "no run has a state after Completed (one Completed each: the zombie wrote no second end)",
        not after_done,
        f"{len(after_done)} runs; e.g. {list(after_done.items())[:3]}",
    )
    alerts_per_crash(run, served, histories)


def redis_invariants(run: Run, served: Served, smtp, rig: Rig, prober: Prober) -> None:
    """Readiness must not say ready while Prefect answers 5xx (or not at all) to a worker's calls."""
    failing = [p["t"] for p in prober.prefect if any(not isinstance(s, int) or s >= 500 for s in p.get("api", []))]
    ready_then = [r for r in prober.ready if r.get("ready") == "ready" and any(abs(r["t"] - t) <= 0.5 for t in failing)]
    run.figures["prefect_api_failing_probes"] = len(failing)
    run.figures["prefect_api_statuses"] = dict(Counter(str(s) for p in prober.prefect for s in p.get("api", [])))
    run.figures["ready_while_prefect_failing"] = len(ready_then)
    run.check(
        "readiness not 'ready' while Prefect answers 5xx (probes within 0.5 s of a failing Prefect call)",
        not ready_then,
        f"{len(ready_then)} readiness probes said ready while Prefect failed ({len(failing)} failing Prefect probes)",
    )
    runs = clearance_runs(served)
    histories = state_histories(served, [r["id"] for r in runs])
    alerts_per_crash(run, served, {rid: [t for t, _ in states] for rid, states in histories.items()})


def restore_invariants(run: Run, served: Served, smtp, rig: Rig, prober: Prober) -> None:
    """No number issued twice, no message received twice, the report lists exactly what the restore lost."""
    r = rig.restore
    holders: dict[str, set[str]] = {}
    told = [*r["numbers_before"].items(), *r["numbers_told"], *numbers_held(served).items()]
    told += [(m["application_id"], n) for m in smtp.handler.received for n in m["numbers"]]
    for application_id, number in told:
        holders.setdefault(number, set()).add(application_id)
    shared = {n: sorted(a) for n, a in holders.items() if len(a) > 1}
    run.figures["numbers_seen"] = len(holders)
    run.check(
        "restore: no registration number held by two declarations (database before and after, notices received)",
        not shared,
        f"{len(holders)} numbers seen; held by several {list(shared.items())[:5]}",
    )
    twice = {mid: c for mid, c in Counter(m["message_id"] for m in smtp.handler.received).items() if c > 1}
    run.check("restore: no Message-ID received twice (every kind)", not twice, f"received more than once {twice}")
    report = r["report"]
    listed = {d["application_id"] for d in report["lost"]}
    before_backup = sorted(a for a in run.forgotten if r["accepted"][a] < r["backup_started"])
    run.figures["restore_report"] = {k: len(report[k]) for k in ("counters_raised", "notices_marked_sent", "lost", "behind")}
    run.figures["lost_with_the_restore"] = len(run.forgotten)
    run.figures["audit_verify_after_restore"] = r["verify_after_restore"]
    run.check(
        "restore: the report lists exactly the declarations accepted after the backup that the database lacks",
        listed == run.forgotten and not before_backup,
        f"{len(run.forgotten)} accepted and lacking, {len(listed)} listed; not listed {sorted(run.forgotten - listed)[:5]}; "
        f"listed but held {sorted(listed - run.forgotten)[:5]}; accepted before the backup yet lacking {before_backup[:5]}",
    )


def invariants(run: Run, served: Served, load: Load, smtp, tmpfs, rig: Rig, prober: Prober) -> None:
    from sqlalchemy import text

    figures = run.figures
    engine = engine_of(served)
    with engine.connect() as connection:
        declarations = {
            a: (str(s).lower(), n, str(o))
            for a, s, n, o in connection.execute(
                text("SELECT application_id, status, registration_number, customs_office FROM declaration")
            )
        }
        transitions = Counter(
            (a, str(to).lower())
            for a, to in connection.execute(text("SELECT application_id, to_status FROM audit_event WHERE event = 'transition'"))
        )
        audit_events = Counter(e for (e,) in connection.execute(text("SELECT event FROM audit_event")))
        reconciled = [
            d for (d,) in connection.execute(text("SELECT details FROM audit_event WHERE event = 'clearance_run_reconciled'"))
        ]
        findings = [d for (d,) in connection.execute(text("SELECT details FROM audit_event WHERE event = 'recheck_finding'"))]
        notices = [
            (a, str(k).lower(), str(s).lower(), i, u)
            for a, k, s, i, u in connection.execute(text("SELECT application_id, kind, status, id, uid FROM notice"))
        ]
        sent_attempts = Counter(
            i for (i,) in connection.execute(text("SELECT notice_id FROM delivery_attempt WHERE outcome = 'sent'"))
        )
        # Marked sent, not sent: the sent journal held the same announcement, sent before a restore under another
        # Message-ID (customs.services.outbox.ALREADY_SENT): what the declarant received is that one.
        journal_held = {
            i
            for (i,) in connection.execute(
                text("SELECT id FROM notice WHERE server_response LIKE 'sent before the database was restored%'")
            )
        }
        outbox = dict(Counter((k, s) for _, k, s, _, _ in notices))
        figures["delivery_attempts"] = dict(
            Counter(o for (o,) in connection.execute(text("SELECT outcome FROM delivery_attempt")))
        )
    engine.dispose()
    figures["audit_events"] = dict(audit_events)
    figures["outbox"] = {f"{k}/{s}": c for (k, s), c in sorted(outbox.items())}
    accepted = {v["application_id"] for v in load.accepted.values()}

    lost = sorted(accepted - set(declarations) - run.forgotten)  # restore: what it lost is its report's (below)
    not_final = sorted(a for a, (s, _, _) in declarations.items() if s != "released")
    run.check(
        "nothing lost: every accepted declaration stored and released",
        not lost and not not_final and not load.gave_up,
        f"{len(accepted)} accepted, {len(declarations)} stored, {len(run.forgotten)} lost with the restore (listed by it: "
        f"below); missing {lost[:5]}; not released {not_final[:5]}; "
        f"submissions given up {len(load.gave_up)}",
    )
    twice = {a: transitions[(a, "released")] for a in declarations if transitions[(a, "released")] != 1}
    regs = {a: transitions[(a, "registered")] for a in declarations if transitions[(a, "registered")] != 1}
    run.check("released exactly once, registered exactly once", not twice and not regs, f"release {twice}; registration {regs}")

    numbers = [n for _, n, _ in declarations.values() if n]
    by_day: dict[str, list[int]] = {}
    for number in numbers:
        office, day, serial = number.split("/")
        by_day.setdefault(f"{office}/{day}", []).append(int(serial))
    # restore: the numbers of the declarations it lost stay unissued (their declarants hold them): gaps, but no others
    excused = Counter()
    for lost in rig.restore.get("report", {}).get("lost", ()):
        if lost.get("registration_number"):
            office, day, serial = lost["registration_number"].split("/")
            excused[(f"{office}/{day}", int(serial))] += 1
    gaps = {
        key: missing
        for key, serials in by_day.items()
        if (missing := sorted(set(range(1, max(serials) + 1)) - set(serials) - {s for k, s in excused if k == key}))
    }
    run.check(
        "registration numbers unique and gapless per office and day",
        len(numbers) == len(set(numbers)) == len(declarations) and not gaps,
        f"{len(numbers)} numbers, {len(set(numbers))} distinct, for {len(declarations)} declarations; "
        f"{ {k: (min(v), max(v)) for k, v in by_day.items()} }; gaps {gaps}",
    )

    release_rows: dict[str, list[tuple]] = {}
    for a, k, s, i, u in notices:
        if k == "release":
            release_rows.setdefault(a, []).append((s, i, u))
    wrong_rows = {a: rows for a, rows in release_rows.items() if len(rows) != 1 or rows[0][0] != "sent"}
    missing_rows = sorted(set(declarations) - set(release_rows))
    resent = {i: c for i, c in sent_attempts.items() if c > 1}
    run.check(
        "one release notice per declaration in the outbox, sent once",
        not wrong_rows and not missing_rows and not resent,
        f"not one sent notice {list(wrong_rows.items())[:3]}; none {missing_rows[:5]}; notices sent more than once {resent}",
    )

    # Every declaration ends released without a person: a declarant told of a failure (failure_reported) was told of
    # one the system then healed (issue 18's finding 5). Held notices are withdrawn, never sent.
    told = sorted({a for a, k, st, _, _ in notices if k == "failure_reported" and st == "sent"})
    held = sorted({a for a, k, st, _, _ in notices if k == "failure_reported" and st not in ("sent", "withdrawn")})
    figures["failure_notices"] = {"sent": len(told), "still_held": len(held)}
    run.check(
        "no declarant told of a failure that healed by itself (failure_reported sent: none)",
        not told,
        f"failure_reported sent for {told[:5]}; still held {held[:5]}",
    )

    uid_of = {a: rows[0][2] for a, rows in release_rows.items() if len(rows) == 1 and rows[0][1] not in journal_held}
    if smtp is not None:
        received = [m for m in smtp.handler.received if m["kind"] == "release"]
        per_app: dict[str, set[str]] = {}
        per_id = Counter(m["message_id"] for m in received)
        shas: dict[str, set[str]] = {}
        for m in received:
            per_app.setdefault(m["application_id"], set()).add(m["message_id"])
            shas.setdefault(m["message_id"], set()).add(m["sha256"])
        not_one = {a: sorted(ids) for a, ids in per_app.items() if len(ids) != 1}
        none = sorted(set(declarations) - set(per_app))
        twice = {mid: c for mid, c in per_id.items() if c > 1}
        differing = {mid: len(s) for mid, s in shas.items() if len(s) > 1}
        mismatched = [a for a, ids in per_app.items() if a in uid_of and not any(uid_of[a] in mid for mid in ids)]
        figures["smtp_received"] = dict(Counter(m["kind"] for m in smtp.handler.received))
        figures["smtp_refused_4xx"] = smtp.handler.refused
        run.check(
            "SMTP server: exactly one release notice per declaration (by Message-ID), each received once, same SHA-256",
            not not_one and not none and not twice and not differing and not mismatched,
            f"{len(received)} release messages for {len(per_app)} declarations; several Message-IDs {not_one}; none {none[:5]}; "
            f"received more than once {twice}; differing bytes {differing}; Message-ID not the notice's {mismatched[:5]}",
        )
    else:
        files = sorted(tmpfs.path.glob("*-release-*.eml"))
        per_app = {}
        for path in files:
            message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
            per_app.setdefault(str(message.get("X-Customs-Application-Id")), []).append(str(message.get("Message-ID")))
        partial = sorted(p.name for p in tmpfs.path.glob(".*.part"))
        not_one = {a: ids for a, ids in per_app.items() if len(ids) != 1}
        none = sorted(set(declarations) - set(per_app))
        mismatched = [a for a, ids in per_app.items() if a in uid_of and uid_of[a] not in ids[0]]
        figures["eml_files"] = len(list(tmpfs.path.glob("*.eml")))
        run.check(
            "outbox folder: exactly one release .eml per declaration (by Message-ID), no partial file left",
            not not_one and not none and not partial and not mismatched,
            f"{len(files)} release files for {len(per_app)} declarations; several {not_one}; none {none[:5]}; "
            f"partial files {partial[:5]}; Message-ID not the notice's {mismatched[:5]}",
        )

    verify = served.cli("audit", "verify")
    run.check("customs audit verify", verify.returncode == 0, (verify.stdout + verify.stderr).strip()[-400:])

    person = [d for d in reconciled if isinstance(d, dict) and d.get("action") == "report"]
    held = [d for d in findings if isinstance(d, dict) and "held" in str(d.get("finding", ""))]
    figures["reconciler_actions"] = dict(Counter(d.get("action") for d in reconciled if isinstance(d, dict)))
    run.check(
        "no person needed (no run left for a person, nothing held)",
        not person and not held and not not_final,
        f"left for a person {person[:3]}; held {held[:3]}",
    )

    run.check(
        "every clearance run ended Completed in Prefect (nothing dangles)",
        figures.get("runs_settled_after_fault_end_s") is not None,
        f"runs by state {figures.get('clearance_runs')}; settled {figures.get('runs_settled_after_fault_end_s')} s "
        "after the fault's end",
    )
    recovery = figures.get("recovery_s")
    run.check(
        f"every declaration final within {TARGET_RECOVERY_S:.0f} s of the fault's end",
        recovery is not None and recovery <= TARGET_RECOVERY_S,
        f"{recovery} s",
    )
    if run.scenario.fault == "prefect-kill":
        p99 = figures["intake_during"]["p99"]
        run.check(
            f"intake p99 under {TARGET_INTAKE_P99_S:.0f} s during the Prefect outage",
            p99 is not None and p99 < TARGET_INTAKE_P99_S and not figures["intake_during"]["errors"],
            f"p99 {p99} s over {figures['intake_during']['n']} submissions; errors {figures['intake_during']['errors']}",
        )
        health = figures["health_during"]
        run.check(
            f"/v1/health within {TARGET_HEALTH_S:.0f} s throughout the Prefect outage",
            health["max"] is not None and health["max"] < TARGET_HEALTH_S and not health["failed"],
            f"max {health['max']} s over {health['n']} probes, {health['failed']} failed",
        )
    restarts = served.log_path.read_text(errors="replace").count("restarting it")
    figures["prefect_restarts_by_supervisor"] = restarts
    figures["prefect_objects"] = prefect_objects(served)
    more = {"zombie-worker": zombie_invariants, "redis-down": redis_invariants, "restore": restore_invariants}
    if run.scenario.fault in more:
        more[run.scenario.fault](run, served, smtp, rig, prober)


def prefect_objects(served: Served) -> dict[str, Any]:
    """What Prefect holds of the project at the end: the work pool, deployments and automations (prefect-db-lost)."""
    with httpx.Client(timeout=10.0, auth=served.prefect_login()) as client:
        try:
            pool = client.get(f"{served.prefect}/work_pools/customs")
        except httpx.HTTPError as exc:
            return {"error": type(exc).__name__}
        return {
            "work_pool": pool.json().get("status") if pool.status_code == 200 else pool.status_code,
            "deployments": len(client.post(f"{served.prefect}/deployments/filter", json={}).json()),
            "automations": len(client.post(f"{served.prefect}/automations/filter", json={}).json()),
        }


# ----------------------------------------------------------------------------------------------
# Report


def fmt(value, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}" if isinstance(value, (int, float)) else str(value)


def table(results: list[dict[str, Any]]) -> str:
    header = (
        "| scenario | accepted | intake p50 / p99 / max during the fault (s) | intake errors during "
        "| /v1/health, /ready max during (s) | readiness seen | fault end → all final (s) "
        "| release notices delivered after (s) | invariants |"
    )
    lines = [header, "|" + "---|" * 9]
    for r in results:
        f = r["figures"]
        intake = f.get("intake_during", {})
        health = f.get("health_during", {})
        ready = f.get("ready_during", {})
        failed = [c["check"] for c in r["checks"] if not c["ok"]]
        states = ", ".join(f"{k} {v}" for k, v in (ready.get("states") or {}).items())
        errors = ", ".join(f"{k} {v}" for k, v in (intake.get("errors") or {}).items()) or "0"
        lines.append(
            f"| {r['scenario']} | {fmt(f.get('accepted'))}/{fmt(r.get('n'))} "
            f"| {fmt(intake.get('p50'))} / {fmt(intake.get('p99'))} / {fmt(intake.get('max'))} ({fmt(intake.get('n'))}) "
            f"| {errors} | {fmt(health.get('max'))}, {fmt(ready.get('max'))} ({fmt(health.get('failed'))} failed) "
            f"| {states or '-'} "
            f"| {fmt(f.get('recovery_s'))} | {fmt(f.get('release_notices_delivered_after_fault_end_s'))} "
            f"| {'OK' if r['ok'] else 'BROKEN: ' + '; '.join(failed)} |"
        )
    return "\n".join(lines)


def select(names: list[str] | None) -> list[Scenario]:
    if not names:
        return list(SCENARIOS)
    chosen = []
    for name in names:
        matched = [s for s in SCENARIOS if s.name == name or s.name.startswith(name)]
        if not matched:
            raise SystemExit(f"no scenario {name!r}; there are: {', '.join(s.name for s in SCENARIOS)}")
        chosen += [s for s in matched if s not in chosen]
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", help="scenario names or prefixes (comma-separated, repeatable)")
    parser.add_argument("-n", type=int, default=60, help="declarations per scenario")
    parser.add_argument("--wait", type=float, default=600, help="seconds to wait for every declaration to be final")
    parser.add_argument(
        "--prefect-db",
        choices=["postgres", "sqlite"],
        default="postgres",
        help="Prefect's own database: a second private PostgreSQL cluster (no scenario stops it), or its embedded SQLite",
    )
    parser.add_argument(
        "--zombie-seconds", type=float, default=180, help="how long zombie-worker keeps the second worker stopped (SIGSTOP)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scenarios' directories (logs are kept anyway)")
    parser.add_argument("--list", action="store_true", help="list the scenarios")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default bench/results/chaos-<time>.json)")
    args = parser.parse_args()
    if args.list:
        for s in SCENARIOS:
            print(f"{s.name:<28} {s.what}")
        return
    scenarios = select([n for group in args.only or [] for n in group.split(",") if n])
    scenarios = [
        replace(s, duration=args.zombie_seconds, what=s.what.replace("180 s", f"{args.zombie_seconds:g} s"))
        if s.fault == "zombie-worker"
        else s
        for s in scenarios
    ]
    if any(s.fault == "disk-full" for s in scenarios) and os.geteuid() != 0:
        raise SystemExit("disk-full mounts a tmpfs: run as root, or leave it out (--only ...)")
    args.root = Path(tempfile.mkdtemp(prefix="customs-chaos-"))
    os.chmod(args.root, 0o755)  # the private cluster runs as postgres and must reach its directory
    log(f"bench/chaos.py: {len(scenarios)} scenarios, {args.n} declarations each; work in {args.root}")
    items, pki = signed_declarations(args.n, args.root)
    started = datetime.now(UTC)
    results = []
    try:
        for scenario in scenarios:
            log(f"=== {scenario.name}: {scenario.what}")
            result = run_scenario(scenario, args, items, pki)
            result["n"] = args.n
            results.append(result)
            log(
                f"=== {scenario.name}: {'OK' if result['ok'] else 'BROKEN'}; figures {json.dumps(result['figures'], default=str)}"
            )
    finally:
        leftovers = kill_processes_under(args.root)
        if leftovers:
            log(f"killed what was left: {leftovers}")
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines() if str(args.root) in line]
        for mount in mounts:
            subprocess.run(["umount", "-l", mount], capture_output=True)
        still = processes_under(args.root)
        log(f"processes of this run still alive: {[p.pid for p in still] or 'none'}; mounts left: {mounts or 'none'}")
        if results:
            out = args.out or RESULTS / f"chaos-{started:%Y%m%dT%H%M%SZ}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            commit = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
            ).stdout.strip()
            out.write_text(
                json.dumps(
                    {
                        "started": started.isoformat(),
                        "finished": datetime.now(UTC).isoformat(),
                        "commit": commit,
                        "machine": {
                            "cpus": os.cpu_count(),
                            "python": platform.python_version(),
                            "load_average_at_end": os.getloadavg(),
                        },
                        "declarations_per_scenario": args.n,
                        "prefect_database": args.prefect_db,
                        "targets": {
                            "recovery_s": TARGET_RECOVERY_S,
                            "intake_p99_during_prefect_outage_s": TARGET_INTAKE_P99_S,
                            "health_s": TARGET_HEALTH_S,
                        },
                        "results": results,
                    },
                    indent=1,
                    default=str,
                    ensure_ascii=False,
                )
                + "\n"
            )
            print("\n" + table(results) + "\n")
            log(f"results in {out}")
        if not args.keep:
            for scenario_dir in args.root.iterdir():
                if scenario_dir.is_dir():
                    for heavy in ("pg", "prefect-pg", "data/prefect", "pki"):
                        shutil.rmtree(scenario_dir / heavy, ignore_errors=True)
            log(f"logs kept in {args.root}/<scenario>/serve.log")
    if not results or not all(r["ok"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
