"""The clearance worker: a Prefect worker type (``customs-thread``) that executes the runs of the work pool's
deployments in threads of its own process.

Prefect knows it through its worker API (``BaseWorker``): it polls the pool's queues, heartbeats, claims
each run by moving it to Pending through Prefect's orchestration (accepted once, so two workers never run
the same run), and the UI shows the pool, its workers and the deployments as Ready. What it adds to
Prefect's own workers:

- **No process per run.** A run executes in a thread (``run_flow``), several at once, sharing one API
  client, instead of a new Python process per run (about 5 s each for Prefect's process worker).
- **One heartbeat loop for all runs.** The engine's per-run heartbeat thread is switched off (it also held
  every synchronous run about a second at exit); the worker emits ``prefect.flow-run.heartbeat`` for each
  run it holds, from claim to end. When a worker dies, the heartbeats stop, and the automation
  "crash clearance runs whose worker stopped" (customs.orchestration.automations) marks its runs Crashed;
  the reconciler of every other worker re-runs them (tasks/reconcile.py).
- **One suspension watch per attempt.** A flow run can run several times (resumed after a decision,
  retried). Each attempt watches for "suspended from outside" from the server state it was claimed in, so
  the Suspended event of an earlier attempt is never taken for this one's (the quick-decision race), and
  only the attempt that added a watch removes it. A process never starts an attempt of a run while an
  earlier attempt of the same run is still exiting there. The watches share one watcher of the process
  (customs.orchestration.suspensions: Prefect's public events and client API); the engine hands each run's
  suspension request to its attempt through customs.orchestration.prefect_adapter, the one place that touches
  Prefect's internals, instead of starting an observer thread and websocket per run.
- **Outcomes checked.** An attempt that stops as suspended while the server shows the run Pending or
  Running is logged as an error and marked Crashed, to be re-run, never left dangling.

``prefect worker start --pool customs --type customs-thread`` starts it (entry point ``prefect.collections``
in pyproject.toml); ``customs serve`` and ``customs worker`` start it with the project's settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import anyio
import anyio.to_thread
from httpx import HTTPStatusError
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterNextScheduledStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
    WorkPoolFilter,
    WorkPoolFilterName,
    WorkQueueFilter,
    WorkQueueFilterName,
)
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.client.schemas.responses import WorkerFlowRunResponse
from prefect.context import SyncClientContext
from prefect.events import emit_event
from prefect.events.schemas.events import RelatedResource
from prefect.exceptions import Abort, Pause
from prefect.flow_engine import run_flow
from prefect.flows import Flow, load_flow_from_entrypoint
from prefect.settings import (
    PREFECT_API_AUTH_STRING,
    PREFECT_API_URL,
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    PREFECT_WORKER_QUERY_SECONDS,
    temporary_settings,
)
from prefect.states import Crashed, Pending
from prefect.utilities.engine import propose_state
from prefect.workers.base import BaseJobConfiguration, BaseVariables, BaseWorker, BaseWorkerResult

from customs.core.paths import PROJECT_ROOT
from customs.core.settings import get_settings
from customs.orchestration import prefect_adapter
from customs.orchestration.prefect_adapter import SuspensionRequest
from customs.orchestration.server import client_auth_string
from customs.orchestration.suspensions import AttemptWatch, SuspensionWatcher
from customs.services.support import report_spooled_failures

log = logging.getLogger("customs.worker")

WORKER_TYPE = "customs-thread"
FULL_POLL_SECONDS = 10.0  # Prefect's poll at least this often (deployments and queues are Ready within 60 s of one)

# The attempt the current thread executes (set by the worker before run_flow, read by the engine's suspension hook).
_current_attempt: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar("customs_attempt", default=None)


class ClearanceJobConfiguration(BaseJobConfiguration):
    """Nothing to configure per run: runs execute in the worker's own process and environment."""


class ClearanceVariables(BaseVariables):
    """No job variables (the pool's base job template lists the generic ones only)."""


