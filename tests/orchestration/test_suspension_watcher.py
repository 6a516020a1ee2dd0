"""The worker's suspension watcher, per attempt, without a server: a suspension that occurred before an attempt
began is never its own, and only the attempt that added a watch removes it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from uuid import uuid4

from prefect.client.schemas.objects import State, StateType
from prefect.events.schemas.events import Event

from customs.orchestration.suspensions import SuspensionWatcher

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _suspended(at: datetime) -> State:
    return State(id=uuid4(), type=StateType.PAUSED, name="Suspended", timestamp=at)


def _event(run_id, state: State) -> Event:
    return Event(
        event="prefect.flow-run.Suspended",
        resource={"prefect.resource.id": f"prefect.flow-run.{run_id}"},
        id=state.id,
        occurred=state.timestamp,
    )


class _Client:
    def __init__(self, state: State):
        self.state = state

    async def read_flow_run(self, flow_run_id):
        return SimpleNamespace(id=flow_run_id, state=self.state)


def test_an_earlier_attempts_suspension_is_ignored_and_a_later_one_heard():
    async def scenario():
        run_id = uuid4()
        old = _suspended(T0)
        claimed = State(type=StateType.PENDING, timestamp=T0 + timedelta(seconds=1))  # the resumed attempt's claim
        watcher = SuspensionWatcher()
        watcher._client = _Client(claimed)
        told = []
        watcher.watch(run_id, claimed, lambda flow_run_id, state: told.append(state))
        watcher.handle_event(_event(run_id, old))  # the old attempt's event, delivered late
        await asyncio.sleep(0.05)
        assert told == []
        new = _suspended(T0 + timedelta(seconds=5))
        watcher._client.state = new
        watcher.handle_event(_event(run_id, new))
        await asyncio.sleep(0.05)
        assert [s.id for s in told] == [new.id]
        watcher.handle_event(_event(run_id, new))  # told once
        await asyncio.sleep(0.05)
        assert len(told) == 1

    asyncio.run(scenario())


def test_only_the_attempt_that_added_a_watch_removes_it():
    run_id = uuid4()
    watcher = SuspensionWatcher()
    first = watcher.watch(run_id, State(type=StateType.RUNNING, timestamp=T0), lambda *_: None)
    second = watcher.watch(run_id, State(type=StateType.PENDING, timestamp=T0 + timedelta(seconds=2)), lambda *_: None)
    watcher.unwatch(first)
    assert watcher.watched() == [second]
    watcher.unwatch(first)  # again: nothing of the other attempt's goes
    assert watcher.watched() == [second]
    watcher.unwatch(second)
    assert watcher.watched() == []


def test_an_attempt_claimed_while_suspended_is_told_at_once():
    run_id = uuid4()
    told = []
    state = _suspended(T0)
    SuspensionWatcher().watch(run_id, state, lambda flow_run_id, s: told.append(s))
    assert told == [state]
