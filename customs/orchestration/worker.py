"""The worker of `customs serve`: it executes the scheduled runs of the deployments *in this process*,
several at once (threads), instead of a new Python process per run (Prefect's process worker and
``serve()`` spend about 5 s starting each one). It picks up intake's clearance runs, the schedules
(batch-recheck, deadline-watch, outbox-dispatch, print-deadlines, crl-refresh), a run started from the
UI, a failed run retried from the UI, a suspended run that was resumed. It claims each run by moving it
to Pending through Prefect's orchestration, which accepts that once, so two workers never execute the
same run.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import prefect.flow_engine as engine
from prefect._flow_run_suspension import mark_flow_run_suspension_requested
from prefect._internal.observers import FlowRunSuspendingObserver
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterNextScheduledStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.context import SyncClientContext
from prefect.flow_engine import run_flow
from prefect.states import Pending

from customs.core.clock import utcnow
from customs.orchestration.server import shared_client

log = logging.getLogger("customs.worker")


class SharedSuspensionObserver:
    """One watcher of "this flow run was suspended from outside" (the UI's Suspend) for all runs of the process.

    For every run of a deployment Prefect 3.9's engine starts a thread with its own event loop, API client
    and events websocket to notice that (``prefect._flow_run_suspension.observe_flow_run_suspension``):
    a sixth of the in-process worker's CPU, and a websocket subscription per run on the server. This is
    the same observer (Prefect's ``FlowRunSuspendingObserver``, which watches any number of runs) run once:
    each flow run is added to it when it starts and removed when it ends, and a suspension reaches the
    run the way Prefect's own observer delivers it.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._observer = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._closing: asyncio.Event | None = None
        self._requests: dict[UUID, Any] = {}
        self._requests_lock = threading.Lock()
        self._original = None

    def _on_suspended(self, flow_run_id: UUID, state) -> None:
        if not mark_flow_run_suspension_requested(flow_run_id, state):
            with self._requests_lock:
                request = self._requests.get(flow_run_id)
            if request is not None:
                request.mark_requested(state)

    async def _main(self) -> None:
        self._closing = asyncio.Event()
        try:
            async with FlowRunSuspendingObserver(on_suspended=self._on_suspended) as observer:
                self._observer = observer
                self._ready.set()
                await self._closing.wait()
        except BaseException as exc:  # without it, runs still execute; only an outside Suspend goes unnoticed
            log.warning("worker: the suspension observer stopped: %s", exc)
        finally:
            self._observer = None
            self._ready.set()

    def start(self, timeout: float = 30.0) -> None:
        """Start in the calling context (it carries the Prefect API settings)."""
        context = contextvars.copy_context()

        def thread_main() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                context.run(self._loop.run_until_complete, self._main())
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=thread_main, name="suspension-observer", daemon=True)
        self._thread.start()
        self._ready.wait(timeout)

    @property
    def running(self) -> bool:
        return self._observer is not None

    @contextmanager
    def observe(self, flow_run_id: UUID, suspension_request, polling_interval: float = 10):
        """Drop-in for Prefect's per-run ``observe_flow_run_suspension``."""
        if not self.running or self._loop is None:
            with self._original(flow_run_id, suspension_request, polling_interval):  # type: ignore[misc]
                yield
            return
        with self._requests_lock:
            self._requests[flow_run_id] = suspension_request
        self._loop.call_soon_threadsafe(self._add, flow_run_id)
        try:
            yield
        finally:
            with self._requests_lock:
                self._requests.pop(flow_run_id, None)
            if self._loop.is_running():
                self._loop.call_soon_threadsafe(self._remove, flow_run_id)

    def _add(self, flow_run_id: UUID) -> None:
        if self._observer is not None:
            self._observer.add_in_flight_flow_run_id(flow_run_id)

    def _remove(self, flow_run_id: UUID) -> None:
        if self._observer is not None:
            self._observer.remove_in_flight_flow_run_id(flow_run_id)

    def install(self) -> None:
        """Make the flow engine of this process use this observer."""
        if self._original is None:
            self._original = engine.observe_flow_run_suspension
            engine.observe_flow_run_suspension = self.observe

    def stop(self) -> None:
        if self._original is not None and engine.observe_flow_run_suspension == self.observe:
            engine.observe_flow_run_suspension = self._original
        if self._loop is not None and self._closing is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._closing.set)
        if self._thread is not None:
            self._thread.join(5)