class ClearanceWorkerResult(BaseWorkerResult):
    """``identifier``: host:pid:flow-run of the attempt; ``status_code`` 0 unless the attempt broke down."""


@dataclass
class Attempt:
    """One execution of a flow run in this process, from claim to end."""

    flow_run: FlowRun  # as read right after the claim: its state is this attempt's baseline
    resource: dict[str, str]
    related: list[RelatedResource]
    worker: ClearanceWorker
    request: SuspensionRequest | None = None  # the engine's, handed over when the run starts (prefect_adapter)
    suspended: State | None = None  # the suspension heard for this attempt, if any
    watch: AttemptWatch | None = None
    finished: anyio.Event = field(default_factory=anyio.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def id(self) -> UUID:
        return self.flow_run.id

    @property
    def baseline(self) -> State | None:
        return self.flow_run.state

    def on_suspended(self, flow_run_id: UUID, state: State) -> None:
        """The server suspended the run after this attempt began: stop at the next task boundary."""
        if flow_run_id != self.id:
            return
        with self._lock:
            self.suspended = state
            request = self.request
        if request is not None:
            request.mark_requested(state)

    def attach(self, request: SuspensionRequest) -> None:
        """The engine's request for this attempt (in the run's thread, as the run starts); a suspension heard
        before it is passed on at once."""
        with self._lock:
            self.request = request
            suspended = self.suspended
        if suspended is not None:
            request.mark_requested(suspended)


class ClearanceWorker(BaseWorker[ClearanceJobConfiguration, ClearanceVariables, ClearanceWorkerResult]):
    """Runs the flow runs of its work pool in threads of this process (see the module's docstring)."""

    type = WORKER_TYPE
    job_configuration = ClearanceJobConfiguration
    job_configuration_variables = ClearanceVariables
    _description = (
        "Customs clearance back office: executes flow runs in threads of the worker's own process, several at once, "
        "with one API client, one heartbeat loop and one suspension watch per attempt (no process per run)."
    )
    _display_name = "Customs clearance (threads)"
    _documentation_url = "https://customs.kgd.gov.kz/docs/running-on-several-hosts"
    _logo_url = ""

    @classmethod
    def get_default_base_job_template(cls) -> dict[str, Any]:
        """Nothing to template: runs execute in the worker's own process. Prefect validates every run created
        from a deployment against the pool's variables schema (checking the schema itself each time); the
        generic one (name, env, labels, command) cost the server about 15 ms of CPU per run, this one nothing."""
        return {
            "job_configuration": {"name": "{{ name }}"},
            "variables": {
                "type": "object",
                "properties": {"name": {"type": "string", "title": "Name", "description": "A name for the run's thread."}},
            },
        }

    def __init__(
        self,
        work_pool_name: str,
        *args: Any,
        run_heartbeat_seconds: float | None = None,
        reconcile_seconds: float | None = None,
        poll_seconds: float | None = None,
        keeps_project: bool = False,
        **kwargs: Any,
    ):
        settings = get_settings()
        # `prefect worker start` passes None for what it was not told: the project's settings fill those in.
        defaults = {
            "limit": settings.worker_concurrency,
            "prefetch_seconds": settings.worker_prefetch_seconds,
            "name": f"{socket.gethostname()}-{os.getpid()}",
        }
        for key, value in defaults.items():
            if kwargs.get(key) is None:
                kwargs[key] = value
        super().__init__(work_pool_name, *args, **kwargs)
        self.run_heartbeat_seconds = run_heartbeat_seconds or settings.worker_heartbeat_seconds
        self.reconcile_seconds = reconcile_seconds or settings.worker_reconcile_seconds
        self.poll_seconds = poll_seconds or settings.worker_poll_seconds
        # The host's project keeper (`customs worker`, `customs serve`): the pool, deployments and automations kept
        # on the Prefect server, re-created when lost (customs.orchestration.upkeep); the job gate rebuilds too.
        self.keeps_project = keeps_project
        self.keeper: Any = None
        self._attempts: dict[UUID, Attempt] = {}
        self._flows: dict[UUID, Flow] = {}
        self._flow_lock = anyio.Lock()
        self._threads: anyio.CapacityLimiter | None = None
        self._watcher: SuspensionWatcher | None = None
        self.executed = 0  # attempts finished (for tests and benchmarks)
        self.reconciled: list[dict[str, Any]] = []  # what the reconciler did, most recent last
        self.ready = threading.Event()  # set up: the pool polled and heartbeats sent
        self._last_full_poll = -FULL_POLL_SECONDS

    # ------------------------------------------------------------------------------------------
    # Life cycle

    async def start(self, *args: Any, **kwargs: Any) -> None:
        """Prefect's worker loops, with the engine's per-run heartbeat thread off (this worker heartbeats every
        run it holds), the poll interval of CUSTOMS_WORKER_POLL_SECONDS, and one API client for all runs."""
        updates = {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None, PREFECT_WORKER_QUERY_SECONDS: self.poll_seconds}
        if not PREFECT_API_AUTH_STRING.value() and PREFECT_API_URL.value():
            # `prefect worker start` told only CUSTOMS_PREFECT_AUTH_STRING (or on the server's host): the login too
            auth = client_auth_string(get_settings(), PREFECT_API_URL.value())
            if auth:
                updates[PREFECT_API_AUTH_STRING] = auth
        with temporary_settings(updates=updates), SyncClientContext():
            await super().start(*args, **kwargs)

    async def setup(self) -> None:
        await super().setup()
        quiet_thread_timeout_warnings()
        self._threads = anyio.CapacityLimiter(self._limit or 100)
        self._reconcile = _reconciler()
        # One watcher of suspensions for all attempts, through Prefect's public API; it outlives Prefect outages.
        self._watcher = await self._exit_stack.enter_async_context(SuspensionWatcher())
        # The engine hands this worker's runs' suspension requests to their attempts instead of starting an
        # observer of its own per run (the one private hook, confined to prefect_adapter).
        if prefect_adapter.install(_route_attempt):
            self._exit_stack.callback(prefect_adapter.uninstall, _route_attempt)
        background = await self._exit_stack.enter_async_context(anyio.create_task_group())
        self._exit_stack.callback(background.cancel_scope.cancel)  # runs before the task group exits (last in, first out)
        background.start_soon(self._heartbeat_loop)
        background.start_soon(self._reconcile_loop)
        background.start_soon(self._gate_loop)
        if self.keeps_project:
            from customs.orchestration.upkeep import ProjectKeeper

            self.keeper = ProjectKeeper(first_check=False).start()  # the host applied the project just before
            self._exit_stack.callback(self.keeper.stop)
        self.ready.set()

    # ------------------------------------------------------------------------------------------
    # Running a flow run

    # ------------------------------------------------------------------------------------------
    # Polling and claiming

    async def get_and_submit_flow_runs(self) -> list[FlowRun]:
        """Prefect's poll of the pool (the server picks runs by queue priority within the queues' and the pool's
        concurrency limits, and marks the deployments Ready), when a run is due or every FULL_POLL_SECONDS.

        Prefect's poll writes (the Ready marks): at CUSTOMS_WORKER_POLL_SECONDS, on the embedded SQLite server,
        those writes held intake's run creations seconds behind. A read-only look for a due run comes first."""
        if self._limiter is not None and self._limiter.available_tokens < 1:
            return []
        now = time.monotonic()
        if now - self._last_full_poll < FULL_POLL_SECONDS and not await self._runs_due():
            self._last_polled_time = datetime.now(UTC)
            return []
        self._last_full_poll = now
        return await super().get_and_submit_flow_runs()

    async def _runs_due(self) -> bool:
        due = await self.client.read_flow_runs(
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[self._work_pool_name])),
            work_queue_filter=WorkQueueFilter(name=WorkQueueFilterName(any_=sorted(self._work_queues)))
            if self._work_queues
            else None,
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
                next_scheduled_start_time=FlowRunFilterNextScheduledStartTime(
                    before_=datetime.now(UTC) + timedelta(seconds=self._prefetch_seconds)
                ),
            ),
            limit=1,
        )
        return bool(due)

    async def _get_scheduled_flow_runs(self) -> list[WorkerFlowRunResponse]:
        """Prefect's query for due runs, asking for no more than this worker has free slots.

        Prefect's own asks for the API's default page (200 runs) at every poll and submits only as many as it
        has slots: with a queue of a few hundred runs, every half second the server serialized and the worker
        parsed about 200 runs to start a handful (a quarter of the CPU per declaration, server and worker
        together, in bench/pipeline.py). The server still picks by queue priority within the limits."""
        slots = int(self._limiter.available_tokens) if self._limiter is not None else 200
        if slots < 1:
            return []
        body: dict[str, Any] = {
            "scheduled_before": (datetime.now(UTC) + timedelta(seconds=self._prefetch_seconds)).isoformat(),
            "limit": min(slots, 200),
        }
        if self._work_queues:
            body["work_queue_names"] = sorted(self._work_queues)
        try:
            response = await self.client.request(
                "POST", "/work_pools/{name}/get_scheduled_flow_runs", path_params={"name": self._work_pool_name}, json=body
            )
        except HTTPStatusError as exc:
            if exc.response.status_code == 404:  # the pool is made again at the next heartbeat (as Prefect's own)
                return []
            raise
        return WorkerFlowRunResponse.model_validate_list(response.json())

    # Prefect's worker, between claiming a run and calling run(), reads the deployment, resolves a job
    # configuration, emits an event, relabels the run and proposes a Submitting state: five more calls to
    # the API per run, which on the embedded SQLite server held each start up to two seconds behind the
    # others' writes. The claim is what matters (Pending, accepted once); this worker keeps to it.

    async def _submit_run(self, flow_run: FlowRun) -> None:
        """Claim the run (Pending through orchestration: accepted for one worker only), then execute it."""
        try:
            try:
                state = await propose_state(self.client, Pending(), flow_run_id=flow_run.id)
            except Abort as exc:
                log.debug("flow run %s not claimed: %s", flow_run.id, exc)
                state = None
            except Exception as exc:  # the API away: the run stays Scheduled for the next poll
                log.warning("flow run %s not claimed: %s: %s", flow_run.id, type(exc).__name__, exc)
                state = None
            if state is None or not state.is_pending():
                self._release_limit_slot(flow_run.id)
                return
            claimed = flow_run.model_copy(update={"state": state})
            identifier = await self._runs_task_group.start(self._execute_claimed, claimed)
            try:
                await self.client.update_flow_run(flow_run_id=flow_run.id, infrastructure_pid=identifier)
            except Exception as exc:  # only the UI's "which worker" suffers
                log.debug("flow run %s: infrastructure_pid not set: %s", flow_run.id, exc)
        finally:
            self._submitting_flow_run_ids.discard(flow_run.id)

    async def _execute_claimed(self, flow_run: FlowRun, task_status: anyio.abc.TaskStatus) -> None:
        try:
            result = await self.run(flow_run, None, task_status=task_status)
        except Exception as exc:
            log.exception("flow run %s could not be executed", flow_run.id)
            result = ClearanceWorkerResult(identifier=str(exc), status_code=1)
        finally:
            self._release_limit_slot(flow_run.id)
        if result.status_code != 0:
            await self._propose_crashed_state(flow_run, "the clearance worker could not execute it (see the worker's log)")

    async def run(
        self, flow_run: FlowRun, configuration: ClearanceJobConfiguration | None, task_status: anyio.abc.TaskStatus | None = None
    ) -> ClearanceWorkerResult:
        """Execute a claimed run (its state is the claim's) in a thread, and check how it ended."""
        identifier = f"{socket.gethostname()}:{os.getpid()}:{flow_run.id}"
        try:
            flow = await self._flow_of(flow_run)
        except Exception:
            if task_status is not None:
                task_status.started(identifier)
            raise
        previous = self._attempts.get(flow_run.id)
        if previous is not None:  # Prefect holds a run's slot until run() returns, so this is a guard, not a path
            log.warning("flow run %s: an earlier attempt is still exiting here; waiting for it before starting", flow_run.id)
            await previous.finished.wait()
        attempt = Attempt(flow_run, *self._heartbeat_template(flow_run), worker=self)
        self._attempts[flow_run.id] = attempt
        self._watch(attempt)
        emit_event(event="prefect.flow-run.heartbeat", resource=attempt.resource, related=attempt.related)  # the first, at once
        if task_status is not None:
            task_status.started(identifier)
        try:
            outcome = await anyio.to_thread.run_sync(self._execute, flow, attempt, limiter=self._threads, abandon_on_cancel=False)
        finally:
            self._unwatch(attempt)
            if self._attempts.get(flow_run.id) is attempt:
                del self._attempts[flow_run.id]
            attempt.finished.set()
            self.executed += 1
        return ClearanceWorkerResult(identifier=identifier, status_code=await self._conclude(attempt, outcome))

    def _execute(self, flow: Flow, attempt: Attempt) -> tuple[str, Any]:
        """In the run's own thread: the engine, with this attempt as the one the suspension watch serves."""
        threading.current_thread().name = f"flow-run-{attempt.id}"
        token = _current_attempt.set(attempt)
        try:
            if flow.isasync:  # an async flow (outbox-dispatch) gets an event loop of its own in this thread
                return "state", asyncio.run(run_flow(flow, flow_run=attempt.flow_run, return_type="state"))
            return "state", run_flow(flow, flow_run=attempt.flow_run, return_type="state")
        except Pause as paused:  # suspended (or paused): run_flow re-raises it whatever return_type says
            return "paused", paused.state
        except Abort as aborted:
            return "aborted", aborted
        except BaseException as exc:  # the run's state in Prefect says what happened; the worker carries on
            return "error", exc
        finally:
            _current_attempt.reset(token)

    async def _conclude(self, attempt: Attempt, outcome: tuple[str, Any]) -> int:
        """0, or 1 when the attempt broke down (Prefect then proposes Crashed); a suspension the server does
        not show is logged as an error and the run marked Crashed, so that it is re-run, never left dangling."""
        kind, value = outcome
        if kind == "error":
            log.error("flow run %s ended with %s: %s", attempt.id, type(value).__name__, value)
            return 1
        if kind == "state" and value is not None and value.is_cancelling():
            await self._mark_flow_run_as_cancelled(
                await self.client.read_flow_run(attempt.id),
                state_updates={"message": "Cancelled while it ran in a worker thread."},
            )
        if kind == "paused" and not await self._server_suspended(attempt):
            server = (await self.client.read_flow_run(attempt.id)).state
            if server is not None and not server.is_final():
                message = (
                    f"the attempt stopped as {value.name if value else 'paused'} but the server never suspended it "
                    f"(it shows the run {server.type.value}, {server.name}); marked Crashed so that it runs again"
                )
                log.error("flow run %s: %s", attempt.id, message)
                try:
                    await propose_state(self.client, Crashed(message=message), flow_run_id=attempt.id, force=True)
                except Abort:
                    pass
        return 0

    async def _server_suspended(self, attempt: Attempt) -> bool:
        """Whether the server paused the run after this attempt began (else the attempt stopped for nothing)."""
        baseline = attempt.baseline.timestamp if attempt.baseline is not None else None
        states = await self.client.read_flow_run_states(attempt.id)
        return any(state.is_paused() and (baseline is None or state.timestamp > baseline) for state in states)

    async def _flow_of(self, flow_run: FlowRun) -> Flow:
        """The flow of a run's deployment, loaded once per deployment from its entrypoint in this project."""
        async with self._flow_lock:
            flow = self._flows.get(flow_run.deployment_id)
            if flow is None:
                deployment = await self.client.read_deployment(flow_run.deployment_id)
                entrypoint = deployment.entrypoint or ""
                path, _, name = entrypoint.partition(":")
                target = path if os.path.isabs(path) else str(PROJECT_ROOT / path)
                flow = await anyio.to_thread.run_sync(load_flow_from_entrypoint, f"{target}:{name}")
                self._flows[flow_run.deployment_id] = flow
            return flow

    # ------------------------------------------------------------------------------------------
    # Heartbeats: one loop for every run this worker holds

    def _heartbeat_template(self, flow_run: FlowRun) -> tuple[dict[str, str], list[RelatedResource]]:
        resource = {"prefect.resource.id": f"prefect.flow-run.{flow_run.id}", "prefect.resource.name": flow_run.name or ""}
        related = [
            RelatedResource.model_validate(
                {"prefect.resource.id": f"prefect.flow.{flow_run.flow_id}", "prefect.resource.role": "flow"}
            )
        ]
        if flow_run.deployment_id:
            related.append(
                RelatedResource.model_validate(
                    {"prefect.resource.id": f"prefect.deployment.{flow_run.deployment_id}", "prefect.resource.role": "deployment"}
                )
            )
        if self._work_pool is not None:
            related.append(
                RelatedResource.model_validate(
                    {
                        "prefect.resource.id": f"prefect.work-pool.{self._work_pool.id}",
                        "prefect.resource.role": "work-pool",
                        "prefect.resource.name": self._work_pool.name,
                    }
                )
            )
        related += [
            RelatedResource.model_validate({"prefect.resource.id": f"prefect.tag.{tag}", "prefect.resource.role": "tag"})
            for tag in sorted(flow_run.tags or [])
        ]
        return resource, related

    def beat(self) -> int:
        """One heartbeat for every run held now (from claim to end); returns how many."""
        attempts = list(self._attempts.values())
        for attempt in attempts:
            emit_event(event="prefect.flow-run.heartbeat", resource=attempt.resource, related=attempt.related)
        return len(attempts)

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                self.beat()
            except Exception as exc:  # the events client reconnects by itself; a missed beat is not a dead worker
                log.warning("heartbeats not sent: %s", exc)
            await anyio.sleep(self.run_heartbeat_seconds)

    # ------------------------------------------------------------------------------------------
    # The reconciler: crashed clearance runs (their worker died) are re-run by whichever worker sees them

    def _reconcile_crashed(self) -> list[dict[str, Any]]:
        try:  # failures this host could not report while the database was away (kept on its disk)
            for report_id in report_spooled_failures():
                log.warning("reconciler: a failure kept while the database was away is reported now: %s", report_id)
        except Exception as exc:
            log.warning("reconciler: kept failure reports still wait (%s: %s)", type(exc).__name__, exc)
        with get_client(sync_client=True) as client:
            return self._reconcile(client, scope="orphans")

    async def _reconcile_loop(self) -> None:
        while True:
            await anyio.sleep(self.reconcile_seconds)
            try:
                actions = await anyio.to_thread.run_sync(self._reconcile_crashed)
            except Exception as exc:  # the database or the API away: the next pass tries again
                log.warning("reconciler: %s: %s", type(exc).__name__, exc)
                continue
            for action in actions:
                log.info("reconciler: %s", action)
            self.reconciled = (self.reconciled + actions)[-200:]

    # ------------------------------------------------------------------------------------------
    # The job gate: runs of the minute jobs only when they have something to do (customs.orchestration.gate)

    def _gate_pass(self) -> list[str]:
        from customs.orchestration.gate import gate_pass

        with get_client(sync_client=True) as client:
            return gate_pass(client, get_settings(), keeps_project=self.keeps_project)

    async def _gate_loop(self) -> None:
        seconds = get_settings().job_gate_seconds
        while True:
            await anyio.sleep(seconds - time.time() % seconds + 1)  # just after each minute (each interval) starts
            try:
                started = await anyio.to_thread.run_sync(self._gate_pass)
            except Exception as exc:  # the database or the API away: the next pass looks again
                log.warning("job gate: %s: %s", type(exc).__name__, exc)
                continue
            for line in started:
                log.info("job gate: %s", line)

    # ------------------------------------------------------------------------------------------
    # The suspension watch of an attempt (from claim to end, in the worker's loop)

    def _watch(self, attempt: Attempt) -> None:
        """Watch for "suspended from outside" from the server state the attempt was claimed in: suspensions of
        the run that occurred at or before it belong to earlier attempts and are ignored."""
        if self._watcher is not None:
            attempt.watch = self._watcher.watch(attempt.id, attempt.baseline, attempt.on_suspended)

    def _unwatch(self, attempt: Attempt) -> None:
        """Only the attempt that added a watch removes it."""
        if self._watcher is not None and attempt.watch is not None:
            self._watcher.unwatch(attempt.watch)


