"""The hooks that connect the API to whatever runs the clearance (set on ``app.state``, default no-ops):

- ``start_clearance(application_id)`` after a new declaration is committed;
- ``decision_given(application_id)`` after an official's signed decision is committed (to wake the flow run
  waiting for it, which reads the decision from the database);
- ``print_requested(request_id, alert_at, due_at)`` after a print request is recorded (deadline timers).

A hook that fails is logged; the committed act stands either way. `customs serve` sets them.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

logger = logging.getLogger("customs.api")


async def call_hook(hook: Callable, *args: Any) -> None:
    """An async hook is awaited; one marked ``never_blocks`` (it only queues: the clearance starter) is called
    in the event loop, needing no thread; any other runs in the thread pool."""
    if getattr(hook, "never_blocks", False):
        hook(*args)
        return
    result = hook(*args) if inspect.iscoroutinefunction(hook) else await run_in_threadpool(hook, *args)
    if inspect.isawaitable(result):
        await result


async def start_clearance_after_answer(app, application_id: str) -> None:
    try:
        await call_hook(app.state.start_clearance, application_id)
    except Exception:
        logger.warning(
            "declaration %s is stored, but starting its clearance failed; batch-recheck will pick it up",
            application_id,
            exc_info=True,
        )


def no_hook(*args: Any) -> None:
    return None


def call_hook_sync(hook: Callable[..., Any], *args: Any) -> None:
    """Call a hook from a sync endpoint (which runs in a worker thread); an async hook gets its own loop."""
    result = hook(*args)
    if inspect.isawaitable(result):
        asyncio.run(result)
