"""Starting a clearance: every way there is, in one place.

- ``ClearanceStarter``: what intake calls after committing a declaration under `customs serve`: the start
  queued and made apart, behind a breaker, so intake never waits on Prefect; owed starts found in the
  database when it starts and when Prefect comes back;
- ``restart_with``: what `customs recheck --restart` gives batch-recheck to restart stuck declarations;
- ``Launcher`` and ``launch_clearance``: what the commands use (`customs submit`, `submit --wait`, `clear`,
  `rerun`, the demo): a run of the deployment, waited for until it rests, executed by a worker of the pool or,
  when none serves it, by a ``CommandWorker`` in the command's own process.

Every clearance is a run of the ``clearance`` deployment, created by ``flows.clearance.start_clearance`` (name,
tags, idempotency key) and executed by a worker; there is no other way (docs/explanation/launching-a-clearance.md).
"""

from __future__ import annotations

import contextvars
import logging
import os
import socket
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import anyio
from prefect.client.schemas.responses import WorkerFlowRunResponse
from prefect.utilities.dispatch import register_type

from customs.core.clock import utcnow
from customs.core.settings import Settings, get_settings
from customs.orchestration.server import Progress, ensure_server, prefect_api
from customs.orchestration.worker import ClearanceWorker, WorkerThread
from flows.clearance import CLEARANCE_DEPLOYMENT, start_clearance

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


def _not_found(error: BaseException) -> bool:
    response = getattr(error, "response", None) or getattr(getattr(error, "http_exc", None), "response", None)
    return getattr(response, "status_code", None) == 404


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
        on_missing_deployment: Callable[[], Any] | None = None,
    ):
        self.deployment_id = deployment_id
        self.on_missing_deployment = on_missing_deployment
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
        self._keys: dict[str, str] = {}  # starts with an idempotency key of their own (restart), until made
        self._cv = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._client = None

    never_blocks = True  # the API calls it in its event loop (customs.api.hooks)

    # -- what intake and serve call -------------------------------------------------------------

    def __call__(self, application_id: str) -> None:
        """Queue the start (never blocks on Prefect)."""
        self._enqueue([application_id])

    def restart(self, application_ids: list[str], key_prefix: str) -> None:
        """Queue new runs for declarations whose earlier run ended in a state the database no longer holds (a
        restore from a backup put them back at an earlier step): keyed ``<key_prefix>:<application id>``, since
        intake's key would find that earlier run and start nothing."""
        with self._cv:
            for application_id in application_ids:
                self._keys[application_id] = f"{key_prefix}:{application_id}"
        self._enqueue(application_ids)

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
        key = self._keys.get(application_id)  # None: intake's own key (flows.clearance.start_clearance)
        start_clearance(application_id, deployment_id=self.deployment_id, client=self._prefect(), idempotency_key=key)

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
            back = self._deployment_back() if _not_found(exc) else False
            if back == "back" or isinstance(back, BaseException):  # re-created, or not yet (an error: try later)
                with self._cv:
                    self._in_flight = None
                    self._queue.appendleft(application_id)
                    if isinstance(back, BaseException):  # the rebuild itself failed (the server is unwell): as an outage
                        self.breaker.failed(back)
                        self._cv.wait(self.breaker.retry_in)
                return True
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
            self._keys.pop(application_id, None)
            self.started += 1
            reopened = self.breaker.succeeded()
        if reopened:
            log.info("clearance runs can be started again (%s started)", application_id)
            self._sweep("after the Prefect server came back")
        return True

    def _deployment_back(self) -> str | bool | BaseException:
        """The clearance deployment was not found (the Prefect server lost it): the project re-created
        (``on_missing_deployment``, customs.orchestration.upkeep), and the deployment's new id taken ("back");
        False when it is still missing (the start is then given up like any refused one, and said so); the error
        when the re-creation itself failed (a 503 while the server recovers: the start waits and tries again)."""
        from prefect.exceptions import ObjectNotFound

        log.error("the clearance deployment %s is gone from the Prefect server: re-creating the project", self.deployment_id)
        try:
            if self.on_missing_deployment is not None:
                self.on_missing_deployment()
            deployment = self._prefect().read_deployment_by_name(CLEARANCE_DEPLOYMENT)
        except ObjectNotFound:
            return False
        except Exception as exc:
            log.warning("the clearance deployment could not be re-created yet: %s: %s", type(exc).__name__, exc)
            return exc
        if deployment.id == self.deployment_id:
            return False
        log.warning("clearance runs are started with the re-created deployment %s", deployment.id)
        self.deployment_id = deployment.id
        return "back"

    def _give_up(self, application_id: str, error: BaseException) -> None:
        with self._cv:
            self._in_flight = None
            self._attempts.pop(application_id, None)
            self.given_up.append(application_id)
        log.error(
            "clearance of %s could not be started (%s); batch-recheck will restart it after CUSTOMS_RECHECK_STUCK_AFTER",
            application_id,
            error,
        )