def _reconciler():
    # Imported when a worker is set up (before any run: importing while runs use SQLAlchemy in other threads
    # can find its modules half-initialised), not at the top: Prefect imports this module, the entry point of the
    # worker type, in every process that loads its collections, the Prefect server's included.
    from tasks.reconcile import reconcile_clearance_runs

    return reconcile_clearance_runs


def _route_attempt(flow_run_id: UUID, request: SuspensionRequest) -> contextlib.AbstractContextManager[None] | None:
    """The engine's suspension hook (prefect_adapter), in the run's thread: a run this thread executes for a
    clearance worker hands its request to its attempt (whose watch the worker keeps); any other run, a subflow's
    included, is left to Prefect's own observer."""
    attempt = _current_attempt.get()
    if attempt is None or attempt.id != flow_run_id:
        return None
    attempt.attach(request)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------


class WorkerThread:
    """A ClearanceWorker running in a thread of its own, for `customs serve` (beside the intake API) and tests.

    The thread runs in a copy of the caller's context, so the worker talks to the Prefect API the caller was
    set up for. ``stop`` cancels the worker's loops; runs in progress finish first (Prefect's worker waits
    for them), up to ``wait_seconds``."""

    def __init__(self, worker: ClearanceWorker):
        self.worker = worker
        self._loop = None
        self._scope: anyio.CancelScope | None = None
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self, timeout: float = 60.0) -> ClearanceWorker:
        self._thread = threading.Thread(
            target=contextvars.copy_context().run, args=(anyio.run, self._main), name="clearance-worker", daemon=True
        )
        self._thread.start()
        if not self.worker.ready.wait(timeout) and self.error is None:
            raise RuntimeError(f"the clearance worker did not start within {timeout:g} s")
        if self.error is not None:
            raise RuntimeError(f"the clearance worker could not start: {self.error}") from self.error
        return self.worker

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                await self.worker.start(printer=log.info)
        except BaseException as exc:  # the caller is told at start; later, the log says why it stopped
            self.error = exc
            self.worker.ready.set()
            log.error("the clearance worker stopped: %s: %s", type(exc).__name__, exc)

    def stop(self, wait_seconds: float = 15.0) -> None:
        if self._loop is not None and self._scope is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._scope.cancel)
        if self._thread is not None:
            self._thread.join(wait_seconds)


class _OnceFilter(logging.Filter):
    """Prefect warns at every task run in a worker thread that its timeout cannot interrupt blocking work.
    True (and said in the docs); once per process is enough for operations staff."""

    def __init__(self):
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "Timeouts in worker threads" not in str(record.msg):
            return True
        first, self.seen = not self.seen, True
        return first


def quiet_thread_timeout_warnings() -> None:
    """Installed by every worker at setup, after Prefect has configured its logging (which replaces filters)."""
    loggers = [logging.getLogger(name) for name in ("prefect.task_runs", "prefect.flow_runs")]
    if any(isinstance(f, _OnceFilter) for f in loggers[0].filters):
        return
    once = _OnceFilter()
    for logger in loggers:
        logger.addFilter(once)
