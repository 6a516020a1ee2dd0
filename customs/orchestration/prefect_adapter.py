"""Every use of Prefect's private internals in this project, in one place (docs/explanation/prefect-boundary.md).

One remains, and why it cannot go: for every run of a deployment, Prefect's flow engine enters
``prefect.flow_engine.observe_flow_run_suspension(flow_run_id, suspension_request)``, which starts a thread with its
own event loop, API client and events websocket to hear the UI's Suspend, and marks the run's in-process
suspension request so that the engine stops the run at its next task boundary (raising ``Pause``). Prefect offers
no setting to leave that observer out and no public way to reach the request before the flow's body runs (flow
hooks run outside the run's ``FlowRunContext``). The clearance worker already watches its runs' suspensions for
all attempts at once (``customs.orchestration.suspensions``, public API only); this adapter lets the engine hand
it the request of a run the worker executes instead of starting Prefect's observer, a sixth of the serving CPU
and a websocket per run on the server when it was measured (README, performance). Every other run, and every run
when the check below fails, gets Prefect's own observer.

What it relies on, each checked by :func:`check_engine` at install time and by a test of its own
(tests/orchestration/test_prefect_adapter.py) that fails when a Prefect release changes it:

1. ``prefect.flow_engine`` has a module attribute ``observe_flow_run_suspension`` taking
   ``(flow_run_id, suspension_request, polling_interval=...)`` and returning a context manager;
2. the engine looks that name up in ``prefect.flow_engine``'s globals when a deployment run starts
   (``BaseFlowRunEngine.setup_flow_run_suspension_request``), so replacing the attribute takes effect;
3. the request it passes has ``mark_requested(state)``, after which the engine raises ``Pause`` with that state
   at the run's next task boundary.

If a Prefect release breaks 1 or 2, :func:`install` refuses (it logs an error and returns False) and the runs
get Prefect's own per-run observer: correct, only dearer. Nothing else in the project imports a private Prefect
module (``lint-imports`` and the adapter's tests say so).
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol
from uuid import UUID

import prefect
import prefect.flow_engine as _engine
from prefect.client.schemas.objects import State

log = logging.getLogger("customs.worker")

HOOK_NAME = "observe_flow_run_suspension"
HOOK_PARAMETERS = ("flow_run_id", "suspension_request", "polling_interval")


class SuspensionRequest(Protocol):
    """What the adapter uses of the engine's in-process request (``prefect._flow_run_suspension``, private)."""

    def mark_requested(self, state: State) -> None: ...


# route(flow_run_id, request): a context manager to hold while the run executes when the caller serves the run's
# suspensions itself, or None to leave the run to Prefect's own observer.
Route = Callable[[UUID, SuspensionRequest], AbstractContextManager[None] | None]


def check_engine() -> list[str]:
    """What of assumptions 1 and 2 (module docstring) the installed Prefect breaks; empty when none."""
    problems: list[str] = []
    hook = _prefect_observe if _prefect_observe is not None else getattr(_engine, HOOK_NAME, None)
    if hook is None:
        return [f"prefect.flow_engine.{HOOK_NAME} is gone"]
    try:
        parameters = tuple(inspect.signature(hook).parameters)
    except (TypeError, ValueError):
        parameters = ()
    if parameters != HOOK_PARAMETERS:
        problems.append(f"prefect.flow_engine.{HOOK_NAME} takes {parameters}, not {HOOK_PARAMETERS}")
    base = getattr(_engine, "BaseFlowRunEngine", None)
    setup = getattr(base, "setup_flow_run_suspension_request", None)
    code = getattr(getattr(setup, "__wrapped__", setup), "__code__", None)
    if code is None:
        problems.append("prefect.flow_engine.BaseFlowRunEngine.setup_flow_run_suspension_request is gone")
    elif HOOK_NAME not in code.co_names:
        problems.append(f"the flow engine no longer calls {HOOK_NAME} when a run starts")
    return problems


_prefect_observe = getattr(_engine, HOOK_NAME, None)  # Prefect's own, as imported
_routes: list[Route] = []
_lock = threading.Lock()


@contextmanager
def _observe(flow_run_id: UUID, suspension_request: SuspensionRequest, polling_interval: float = 10) -> Iterator[None]:
    """In the engine's place: the first route that serves the run, else Prefect's own observer."""
    with _lock:
        routes = list(_routes)
    for route in routes:
        held = route(flow_run_id, suspension_request)
        if held is not None:
            with held:
                yield
            return
    assert _prefect_observe is not None
    with _prefect_observe(flow_run_id, suspension_request, polling_interval):
        yield


def install(route: Route) -> bool:
    """Let ``route`` serve the suspensions of the runs it takes; False (and Prefect's observer for every run) when
    the installed Prefect does not work as assumed. Each install is undone by one :func:`uninstall`."""
    problems = check_engine()
    if problems:
        log.error(
            "Prefect %s: the clearance worker cannot serve its runs' suspensions itself (%s); every run gets Prefect's "
            "own suspension observer (a thread and a websocket per run). Supported: see docs/explanation/prefect-boundary.md",
            prefect.__version__,
            "; ".join(problems),
        )
        return False
    with _lock:
        _routes.append(route)
        setattr(_engine, HOOK_NAME, _observe)
    return True


def uninstall(route: Route) -> None:
    """Undo one :func:`install` of ``route``; the last one gives the engine Prefect's own observer back."""
    with _lock:
        if route in _routes:
            _routes.remove(route)
        if not _routes and getattr(_engine, HOOK_NAME, None) is _observe:
            setattr(_engine, HOOK_NAME, _prefect_observe)


def installed() -> bool:
    """Whether the engine currently calls the adapter."""
    return getattr(_engine, HOOK_NAME, None) is _observe


def prefect_observer() -> Callable[..., AbstractContextManager[None]] | None:
    """Prefect's own ``observe_flow_run_suspension`` (for the adapter's tests)."""
    return _prefect_observe
