"""This attempt of a flow run, and whether the run moved on without it (issue 26: the zombie worker).

A worker stopped (SIGSTOP, a host frozen, a pause of the virtual machine) loses its heartbeats; the run is marked
Crashed and the reconciler gives it to another worker, whose attempt may end it. When the stopped worker
resumes, its attempt carries on from where it was and, at its end, proposes its own final state: Prefect's
orchestration accepts Completed over a Completed run (nothing persisted to protect) and over the other attempt's
Running, so the run got a second, later Completed (or a Failed over a Completed) written by an attempt nobody
was waiting for any more.

An attempt knows the state it runs in: the Running state the server gave it (the engine keeps it as the run's
state in the run's context). Before it proposes an end, ``leave_if_moved_on`` reads the run's current state: any
other state (Crashed, Scheduled for a re-run, the other attempt's Running, Completed, Cancelled) means the run
moved on without it; the attempt then stops with Prefect's ``Abort``, which ends it without proposing any
state (what the engine does itself when orchestration aborts a proposal), and the clearance worker counts it as
aborted. The window left (between this read and the proposal, a few milliseconds) is far below the heartbeat
timeout that must pass before another attempt can start.
"""

from __future__ import annotations

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.exceptions import Abort


def moved_on() -> str | None:
    """Why the current flow run moved on without this attempt, or None (it did not; or no run; or the server
    cannot be asked: the proposal itself is then left to Prefect)."""
    context = FlowRunContext.get()
    own = context.flow_run.state if context is not None and context.flow_run is not None else None
    if own is None or own.id is None:
        return None
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(context.flow_run.id)
    except Exception:
        return None
    now = run.state
    if now is None or now.id == own.id:
        return None
    return (
        f"the run moved on without this attempt (it entered {own.name} at {own.timestamp:%H:%M:%S}): the server shows "
        f"it {now.type.value} {now.name!r} since {now.timestamp:%H:%M:%S}, at run count {run.run_count}; this attempt "
        "ends without writing a state"
    )


def leave_if_moved_on() -> None:
    """Raise ``Abort`` when the run moved on without this attempt (see the module)."""
    why = moved_on()
    if why is not None:
        get_run_logger().warning("%s", why)
        raise Abort(why)
