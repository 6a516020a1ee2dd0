"""Starting a clearance: every way there is, in one place.

- ``ClearanceStarter``: what intake calls after committing a declaration under `customs serve`: a run of
  the clearance deployment now, retried with backoff when the Prefect server refuses it;
- ``restart_with``: what `customs recheck --restart` gives batch-recheck to restart stuck declarations;
- ``run_clearance_here``: the clearance flow in this process (`customs submit --wait`, `customs clear`,
  `customs rerun`, the demo), recorded in the Prefect server;
- ``start_in_background``: the same in a detached process (`customs submit` without `--wait`), and
  ``stop_background_clearances`` for `customs server stop`.

Every deployment run is created by ``flows.clearance.start_clearance`` (name, tags, idempotency key).
"""

from __future__ import annotations

import contextvars
import heapq
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

from customs.core.clock import utcnow
from customs.core.settings import get_settings
from customs.orchestration.server import ensure_server, prefect_api, shared_client
from flows.clearance import clearance, start_clearance

log = logging.getLogger("customs.starter")


class ClearanceStarter:
    """What intake calls after committing a declaration: a clearance run of the deployment, now.

    When the Prefect server cannot take the run (restarting; on SQLite it answers 503 "database is
    locked" under load, after the client's own retries), the start is retried here with backoff
    instead of waiting for the next batch-recheck (every 15 minutes). The idempotency key makes a
    retry after an ambiguous failure (the run was created, the answer lost) return the same run.
    After the last delay the declaration is left to batch-recheck, which restarts stuck ones.
    """

    def __init__(self, deployment_id: UUID, delays: tuple[float, ...] = (1, 2, 4, 8, 15, 30, 60, 120)):
        self.deployment_id = deployment_id
        self.delays = delays
        self.given_up: list[str] = []
        self._due: list[tuple[float, str, int]] = []
        self._cv = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def create(self, application_id: str) -> None:
        start_clearance(application_id, deployment_id=self.deployment_id, client=shared_client())

    def __call__(self, application_id: str) -> None:
        try:
            self.create(application_id)
        except Exception as exc:
            log.warning("clearance of %s not started (%s); retrying in %s s", application_id, exc, self.delays[0])
            self._defer(application_id, 0)

    @property
    def waiting(self) -> int:
        with self._cv:
            return len(self._due)

    def _defer(self, application_id: str, attempt: int) -> None:
        with self._cv:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=contextvars.copy_context().run, args=(self._retry_loop,), name="clearance-starter", daemon=True
                )
                self._thread.start()
            heapq.heappush(self._due, (time.monotonic() + self.delays[attempt], application_id, attempt))
            self._cv.notify()

    def _retry_loop(self) -> None:
        while True:
            with self._cv:
                while not self._stopping and (not self._due or self._due[0][0] > time.monotonic()):
                    self._cv.wait(None if not self._due else max(0.0, self._due[0][0] - time.monotonic()))
                if self._stopping:
                    return
                _, application_id, attempt = heapq.heappop(self._due)
            try:
                self.create(application_id)
                log.info("clearance of %s started on retry %d", application_id, attempt + 1)
            except Exception as exc:
                if attempt + 1 < len(self.delays):
                    self._defer(application_id, attempt + 1)
                else:
                    self.given_up.append(application_id)
                    log.error("clearance of %s could not be started (%s); batch-recheck will start it", application_id, exc)

    def stop(self) -> None:
        """Stop retrying; what is still waiting is in the database as submitted, for batch-recheck."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(5)


def restart_with(api_url: str) -> Callable[[str], None]:
    """How `customs recheck --restart` restarts a stuck declaration: a new run of the clearance deployment."""

    def restart(application_id: str) -> None:
        with prefect_api(api_url):
            start_clearance(
                application_id, requested_by="batch-recheck", idempotency_key=f"recheck:{application_id}:{utcnow():%Y%m%d%H%M}"
            )

    return restart


def run_clearance_here(
    application_id: str, *, requested_by: str | None = None, wait_for_official: bool = False
) -> dict[str, Any]:
    """Run the clearance flow in this process, recorded in the Prefect server (started if need be)."""
    with prefect_api(ensure_server()):
        return clearance(application_id, requested_by=requested_by, wait_for_official=wait_for_official)


def start_in_background(application_id: str) -> None:
    """The clearance flow in a detached process (its log under data/logs/), so the command returns at once."""
    settings = get_settings()
    env = dict(os.environ, PREFECT_API_URL=ensure_server())
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"clearance-{application_id}.log", "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "flows.clearance", application_id],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
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