def restart_with(api_url: str) -> Callable[[str], None]:
    """How `customs recheck --restart` restarts a stuck declaration: a new run of the clearance deployment."""

    def restart(application_id: str) -> None:
        with prefect_api(api_url):
            start_clearance(application_id, idempotency_key=f"recheck:{application_id}:{utcnow():%Y%m%d%H%M}")

    return restart


CLI_WORKER_PREFIX = "command-"  # the in-process worker of a CLI command: not a worker that serves the pool


with warnings.catch_warnings():  # a subclass of a worker type takes over its key in Prefect's registry of types:
    warnings.simplefilter("ignore")  # given back at once, so `prefect worker start --type customs-thread` is unchanged

    class CommandWorker(ClearanceWorker):
        """The worker a command (`customs submit`, `clear`, `rerun`, the demo) runs in its own process while it waits,
        when no worker serves the pool: a ClearanceWorker that executes only the runs the command started (handed to it
        with ``serve``), so the run has its deployment, work pool and Retry all the same, and nothing else of the pool
        is taken up by a process about to exit. No reconciler nor job gate: those belong to the pool's own workers."""

        def __init__(self, work_pool_name: str, **kwargs: Any):
            kwargs.setdefault("name", f"{CLI_WORKER_PREFIX}{socket.gethostname()}-{os.getpid()}")
            kwargs.setdefault("poll_seconds", 0.2)
            super().__init__(work_pool_name, **kwargs)
            self.runs: set[UUID] = set()

        def serve(self, flow_run_id: UUID) -> None:
            self.runs.add(flow_run_id)

        async def _get_scheduled_flow_runs(self) -> list[WorkerFlowRunResponse]:
            due = []
            for flow_run_id in list(self.runs):
                run = await self.client.read_flow_run(flow_run_id)
                if run.state is not None and run.state.is_scheduled() and self._work_pool is not None:
                    pool_id = self._work_pool.id
                    due.append(WorkerFlowRunResponse(work_pool_id=pool_id, work_queue_id=run.work_queue_id, flow_run=run))
            return due

        async def _reconcile_loop(self) -> None:
            await anyio.sleep_forever()

        async def _gate_loop(self) -> None:
            await anyio.sleep_forever()

    register_type(ClearanceWorker)


def workers_serving(client: Any, pool_name: str) -> list[str]:
    """The workers Prefect shows online on the pool, other than commands' own (which serve their runs only).
    Online is Prefect's word: a worker that died less than three heartbeats ago still counts (``Launcher.wait``
    runs the run itself when nobody picks it up within ``pickup_seconds``)."""
    from prefect.client.schemas.filters import WorkerFilter, WorkerFilterStatus
    from prefect.client.schemas.objects import WorkerStatus

    online = client.read_workers_for_work_pool(
        pool_name, worker_filter=WorkerFilter(status=WorkerFilterStatus(any_=[WorkerStatus.ONLINE]))
    )
    return [w.name for w in online if not w.name.startswith(CLI_WORKER_PREFIX)]


def resting(run: Any) -> bool:
    """Final (Completed, Failed, Crashed, Cancelled), or Suspended/Paused: waiting for an official's decision."""
    return run.state is not None and (run.state.is_final() or run.state.is_paused())


@dataclass
class Launched:
    """A clearance run a command created, and what became of it."""

    flow_run_id: UUID
    state: str  # the state's name when the command let go: Scheduled, Completed, Suspended, Failed...
    message: str | None
    pool: str
    ran_here: bool  # executed by this command's own in-process worker

    @property
    def failed(self) -> bool:
        return self.state in ("Failed", "Crashed", "Cancelled", "TimedOut")

    def explained(self) -> str:
        where = "by this command's worker" if self.ran_here else f"by a worker of pool {self.pool}"
        if self.state == "Scheduled":
            return f"clearance run {self.flow_run_id} is Scheduled on work pool {self.pool}: its workers run it"
        if self.state in ("Suspended", "Paused"):
            return (
                f"clearance run {self.flow_run_id} ({where}) waits for an official (Suspended): "
                "`customs decide` records the signed decision and resumes it; any worker of the pool finishes it"
            )
        return f"clearance run {self.flow_run_id} ({where}): {self.state}" + (f" ({self.message})" if self.message else "")


