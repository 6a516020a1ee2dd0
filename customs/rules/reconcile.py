"""Runs that dangle: what to do with a clearance flow run whose state and its declaration's disagree.

A clearance run is the orchestration of one declaration; the declaration in the database is the truth. A
run held by a worker that died (its heartbeats stopped) is marked Crashed; a Crashed run is run again
(its steps skip what is done: one that crashed after the decision only finishes its notices), up to a
number of attempts, and so is a Failed run whose step failed on a database error that outlasted its
retries (the database was away longer than they last); a run still Pending, Running or Paused long
after its declaration became final (decided through the API or the CLI while the run could not hear of
it) is closed. Everything else is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from models.declaration import Status

FINAL = frozenset({Status.RELEASED, Status.REGISTRATION_REFUSED, Status.RELEASE_REFUSED, Status.RELEASE_CANCELLED})

CRASH, RERUN, CLOSE, REPORT = "crash", "rerun", "close", "report"

# What a database that went away looks like in a failure's text (SQLAlchemy wraps the driver's error): the
# reconciler re-runs a Failed run whose state message shows one of these.
DATABASE_AWAY = ("OperationalError", "InterfaceError", "could not connect", "connection refused", "server closed the connection")


def failed_on_database(message: str) -> bool:
    return any(sign in message for sign in DATABASE_AWAY)


def healed_by_reconciler(message: str, run_count: int, *, max_attempts: int, crashed: bool = False) -> bool:
    """Whether the reconciler will run a run that failed with ``message`` (at its ``run_count``-th run) again:
    a database failure, or a crash (its worker stopped), with attempts left. The declarant is not told of such a
    failure before it had its chance."""
    return (crashed or failed_on_database(message)) and run_count < max_attempts


@dataclass(frozen=True)
class RunView:
    """What the reconciler knows of a flow run."""

    flow_run_id: str
    name: str
    state_type: str  # Prefect's StateType value: PENDING, RUNNING, PAUSED, CRASHED, ...
    state_name: str
    state_age: timedelta  # since the run entered its current state
    run_count: int
    application_id: str | None
    heartbeat_age: timedelta | None = None  # since its last heartbeat; None: none seen lately (or not looked at)
    heartbeats_checked: bool = False
    failed_on_database: bool = False  # a Failed run whose step failed on a database error beyond its retries
    state_id: str = ""  # Prefect's id of the current state: a second crash of the same attempt is another state
    state_message: str = ""  # the current state's message (a crash's: why)


@dataclass(frozen=True)
class Reconciliation:
    action: str  # crash | rerun | close | report
    why: str


def reconcile_action(
    run: RunView, status: str | None, *, max_attempts: int, after: timedelta, heartbeat_timeout: timedelta | None = None
) -> Reconciliation | None:
    """What to do with ``run`` given its declaration's ``status`` (None: no such declaration)."""
    if status is None:
        if run.state_type in ("PENDING", "RUNNING", "PAUSED") and run.state_age >= after:
            return Reconciliation(REPORT, f"the run names application {run.application_id!r}, which is not stored")
        return None
    final = status in FINAL
    if run.state_type == "CRASHED":
        if final:
            if run.run_count >= max_attempts:
                return None  # the declaration is settled; the crashes stay in the run's history
            # its worker died after the decision but before the run's last steps (notices): the run finishes
            # them (every step done is skipped) and ends Completed, as the operations staff expect to see it
            return Reconciliation(RERUN, f"its worker stopped (Crashed: {run.state_name}) after the declaration became {status}")
        if run.run_count >= max_attempts:
            return Reconciliation(
                REPORT, f"crashed {run.run_count} times with the declaration at {status}; left for a person (customs rerun)"
            )
        return Reconciliation(RERUN, f"its worker stopped (Crashed: {run.state_name}) with the declaration at {status}")
    if run.state_type == "FAILED" and run.failed_on_database and not final:
        if run.run_count >= max_attempts:
            return None  # batch-recheck and the support report (sent when the database came back) take it from here
        return Reconciliation(
            RERUN, f"its step failed on a database error that outlasted the retries, with the declaration at {status}"
        )
    if run.state_type in ("PENDING", "RUNNING", "PAUSED") and final and run.state_age >= after:
        return Reconciliation(CLOSE, f"the declaration is {status}: nothing is left for the run to do")
    if (
        run.state_type in ("PENDING", "RUNNING")
        and not final
        and heartbeat_timeout is not None
        and run.heartbeats_checked
        and run.state_age >= heartbeat_timeout
        and (run.heartbeat_age is None or run.heartbeat_age >= heartbeat_timeout)
    ):
        return Reconciliation(
            CRASH,
            f"no heartbeat for {heartbeat_timeout.total_seconds():g} s with the declaration at {status}: its worker stopped",
        )
    return None
