"""A flow for test_serve: it ticks (one tiny task run at a time) until it is told to stop or suspended."""

import time

from prefect import flow, task


@task(name="tick")
def tick(i: int) -> int:
    return i


@flow(name="ticking", persist_result=False)
def ticking(seconds: float = 60.0) -> int:
    ended = time.monotonic() + seconds
    i = 0
    while time.monotonic() < ended:
        tick(i)
        i += 1
        time.sleep(0.2)
    return i
