"""Starting a clearance: every way there is, in one place.

- ``ClearanceStarter``: what intake calls after committing a declaration under `customs serve`: the start
  queued and made apart, behind a breaker, so intake never waits on Prefect; owed starts found in the
  database when it starts and when Prefect comes back;
- ``restart_with``: what `customs recheck --restart` gives batch-recheck to restart stuck declarations;
- ``run_clearance_here``: the clearance flow in this process (`customs submit --wait`, `customs clear`,
  `customs rerun`, the demo), recorded in the Prefect server;
- ``start_in_background``: the same in a detached process (`customs submit` without `--wait`), and
  ``stop_background_clearances`` for `customs server stop`.

Every deployment run is created by ``flows.clearance.start_clearance`` (name, tags, idempotency key).
"""

from __future__ import annotations

import contextvars
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

from customs.core.clock import utcnow
from customs.core.files import open_private
from customs.core.settings import get_settings
from customs.orchestration.server import client_environment, ensure_server, prefect_api
from flows.clearance import clearance, start_clearance

log = logging.getLogger("customs.starter")


class Breaker:
    """Whether the Prefect server takes run creations: ``closed`` (it does), ``open`` (it did not, since
    ``since``; tried again every ``retry_in`` seconds, growing to ``longest``)."""

    def __init__(self, delays: tuple[float, ...]):
        self.delays = delays
        self.state = "closed"
        self.since: float | None = None
        self.failures = 0
        self.last_error: str | None = None
        self.last_success: float = 0.0

    @property
    def retry_in(self) -> float:
        return self.delays[min(self.failures, len(self.delays)) - 1] if self.failures else 0.0

    def failed(self, error: BaseException) -> None:
        if self.state == "closed":
            self.state, self.since = "open", time.monotonic()
        self.failures += 1
        self.last_error = f"{type(error).__name__}: {error}"[:300]

    def succeeded(self) -> bool:
        """Returns True when this closes an open breaker (the server is back)."""
        was_open = self.state == "open"
        self.state, self.since, self.failures, self.last_success = "closed", None, 0, time.monotonic()
        return was_open


def _refused_for_good(error: BaseException) -> bool:
    """A 4xx other than 408/409/429: this start will never be accepted (the server itself is fine)."""
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    return status is not None and 400 <= status < 500 and status not in (408, 409, 429)


