"""How tasks retry: database hiccups are retried (1, 2, 4, 8, 15, 30, 30 s: a database restart of a minute
and a half is ridden out), a refusal or a programming error never is."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from customs.core.db import is_transient_database_error
from customs.rules.privacy import mask_private

F = TypeVar("F", bound=Callable[..., Any])


def retry_on_database_error(task, task_run, state) -> bool:
    """Prefect retry condition: retry database hiccups, never a refusal or a programming error."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)
        except Exception as error:  # pragma: no cover - depends on Prefect's result storage
            exc = error
    return is_transient_database_error(exc if isinstance(exc, BaseException) else None)


# The options of every task that writes a declaration: a database that went away is waited for, 90 s in all
# (a failover or a restart); past that the run fails, the reconciler re-runs it once the database is back.
DATABASE_RETRIES: dict[str, Any] = {
    "retries": 7,
    "retry_delay_seconds": [1, 2, 4, 8, 15, 30, 30],
    "retry_condition_fn": retry_on_database_error,
}


def private_errors(fn: F) -> F:
    """The error of a step, as Prefect shows it (the task's and the flow's state message, the engine's log), with
    private persons' IINs and names masked (issue 23): the exception's string arguments are masked in place, so its
    type (and the retry condition that reads it) stays. Put it under ``@task``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            try:
                exc.args = tuple(mask_private(a) if isinstance(a, str) else a for a in exc.args)
            except (AttributeError, TypeError):  # an exception that will not have its arguments replaced
                pass
            raise

    return wrapper  # type: ignore[return-value]
