"""outbox-dispatch: send the notices that are due (scheduled; the clearance flow also sends its own at once).

Each pass claims a batch, sends it and records every attempt; the flow repeats passes until nothing is
due or ``max_notices`` were handled, then publishes what the outbox holds as an artifact.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_table_artifact

from customs.core.clock import job_run_name
from customs.services.outbox import outbox_counts
from tasks.notices import dispatch_pass


@flow(name="outbox-dispatch", flow_run_name=job_run_name("outbox-dispatch"), persist_result=False)
async def outbox_dispatch(max_notices: int = 5000, batch_size: int = 200) -> dict:
    """Send due notices in passes of ``batch_size`` until none is due or ``max_notices`` were handled."""
    logger = get_run_logger()
    totals = {"claimed": 0, "sent": 0, "retry": 0, "failed": 0}
    while totals["claimed"] < max_notices:
        result = await dispatch_pass(min(batch_size, max_notices - totals["claimed"]))
        for key in totals:
            totals[key] += result[key]
        if result["claimed"] < batch_size or result["sent"] == 0:
            break  # nothing more is due, or the server refuses everything right now
    counts = outbox_counts()
    logger.info("outbox pass: %s; outbox now: %s", totals, counts)
    await acreate_table_artifact(
        key="outbox",
        table=[{"status": status, "notices": count} for status, count in counts.items()],
        description=f"Outbox after this pass: sent {totals['sent']}, retrying {totals['retry']}, failed {totals['failed']}",
    )
    return {**totals, "outbox": counts}


if __name__ == "__main__":
    import asyncio

    print(asyncio.run(outbox_dispatch()))
