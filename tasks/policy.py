"""How tasks retry: database hiccups are retried (1, 2, 4 s), a refusal or a programming error never is."""

from __future__ import annotations

from typing import Any

from customs.core.db import is_transient_database_error


def retry_on_database_error(task, task_run, state) -> bool:
    """Prefect retry condition: retry database hiccups, never a refusal or a programming error."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)
        except Exception as error:  # pragma: no cover - depends on Prefect's result storage
            exc = error
    return is_transient_database_error(exc if isinstance(exc, BaseException) else None)


# The options of every task that writes a declaration: a database hiccup is retried three times.
DATABASE_RETRIES: dict[str, Any] = {"retries": 3, "retry_delay_seconds": [1, 2, 4], "retry_condition_fn": retry_on_database_error}