class ClearanceStarter:
    """What intake calls after committing a declaration: a clearance run of the deployment, started apart.

    Intake never waits on Prefect: calling the starter only queues the application id (the committed
    declaration is the durable record that a clearance is owed) and returns. One thread of its own creates
    the runs, with a short time-out and no client retries, behind a breaker: when the Prefect server does
    not answer, the breaker opens, one start is tried again after 0.5, 1, 2, then every ``longest`` seconds,
    and the queue waits; the first success closes it and the queue drains at once. The idempotency key
    makes a retry after an ambiguous failure (the run was created, the answer lost) return the same run.

    Owed clearances (declarations still ``submitted``: their start was lost with a process that died, or
    queued when this one stopped) are looked up in the database when the starter starts and whenever the
    breaker closes, and started too. A start the server refuses for good (a 4xx), or one that keeps failing
    while others succeed, is left to batch-recheck and logged.
    """

    def __init__(
        self,
        deployment_id: UUID,
        delays: tuple[float, ...] = (0.5, 1, 2, 5),
        *,
        owed: Callable[[], list[str]] | None = None,
        on_reconnect: Callable[[Any], Any] | None = None,
        timeout: float = 5.0,
        max_attempts: int = 8,
    ):
        self.deployment_id = deployment_id
        self.breaker = Breaker(delays)
        self.owed = owed
        self.on_reconnect = on_reconnect
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.given_up: list[str] = []
        self.started = 0
        self._queue: deque[str] = deque()
        self._in_flight: str | None = None  # popped from the queue, being tried now
        self._attempts: dict[str, int] = {}
        self._cv = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._client = None

    never_blocks = True  # the API calls it in its event loop (customs.api.hooks)

    # -- what intake and serve call -------------------------------------------------------------

    def __call__(self, application_id: str) -> None:
        """Queue the start (never blocks on Prefect)."""
        self._enqueue([application_id])

    def start(self) -> None:
        """Start the thread; it looks up the clearances owed from before (a process that died, a stop) first."""
        with self._cv:
            self._sweep_first = True
            self._ensure_thread()

    @property
    def waiting(self) -> int:
        """Starts not made yet: queued, and the one being tried."""
        with self._cv:
            return len(self._queue) + (self._in_flight is not None)

    def status(self) -> dict[str, Any]:
        """For health: whether runs can be started, since when not, and how many wait."""
        with self._cv:
            breaker = self.breaker
            return {
                "state": "up" if breaker.state == "closed" else "down",
                "down_for_seconds": round(time.monotonic() - breaker.since, 1) if breaker.since else None,
                "last_error": breaker.last_error,
                "starts_waiting": len(self._queue) + (self._in_flight is not None),
                "started": self.started,
            }

    def stop(self) -> None:
        """Stop; what is still queued is in the database as submitted, started at the next start (or batch-recheck)."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(self.timeout + 5)

    # -- the thread -------------------------------------------------------------------------------

    def create(self, application_id: str) -> None:
        start_clearance(application_id, deployment_id=self.deployment_id, client=self._prefect())

    def _prefect(self):
        if self._client is None:
            from prefect.client.orchestration import get_client

            self._client = get_client(sync_client=True, httpx_settings={"timeout": self.timeout})
            self._client.__enter__()
        return self._client

    def _server_answers(self) -> bool:
        try:
            return self._prefect().api_healthcheck() is None
        except Exception:
            return False

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=contextvars.copy_context().run, args=(self._loop,), name="clearance-starter", daemon=True
            )
            self._thread.start()

    def _enqueue(self, application_ids: list[str]) -> None:
        with self._cv:
            for application_id in application_ids:
                if application_id not in self._attempts:
                    self._attempts[application_id] = 0
                    self._queue.append(application_id)
            self._ensure_thread()
            self._cv.notify()

    def _sweep(self, why: str) -> None:
        if self.owed is not None:
            try:
                owed = self.owed()
            except Exception as exc:  # the database is away too: batch-recheck, or the next sweep
                log.warning("clearances owed could not be looked up %s (%s)", why, exc)
                owed = []
            if owed:
                log.info("%d clearance(s) owed %s: starting them", len(owed), why)
                self._enqueue(owed)
        if self.on_reconnect is not None and threading.current_thread() is self._thread:
            try:
                self.on_reconnect(self._prefect())  # e.g. decisions recorded while Prefect was away
            except Exception as exc:
                log.warning("after reconnecting %s: %s", why, exc)

    def _loop(self) -> None:
        from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

        with temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: 0}):  # the breaker retries, not the client
            try:
                if getattr(self, "_sweep_first", False):
                    self._sweep("at start")
                while self._step():
                    pass
            finally:
                if self._client is not None:
                    self._client.__exit__(None, None, None)

    def _step(self) -> bool:
        with self._cv:
            while not self._stopping and not self._queue:
                self._cv.wait()
            if self._stopping:
                return False
            application_id = self._in_flight = self._queue.popleft()
        try:
            self.create(application_id)
        except Exception as exc:
            if _refused_for_good(exc):
                self._give_up(application_id, exc)
                return True
            if self._server_answers():  # the server is fine: this start fails on its own
                with self._cv:
                    self._in_flight = None
                    self._attempts[application_id] += 1
                    attempts = self._attempts[application_id]
                    if attempts < self.max_attempts:
                        self._queue.append(application_id)  # behind the others: it never holds them up
                        log.warning("clearance of %s not started (%s); attempt %d, trying again", application_id, exc, attempts)
                        self._cv.wait(self.breaker.delays[min(attempts, len(self.breaker.delays)) - 1])
                if attempts >= self.max_attempts:
                    self._give_up(application_id, exc)
                return True
            with self._cv:
                self.breaker.failed(exc)
                self._in_flight = None
                self._queue.appendleft(application_id)
                if self.breaker.failures == 1:
                    log.warning("clearance runs cannot be started (%s); retrying apart, intake goes on", exc)
                self._cv.wait(self.breaker.retry_in)  # stop() wakes it
            return True
        with self._cv:
            self._in_flight = None
            self._attempts.pop(application_id, None)
            self.started += 1
            reopened = self.breaker.succeeded()
        if reopened:
            log.info("clearance runs can be started again (%s started)", application_id)
            self._sweep("after the Prefect server came back")
        return True

    def _give_up(self, application_id: str, error: BaseException) -> None:
        with self._cv:
            self._in_flight = None
            self._attempts.pop(application_id, None)
            self.given_up.append(application_id)
        log.error("clearance of %s could not be started (%s); batch-recheck will start it", application_id, error)


def restart_with(api_url: str) -> Callable[[str], None]:
    """How `customs recheck --restart` restarts a stuck declaration: a new run of the clearance deployment."""

    def restart(application_id: str) -> None:
        with prefect_api(api_url):
            start_clearance(application_id, idempotency_key=f"recheck:{application_id}:{utcnow():%Y%m%d%H%M}")

    return restart


def run_clearance_here(application_id: str, *, rerun_act: int | None = None, wait_for_official: bool = False) -> dict[str, Any]:
    """Run the clearance flow in this process, recorded in the Prefect server (started if need be); ``rerun_act``: the
    official's signed re-run act it carries out (`customs rerun`)."""
    with prefect_api(ensure_server()):
        return clearance(application_id, rerun_act=rerun_act, wait_for_official=wait_for_official)


def start_in_background(application_id: str) -> None:
    """The clearance flow in a detached process (its log under data/logs/), so the command returns at once."""
    settings = get_settings()
    env = client_environment(settings, ensure_server(settings))  # with the login of the Prefect API
    log_dir = settings.data_dir / "logs"
    with open_private(log_dir / f"clearance-{application_id}.log") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "flows.clearance", application_id],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            umask=0o077,
        )
    (log_dir / f"clearance-{application_id}.pid").write_text(str(process.pid))


def stop_background_clearances() -> int:
    """Stop clearance runs started in the background (e.g. waiting for an official) before their server goes."""

    def ours(pid: int) -> bool:  # never a process that merely reused the number
        try:
            return b"flows.clearance" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False

    pids = []
    for pid_file in (get_settings().data_dir / "logs").glob("clearance-*.pid"):
        try:
            pid = int(pid_file.read_text())
        except ValueError:
            pid = 0
        pid_file.unlink(missing_ok=True)
        if pid and ours(pid):
            os.kill(pid, signal.SIGTERM)  # the run reports itself crashed while the server is still up
            pids.append(pid)
    deadline = time.monotonic() + 20
    while any(ours(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:
        if ours(pid):
            os.kill(pid, signal.SIGKILL)
    return len(pids)
