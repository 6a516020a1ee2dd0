"""The fuzz tests (`make fuzz`): every module here is marked ``fuzz`` and runs only when -m names it (tests/conftest.py).

At the end of the run the number of generated inputs is printed per group; with CUSTOMS_FUZZ_MIN_INPUTS set
(`make fuzz` sets 10000) a run that executed fewer fails."""

from __future__ import annotations

import os
import time

import pytest

from tests.fuzz.support import GENERATED, NOTES, OUTCOMES

_started = time.monotonic()


def _shortfall() -> tuple[int, int] | None:
    minimum = int(os.environ.get("CUSTOMS_FUZZ_MIN_INPUTS") or 0)
    total = sum(GENERATED.values())
    return (total, minimum) if total < minimum else None


def pytest_sessionfinish(session, exitstatus):
    if _shortfall() and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not GENERATED:
        return
    write = terminalreporter.write_line
    terminalreporter.section("fuzz: generated inputs")
    width = max(len(group) for group in GENERATED)
    for group, count in sorted(GENERATED.items()):
        write(f"{group:<{width}}  {count:>7}")
        seen = sorted(((what, n) for (g, what), n in OUTCOMES.items() if g == group), key=lambda x: -x[1])
        if seen:
            more = f", {len(seen) - 16} more" if len(seen) > 16 else ""
            write(" " * 4 + ", ".join(f"{what} {n}" for what, n in seen[:16]) + more)
    total = sum(GENERATED.values())
    write(f"{'in all':<{width}}  {total:>7}  ({time.monotonic() - _started:.0f} s)")
    for line in NOTES:
        write(line)
    if shortfall := _shortfall():
        write(f"FAILED: {shortfall[0]} generated inputs, fewer than CUSTOMS_FUZZ_MIN_INPUTS={shortfall[1]}", red=True)
