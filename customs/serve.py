"""`customs serve`: the Prefect server, the deployments of prefect.yaml, a worker that runs them, and the intake API.

The worker runs flow runs *in this process*, several at once (threads), instead of a new Python
process per run (Prefect's process worker and ``serve()`` spend about 5 s starting each one). It picks
up the scheduled runs of the deployments registered from prefect.yaml: intake's clearance runs, the
schedules (batch-recheck, deadline-watch, outbox-dispatch, print-deadlines, crl-refresh), a run
started from the UI, a failed run retried from the UI, a suspended run that was resumed. It claims each
run by moving it to Pending through Prefect's orchestration, which accepts that once, so two workers
never execute the same run.
"""

from __future__ import annotations

import asyncio
import contextvars
import faulthandler
import logging
import signal
import sys
import threading
import time
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml

from customs import PROJECT_ROOT
from customs.settings import Settings, get_settings
from customs.timeutil import utcnow

log = logging.getLogger("customs.serve")
PREFECT_YAML = PROJECT_ROOT / "prefect.yaml"


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    entrypoint: str
    description: str
    tags: tuple[str, ...]
    parameters: dict[str, Any]
    schedules: tuple[dict[str, Any], ...]


def read_deployments(path: Path = PREFECT_YAML) -> list[DeploymentSpec]:
    """The deployments of prefect.yaml, checked for what `customs serve` needs."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read the deployments: {exc}") from None
    specs = []
    for index, item in enumerate(data.get("deployments") or []):
        where = f"{path}: deployments[{index}]"
        if not isinstance(item, dict) or not item.get("name") or not item.get("entrypoint"):
            raise ValueError(f"{where}: each deployment needs a name and an entrypoint")
        specs.append(DeploymentSpec(
            name=item["name"], entrypoint=item["entrypoint"], description=" ".join(str(item.get("description", "")).split()),
            tags=tuple(item.get("tags") or ()), parameters=dict(item.get("parameters") or {}),
            schedules=tuple(item.get("schedules") or ()),
        ))
    if not specs:
        raise ValueError(f"{path}: no deployments")
    return specs


def register_deployments(specs: list[DeploymentSpec]) -> dict[str, tuple[UUID, Any]]:
    """Create or update each deployment on the Prefect server; returns name -> (deployment id, flow)."""
    from prefect.flows import load_flow_from_entrypoint
    from prefect.schedules import Cron

    registered = {}
    for spec in specs:
        flow = load_flow_from_entrypoint(str(PROJECT_ROOT / spec.entrypoint))
        schedules = [Cron(s["cron"], timezone=s.get("timezone")) for s in spec.schedules if "cron" in s]
        deployment = flow.to_deployment(name=spec.name, description=spec.description, tags=list(spec.tags),
                                        parameters=spec.parameters, schedules=schedules or None)
        registered[spec.name] = (deployment.apply(), flow)
    return registered


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
        from prefect._flow_run_suspension import mark_flow_run_suspension_requested

        if not mark_flow_run_suspension_requested(flow_run_id, state):
            with self._requests_lock:
                request = self._requests.get(flow_run_id)
            if request is not None:
                request.mark_requested(state)

    async def _main(self) -> None:
        from prefect._internal.observers import FlowRunSuspendingObserver

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
        import prefect.flow_engine as engine

        if self._original is None:
            self._original = engine.observe_flow_run_suspension
            engine.observe_flow_run_suspension = self.observe

    def stop(self) -> None:
        import prefect.flow_engine as engine

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
        self._pool = ThreadPoolExecutor(max_workers=sum(self.limits.get(n, 1) for n in self.deployments), thread_name_prefix="flow-run")
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
        from prefect.context import SyncClientContext

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
        from prefect.client.schemas.filters import (
            DeploymentFilter, DeploymentFilterId, FlowRunFilter, FlowRunFilterNextScheduledStartTime, FlowRunFilterState,
            FlowRunFilterStateType)
        from prefect.client.schemas.objects import StateType
        from prefect.client.schemas.sorting import FlowRunSort
        from prefect.states import Pending

        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=list(wanted))),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
                next_scheduled_start_time=FlowRunFilterNextScheduledStartTime(before_=utcnow()),
            ),
            sort=FlowRunSort.NEXT_SCHEDULED_START_TIME_ASC, limit=sum(wanted.values()),
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
        from prefect.flow_engine import run_flow

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
        from customs.prefect_server import shared_client

        by_id = {deployment_id: (name, flow) for name, (deployment_id, flow) in self.deployments.items()}
        with self._lock:
            wanted = {deployment_id: self.limits.get(name, 1) - self.running.get(name, 0) for deployment_id, (name, _) in by_id.items()}
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
        from customs.prefect_server import shared_client

        shared_client().create_flow_run_from_deployment(
            self.deployment_id, parameters={"application_id": application_id}, name=application_id,
            tags=["clearance", f"application:{application_id}"], idempotency_key=f"intake:{application_id}",
        )

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
        import heapq

        with self._cv:
            if self._thread is None:
                self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._retry_loop,),
                                                name="clearance-starter", daemon=True)
                self._thread.start()
            heapq.heappush(self._due, (time.monotonic() + self.delays[attempt], application_id, attempt))
            self._cv.notify()

    def _retry_loop(self) -> None:
        import heapq

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


def port_free(host: str, port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def serve(settings: Settings | None = None, *, ready: threading.Event | None = None, stop: threading.Event | None = None,
          echo=None, exit_watchdog_seconds: float | None = None) -> None:
    """Start everything and block until ``stop`` is set (or Ctrl-C, or SIGTERM).

    ``exit_watchdog_seconds`` (the CLI's, which owns the process): once stopping has begun, a shutdown or
    interpreter exit that hangs that long writes the stacks of all threads to stderr and ends the process."""
    if echo is None:
        def echo(*args):  # stdout may be a file: flushed at once, so the log shows where it stands
            print(*args, flush=True)

    import uvicorn

    from customs.api import create_app
    from customs.db import init_db
    from customs.prefect_server import ensure_server, prefect_api, ui_url

    settings = settings or get_settings()
    if not port_free(settings.api_host, settings.api_port):
        raise SystemExit(f"port {settings.api_port} on {settings.api_host} is taken: the intake API cannot start "
                         "(set CUSTOMS_API_PORT, or stop what listens there)")
    init_db(settings)
    quiet_thread_timeout_warnings()
    api_url = ensure_server(settings)
    stop = stop or threading.Event()
    with prefect_api(api_url):
        specs = read_deployments()
        deployments = register_deployments(specs)
        limits = {name: 1 for name in deployments} | {"clearance": settings.worker_concurrency}
        worker = InProcessWorker(deployments, limits, poll_seconds=settings.worker_poll_seconds, stop_event=stop)
        app = create_app()
        starter = ClearanceStarter(deployments["clearance"][0])
        app.state.start_clearance = starter
        app.state.decision_given = _decision_given
        app.state.print_requested = _schedule_print_timers
        config = uvicorn.Config(app, host=settings.api_host, port=settings.api_port, log_level="warning", lifespan="on")
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # Ctrl-C is ours: stop the worker and the API together
        api_thread = threading.Thread(target=contextvars.copy_context().run, args=(server.run,), name="intake-api", daemon=True)
        worker_thread = threading.Thread(target=contextvars.copy_context().run, args=(worker.run,), name="worker", daemon=True)
        api_thread.start()
        worker_thread.start()
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.1)
        echo(f"Prefect UI:   {ui_url(api_url)}/runs")
        echo(f"Prefect API:  {api_url}")
        echo(f"Intake API:   http://{settings.api_host}:{settings.api_port}/v1  (OpenAPI: /docs, /openapi.json)")
        echo(f"Deployments:  {', '.join(deployments)}; worker runs up to {settings.worker_concurrency} clearances at once in this process")
        echo("Ctrl-C (or SIGTERM) stops the API and the worker (the Prefect server keeps running: customs server stop)")
        previous = {}
        if threading.current_thread() is threading.main_thread():
            # Our own handlers: a process started in the background by a non-interactive shell inherits SIGINT
            # ignored (Python then never raises KeyboardInterrupt), and service managers stop with SIGTERM.
            def on_signal(signum, frame):
                if not stop.is_set():
                    echo(f"stopping ({signal.Signals(signum).name})...")
                stop.set()

            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, on_signal)
        if ready is not None:
            ready.set()
        try:
            while not stop.is_set():
                stop.wait(0.5)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if exit_watchdog_seconds:
                faulthandler.dump_traceback_later(exit_watchdog_seconds, exit=True, file=sys.stderr)
            stop.set()
            server.should_exit = True
            worker.stop(wait_seconds=15.0)
            starter.stop()
            api_thread.join(5)
            worker_thread.join(5)
            echo("stopped")


def _schedule_print_timers(request_id: str, alert_at, due_at) -> None:
    from flows.print_deadlines import schedule_print_timers

    schedule_print_timers(request_id, alert_at, due_at)


def _decision_given(application_id: str, run_input: dict) -> None:
    """The API recorded an official's decision: give it to the flow run waiting for it, if any."""
    from customs.cli import resume_waiting_runs

    resume_waiting_runs(application_id, run_input, settle_seconds=2.0)
