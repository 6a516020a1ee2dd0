"""The worker's watcher of suspensions from outside (the UI's Suspend), one per worker process, through Prefect's
public client and events API only.

It follows the events stream (``prefect.events.clients.get_events_subscriber`` filtered to
``prefect.flow-run.Suspended``) and, as a net under it, polls the runs it watches (``read_flow_runs``: those of
them Paused and named Suspended) every ``polling_interval`` seconds. Neither ever gives up: the stream is opened
again after 1, 2, 4, 8, 15, then every 30 s, and a failed poll is tried again at the next interval. An outage is
logged once (a warning) and the return once, however many connections and polls failed in between.

Watches are per **attempt**, not per flow run: a flow run can run several times (resumed after a decision,
retried), and an earlier attempt may still be exiting, here or on another host, while the next one starts. A
watch starts from the server state its attempt was claimed in (``since``): a suspension that occurred at or
before it belongs to an earlier attempt and is ignored, however late its event arrives. Only the watch's own
owner removes it (``unwatch`` takes the watch, not the run id).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateName,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import State, StateType
from prefect.events import Event
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.exceptions import ObjectNotFound

log = logging.getLogger("customs.worker")

SUSPENDED_EVENT = "prefect.flow-run.Suspended"
RESTART_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
CONNECT_TIMEOUT = 10.0
CONFIRM_RETRY_SECONDS = 0.5

OnSuspended = Callable[[UUID, State], None]


def is_suspended(state: State | None) -> bool:
    """The state Prefect gives a run suspended from outside (or by the flow itself): Paused, named Suspended."""
    return bool(state is not None and state.type == StateType.PAUSED and state.name == "Suspended")


class AttemptWatch:
    """One attempt's watch: told once, through ``on_suspended``, of a suspension that occurred after ``since``."""

    def __init__(self, flow_run_id: UUID, since: datetime | None, on_suspended: OnSuspended):
        self.flow_run_id = flow_run_id
        self.since = since
        self.on_suspended = on_suspended
        self.notified = False
        self.closed = False

    def after_start(self, occurred: datetime) -> bool:
        return self.since is None or occurred > self.since

    def notify(self, state: State) -> None:
        if self.closed or self.notified:
            return
        self.notified = True
        try:
            self.on_suspended(self.flow_run_id, state)
        except Exception:
            log.exception("suspension watcher: the attempt of flow run %s could not be told of its suspension", self.flow_run_id)