@dataclass
class InProcessWorker:
    """Executes scheduled runs of the given deployments in this process, ``limits[name]`` at a time each."""

    deployments: dict[str, tuple[UUID, Any]]
    limits: dict[str, int]
    poll_seconds: float = 0.5
    stop_event: threading.Event = field(default_factory=threading.Event)
    running: dict[str, int] = field(default_factory=dict)
    executed: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(
            max_workers=sum(self.limits.get(n, 1) for n in self.deployments), thread_name_prefix="flow-run"
        )
        self._context = contextvars.copy_context()  # Prefect's API settings reach the threads through it
        self._client_context = None
        self._observer: SharedSuspensionObserver | None = None

    def start_runtime(self) -> None:
        """What every flow run of this worker shares instead of building its own (see README, throughput):

        - one Prefect API client: the engine takes the client of the ``SyncClientContext`` it finds, and
          builds one (with an SSL context: about 20 ms of CPU) only when there is none;
        - one observer of external suspension (one events subscription for all runs), in place of
          the thread, event loop, client and websocket Prefect starts for every deployment run.
        """

        def enter():
            self._client_context = SyncClientContext()
            self._client_context.__enter__()

        self._context.run(enter)
        self._observer = SharedSuspensionObserver()
        self._context.run(self._observer.start)
        self._observer.install()

    def stop_runtime(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer = None
        if self._client_context is not None:
            self._context.run(self._client_context.__exit__, None, None, None)
            self._client_context = None

    def _claim(self, client, wanted: dict[UUID, int]) -> list:
        """Claim due scheduled runs of the deployments in ``wanted`` (deployment id -> free slots): one query for all."""
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=list(wanted))),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
                next_scheduled_start_time=FlowRunFilterNextScheduledStartTime(before_=utcnow()),
            ),
            sort=FlowRunSort.NEXT_SCHEDULED_START_TIME_ASC,
            limit=sum(wanted.values()),
        )
        claimed = []
        for run in runs:
            if wanted.get(run.deployment_id, 0) <= 0:
                continue
            try:
                result = client.set_flow_run_state(run.id, Pending())
            except Exception as exc:  # another worker got there, or the run changed meanwhile
                log.debug("could not claim %s: %s", run.id, exc)
                continue
            if result.state is not None and result.state.is_pending():
                wanted[run.deployment_id] -= 1
                claimed.append(run.model_copy(update={"state": result.state}))
        return claimed

    def _execute(self, name: str, flow, flow_run) -> None:
        try:
            if flow.isasync:
                asyncio.run(run_flow(flow, flow_run=flow_run, return_type="state"))
            else:
                run_flow(flow, flow_run=flow_run, return_type="state")
        except BaseException as exc:  # the run's state in Prefect says what happened; the worker carries on
            log.debug("flow run %s ended with %s", flow_run.id, type(exc).__name__)
        finally:
            with self._lock:
                self.running[name] -= 1
                self.executed += 1

    def poll_once(self) -> int:
        by_id = {deployment_id: (name, flow) for name, (deployment_id, flow) in self.deployments.items()}
        with self._lock:
            wanted = {
                deployment_id: self.limits.get(name, 1) - self.running.get(name, 0) for deployment_id, (name, _) in by_id.items()
            }
        wanted = {k: v for k, v in wanted.items() if v > 0}
        if not wanted:
            return 0
        started = 0
        for flow_run in self._claim(shared_client(), wanted):
            name, flow = by_id[flow_run.deployment_id]
            with self._lock:
                self.running[name] = self.running.get(name, 0) + 1
            # A context can be entered by one thread at a time: each run gets its own copy.
            self._pool.submit(self._context.copy().run, self._execute, name, flow, flow_run)
            started += 1
        return started

    def run(self) -> None:
        if self._client_context is None:
            self.start_runtime()
        while not self.stop_event.is_set():
            try:
                busy = self.poll_once()
            except Exception as exc:  # the server restarting, a network hiccup: try again shortly
                log.warning("worker: cannot reach the Prefect API (%s); retrying", exc)
                busy = 0
            if not busy:
                self.stop_event.wait(self.poll_seconds)

    def stop(self, wait_seconds: float = 30.0) -> None:
        self.stop_event.set()
        deadline = time.monotonic() + wait_seconds
        while sum(self.running.values()) and time.monotonic() < deadline:
            time.sleep(0.2)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.stop_runtime()


class _OnceFilter(logging.Filter):
    """Prefect warns at every task run in a worker thread that its timeout cannot interrupt blocking work.
    True (and said in the README); once per process is enough for operations staff."""

    def __init__(self):
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "Timeouts in worker threads" not in str(record.msg):
            return True
        first, self.seen = not self.seen, True
        return first


def quiet_thread_timeout_warnings() -> None:
    once = _OnceFilter()
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logging.getLogger(name).addFilter(once)