class Launcher:
    """How a command starts clearances: each one a run of the ``clearance`` deployment (``start_clearance``),
    executed by a worker of its work pool, waited for where the command needs the outcome.

    ``with Launcher() as launcher: run = launcher.start(application_id); launcher.wait(run.id)``. The Prefect
    server is found or started, the deployment registered when missing (what `customs deploy` does). ``wait``
    polls the run until it rests: final, or Suspended (a declaration waiting for an official: resting, not
    failed). When no worker serves the pool (plain CLI use, no `customs serve` nor `customs worker`), or none
    picks the run up within ``pickup_seconds``, the command runs a ``CommandWorker`` in this process for as
    long as it waits; it is stopped when the launcher closes."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        pickup_seconds: float = 10.0,
        poll_seconds: float = 0.5,
        progress: Progress | None = None,
    ):
        self.settings = settings
        self.progress = progress  # ensure_server's: around the wait for a Prefect server started here
        self.pickup_seconds = pickup_seconds
        self.poll_seconds = poll_seconds
        self._stack = ExitStack()
        self._worker: WorkerThread | None = None
        self.client: Any = None
        self.deployment: Any = None

    def __enter__(self) -> Launcher:
        from prefect.client.orchestration import get_client

        settings = self.settings or get_settings()
        try:
            self._stack.enter_context(prefect_api(ensure_server(settings, progress=self.progress), settings))
            self.client = self._stack.enter_context(get_client(sync_client=True))
            self.deployment = self._clearance_deployment(settings)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self._worker is not None:
                self._worker.stop(wait_seconds=30.0)
                self._worker = None
        finally:
            self._stack.close()

    @property
    def pool(self) -> str:
        return self.deployment.work_pool_name

    def _clearance_deployment(self, settings: Settings) -> Any:
        from prefect.exceptions import ObjectNotFound

        try:
            deployment = self.client.read_deployment_by_name(CLEARANCE_DEPLOYMENT)
        except ObjectNotFound:
            deployment = None
        if deployment is None or not deployment.work_pool_name:
            from customs.orchestration.deployments import apply_project

            log.info("the clearance deployment is not on the Prefect server: putting the project there (customs deploy)")
            apply_project(settings)
            deployment = self.client.read_deployment_by_name(CLEARANCE_DEPLOYMENT)
        return deployment

    def start(self, application_id: str, *, rerun_act: int | None = None, idempotency_key: str | None = None) -> Any:
        """Create the run (or, with the same idempotency key, find the one made before)."""
        return start_clearance(
            application_id,
            rerun_act=rerun_act,
            idempotency_key=idempotency_key,
            deployment_id=self.deployment.id,
            client=self.client,
        )

    def served(self) -> bool:
        return bool(workers_serving(self.client, self.pool))

    def run_here(self, flow_run_id: UUID) -> None:
        """Execute this run in this process's own worker (started on first need)."""
        if self._worker is None:
            self._worker = WorkerThread(CommandWorker(self.pool))
            self._worker.start()
        worker = self._worker.worker
        assert isinstance(worker, CommandWorker)
        worker.serve(flow_run_id)

    def wait(self, flow_run_id: UUID, *, timeout: float | None = None) -> Launched:
        """Until the run rests (final, or Suspended waiting for an official), running it here when need be."""
        ran_here = self._worker is not None and flow_run_id in getattr(self._worker.worker, "runs", ())
        if not ran_here and not self.served():
            self.run_here(flow_run_id)
            ran_here = True
        started = time.monotonic()
        while True:
            run = self.client.read_flow_run(flow_run_id)
            if resting(run):
                return Launched(run.id, run.state.name, run.state.message, self.pool, ran_here)
            waited = time.monotonic() - started
            if not ran_here and run.state is not None and run.state.is_scheduled() and waited > self.pickup_seconds:
                log.warning("no worker of pool %s picked up run %s in %.0f s: running it here", self.pool, run.id, waited)
                self.run_here(flow_run_id)
                ran_here = True
            if timeout is not None and waited > timeout:
                return Launched(run.id, run.state.name if run.state else "?", None, self.pool, ran_here)
            time.sleep(self.poll_seconds)


def launch_clearance(
    application_id: str,
    *,
    wait: bool = True,
    rerun_act: int | None = None,
    idempotency_key: str | None = None,
    settings: Settings | None = None,
    progress: Progress | None = None,
) -> Launched:
    """One clearance run of the deployment for a command. ``wait``: until it rests (`submit --wait`, `clear`,
    `rerun`). Without ``wait`` (`customs submit`): left Scheduled for the pool's workers when one is online;
    when none is, run here until it rests all the same (the command would otherwise leave it for nobody).
    ``progress``: see ``ensure_server``."""
    with Launcher(settings, progress=progress) as launcher:
        run = launcher.start(application_id, rerun_act=rerun_act, idempotency_key=idempotency_key)
        if not wait and launcher.served():
            return Launched(run.id, run.state.name if run.state else "Scheduled", None, launcher.pool, False)
        return launcher.wait(run.id)