class SuspensionWatcher:
    """``async with SuspensionWatcher() as watcher``; then ``watcher.watch(...)`` and ``watcher.unwatch(watch)``
    from the watcher's event loop (the worker's)."""

    def __init__(self, polling_interval: float = 10.0, restart_delays: Sequence[float] = RESTART_DELAYS):
        self.polling_interval = polling_interval
        self.restart_delays = tuple(restart_delays)
        self.outage_since: float | None = None  # monotonic time Prefect stopped answering the watcher
        self.outages = 0  # how many outages it went through (one warning each)
        self.reconnects = 0  # event streams opened again after one failed or ended
        self.streaming = False
        self._watches: dict[UUID, list[AttemptWatch]] = {}
        self._client: PrefectClient | None = None
        self._client_cm: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._subscriber: Any = None
        self._closing = False

    # ------------------------------------------------------------------------------------------
    # Watches

    def watch(self, flow_run_id: UUID, since_state: State | None, on_suspended: OnSuspended) -> AttemptWatch:
        """Watch an attempt of ``flow_run_id`` from ``since_state`` (the state it was claimed in). When that state
        is itself Suspended the attempt is told at once (as Prefect's engine does at a run's start)."""
        watch = AttemptWatch(flow_run_id, since_state.timestamp if since_state is not None else None, on_suspended)
        self._watches.setdefault(flow_run_id, []).append(watch)
        if is_suspended(since_state):
            assert since_state is not None
            watch.notify(since_state)
        return watch

    def unwatch(self, watch: AttemptWatch) -> None:
        watch.closed = True
        watches = self._watches.get(watch.flow_run_id, [])
        if watch in watches:
            watches.remove(watch)
        if not watches:
            self._watches.pop(watch.flow_run_id, None)

    def watched(self) -> list[AttemptWatch]:
        return [watch for watches in self._watches.values() for watch in watches]

    # ------------------------------------------------------------------------------------------
    # Events

    def handle_event(self, event: Event) -> None:
        """A ``prefect.flow-run.Suspended`` event: each open watch of that run after whose start it occurred
        confirms it against the run's state (the event names the state's id), without holding the stream."""
        if event.event != SUSPENDED_EVENT:
            return
        resource_id = event.resource.id
        if not resource_id.startswith("prefect.flow-run."):
            return
        try:
            flow_run_id = UUID(resource_id.removeprefix("prefect.flow-run."))
        except ValueError:
            return
        for watch in list(self._watches.get(flow_run_id, [])):
            if watch.notified or watch.closed:
                continue
            if not watch.after_start(event.occurred):
                log.debug("suspension watcher: flow run %s: a suspension of an earlier attempt ignored", flow_run_id)
                continue
            self._spawn(self._confirm(watch, event.id, event.occurred))

    async def _confirm(self, watch: AttemptWatch, state_id: UUID, occurred: datetime) -> None:
        """The run's state as the server has it: the event's own state (or any Suspended state since the attempt
        began) tells the attempt; a later state means it was suspended and has moved on since (resumed at
        once): the attempt stops all the same, so that it never runs beside the resumed run's next attempt."""
        while not (watch.closed or watch.notified or self._closing):
            try:
                assert self._client is not None
                state = (await self._client.read_flow_run(watch.flow_run_id)).state
            except ObjectNotFound:
                return
            except Exception as exc:
                log.debug("suspension watcher: flow run %s not read (%s); tried again", watch.flow_run_id, exc)
            else:
                if state is not None:
                    if state.id == state_id or (is_suspended(state) and watch.after_start(state.timestamp)):
                        watch.notify(state)
                        return
                    if state.timestamp >= occurred:
                        watch.notify(State(id=state_id, type=StateType.PAUSED, name="Suspended", timestamp=occurred))
                        return
            await asyncio.sleep(CONFIRM_RETRY_SECONDS)

    # ------------------------------------------------------------------------------------------
    # Polling: the net under the stream, and the only way while it is down

    async def poll(self) -> None:
        """One look at the watched runs: those suspended since their attempt began are told."""
        ids = [flow_run_id for flow_run_id, watches in self._watches.items() if any(not w.notified for w in watches)]
        if not ids:
            return
        assert self._client is not None
        runs = await self._client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=ids),
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.PAUSED]), name=FlowRunFilterStateName(any_=["Suspended"])
                ),
            )
        )
        for run in runs:
            if not is_suspended(run.state):
                continue
            assert run.state is not None
            for watch in list(self._watches.get(run.id, [])):
                if watch.after_start(run.state.timestamp):
                    watch.notify(run.state)

    async def _poll_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.polling_interval)
            if not self._watches:
                continue
            try:
                await self.poll()
            except Exception as exc:
                self._down(exc)
            else:
                self._up()

    # ------------------------------------------------------------------------------------------
    # The events stream, opened again whenever it fails or ends

    async def _stream_loop(self) -> None:
        failures = 0
        first = True
        event_filter = EventFilter(event=EventNameFilter(name=[SUSPENDED_EVENT]))
        while not self._closing:
            if not first:
                await asyncio.sleep(self.restart_delays[min(failures, len(self.restart_delays) - 1)])
                self.reconnects += 1
            first = False
            try:
                subscriber = self._subscriber = get_events_subscriber(filter=event_filter, reconnection_attempts=0)
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await subscriber.__aenter__()
            except Exception as exc:
                failures += 1
                self._down(exc)
                continue
            try:
                self.streaming = True
                failures = 0
                self._up()
                if self._watches:  # what happened while the stream was down
                    self._spawn(self._poll_once())
                async for event in subscriber:
                    self.handle_event(event)
                log.debug("suspension watcher: the events stream ended; opened again")
            except Exception as exc:
                failures += 1
                self._down(exc)
            finally:
                self.streaming = False
                self._subscriber = None
                try:
                    await subscriber.__aexit__(None, None, None)
                except Exception:
                    pass

    async def _poll_once(self) -> None:
        try:
            await self.poll()
        except Exception as exc:
            self._down(exc)

    # ------------------------------------------------------------------------------------------
    # Outages: one warning when Prefect stops answering, one line when it answers again

    def _down(self, error: BaseException) -> None:
        if self._closing:
            return
        if self.outage_since is None:
            self.outage_since = time.monotonic()
            self.outages += 1
            log.warning(
                "suspension watcher: the Prefect API does not answer (%s: %s); a Suspend from the UI is noticed "
                "once it is back (tried again with backoff)",
                type(error).__name__,
                str(error)[:200],
            )
        else:
            log.debug("suspension watcher: still no Prefect API (%s)", error)

    def _up(self) -> None:
        if self.outage_since is not None:
            log.warning("suspension watcher: the Prefect API answers again after %.0f s", time.monotonic() - self.outage_since)
            self.outage_since = None

    # ------------------------------------------------------------------------------------------
    # Life cycle

    def _spawn(self, coroutine) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def __aenter__(self) -> SuspensionWatcher:
        self._client_cm = get_client()
        self._client = await self._client_cm.__aenter__()
        self._spawn(self._stream_loop())
        self._spawn(self._poll_loop())
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self._closing = True
        for watch in self.watched():
            watch.closed = True
        self._watches.clear()
        subscriber, self._subscriber = self._subscriber, None
        if subscriber is not None:  # closing the websocket ends the stream's iteration (a cancel alone can be lost in it)
            try:
                await asyncio.wait_for(subscriber.__aexit__(None, None, None), timeout=2.0)
            except Exception:  # TimeoutError included
                pass
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:  # bounded: the worker's shutdown never waits on Prefect
            await asyncio.wait(tasks, timeout=2.0)
        if self._client_cm is not None:
            await self._client_cm.__aexit__(*exc_info)
            self._client = None
