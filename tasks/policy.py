"""How tasks retry: database hiccups are retried (1, 2, 4, 8, 15, 30, 30 s: a database restart of a minute
and a half is ridden out), a refusal or a programming error never is."""

from __future__ import annotations

import ctypes
import functools
import threading
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


class StepTimeLimitExceeded(TimeoutError):
    """A task ran past its time limit (``time_limit``); the task fails (never retried: not a database hiccup)."""

    step = "task"
    seconds = 0.0

    def __str__(self) -> str:
        return f"{self.step} ran past its time limit of {self.seconds:g} s and was stopped"


class _Watchdog:
    """Raises ``StepTimeLimitExceeded`` in the thread that runs the task once ``seconds`` have passed, the way
    Prefect's own timeout does in a worker thread (an exception set on the thread: it interrupts Python code at its
    next instruction, not a call blocked in C; those calls have their own limits, see ``time_limit``)."""

    def __init__(self, seconds: float, step: str):
        self.exc = type("StepTimeLimitExceeded", (StepTimeLimitExceeded,), {"step": step, "seconds": seconds})
        self.thread_id = threading.get_ident()
        self.lock = threading.Lock()
        self.done = self.fired = False
        self.timer = threading.Timer(seconds, self._fire)
        self.timer.daemon = True

    def _fire(self) -> None:
        with self.lock:
            if self.done:
                return
            self.fired = True
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread_id), ctypes.py_object(self.exc))

    def __enter__(self) -> _Watchdog:
        self.timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self.lock:
            self.done = True
            self.timer.cancel()
            if self.fired:  # set but not raised yet (the task had just finished): withdrawn, the task's answer stands
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread_id), None)


def time_limit(seconds: float | Callable[[], float]) -> Callable[[F], F]:
    """A task's time limit, kept by the task itself instead of Prefect's ``timeout_seconds`` (issue 24, part 2).

    Prefect warns at every task run with ``timeout_seconds`` outside the main thread (the clearance worker runs
    each flow run in a thread of its own, so every run showed an orange WARNING) that its timeout "cannot
    interrupt blocking operations". The limit is the same here and enforced the same way (an exception raised in
    the task's thread at its limit), without the warning; the blocking calls a task makes carry their own limits
    (the database's connect and busy timeouts, the SMTP and CRL download timeouts of the settings). ``seconds`` may
    be a function of the settings (read at each run). Put it under ``@task`` (and over ``private_errors``)."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            limit = float(seconds() if callable(seconds) else seconds)
            with _Watchdog(limit, getattr(fn, "__name__", "task")):
                return fn(*args, **kwargs)

        wrapper.time_limit = seconds  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate
