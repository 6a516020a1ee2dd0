"""What a long command waits for, and for how long.

``waiting("waiting for the Prefect server to answer")`` around a slow step: on a terminal, one line that counts
the seconds (``waiting for the Prefect server to answer… 12 s``) and ends as ``… ready in 12.3 s``; written to a
pipe or a file (on stderr) (a log, CI, `make run | tee`), the same line when the step starts, again every ``every`` seconds,
and when it ends, so a log shows where a start stands. ``bar`` draws a progress bar where the length is known (the
demo's samples). Nothing here imports more than the standard library and typer.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer

Echo = Callable[[str], None]


class Waiting:
    """One step being waited for; ``note`` changes what is said (a new phase of the same wait)."""

    def __init__(self, what: str, echo: Echo, *, live: bool, every: float, grace: float = 0.0):
        self.what = what
        self.echo = echo
        self.live = live
        self.every = every
        self.grace = grace  # a step over within this many seconds says nothing at all
        self.announced = False
        self.started = time.monotonic()
        self._said = self.started
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._width = 0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def note(self, what: str) -> None:
        with self._lock:
            changed, self.what = what != self.what, what
            if changed and self.announced and not self.live:
                self._say(f"{self.elapsed:.0f} s")

    def _say(self, suffix: str, *, end: bool = False) -> None:
        """``what… suffix``: on a terminal, the line rewritten in place (``what`` cut to the width, never the
        seconds); the last state stays on screen."""
        if self.live:
            room = shutil.get_terminal_size().columns - len(suffix) - 3
            what = self.what[: max(room, 10)]
            line = f"{what}… {suffix}"
            sys.stderr.write("\r" + line.ljust(self._width) + ("\n" if end else ""))
            sys.stderr.flush()
            self._width = len(line)
        else:
            self.echo(f"{self.what}… {suffix}".rstrip())
            self._said = time.monotonic()

    def _announce(self) -> None:
        self.announced = True
        self._say("")

    def _tick(self) -> None:
        while not self._stop.wait(0.25 if not self.announced else 1.0 if self.live else 0.5):
            with self._lock:
                if self._stop.is_set():
                    return
                if not self.announced:
                    if self.elapsed >= self.grace:
                        self._announce()
                elif self.live or time.monotonic() - self._said >= self.every:
                    self._say(f"{self.elapsed:.0f} s")

    def run(self) -> threading.Thread:
        if self.grace <= 0:
            self._announce()
        thread = threading.Thread(target=self._tick, name="progress", daemon=True)
        thread.start()
        return thread

    def finish(self, outcome: str) -> None:
        self._stop.set()
        with self._lock:
            if self.announced:
                self._say(f"{outcome} in {self.elapsed:.1f} s", end=True)


def is_terminal() -> bool:
    return sys.stderr.isatty()


@contextmanager
def waiting(
    what: str, *, echo: Echo | None = None, every: float = 10.0, done: str = "done", grace: float = 1.0
) -> Iterator[Waiting]:
    """Say ``what`` is awaited and count the seconds until the block ends (``done`` then, ``failed`` on an
    error); a block over within ``grace`` seconds says nothing (0: always said). On stderr (stdout stays the
    command's answer: ``--json`` prints JSON alone), one line rewritten in place on a terminal, else a line at
    the start, every ``every`` seconds and at the end; through ``echo`` when one is given (`customs serve` run by
    a test or a service: its log)."""
    live = echo is None and is_terminal()
    step = Waiting(what, echo or (lambda line: typer.echo(line, err=True)), live=live, every=every, grace=grace)
    thread = step.run()
    try:
        yield step
    except BaseException:
        step.finish("failed")
        raise
    else:
        step.finish(done)
    finally:
        thread.join(2.0)


def bar(done: int, total: int, *, width: int = 24) -> str:
    """``[#########---------------] 3/8``: a bar that reads the same on a terminal and in a log."""
    filled = round(width * done / total) if total else width
    return f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total}"
