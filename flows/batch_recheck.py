"""batch-recheck: every 15 minutes, what fell through the cracks.

Stuck declarations (submitted but never started, a step that failed, waiting past a deadline) are
restarted as new clearance runs or have their breach recorded; signers that the current CRLs list as
revoked, for declarations not yet released, are reported (once each, in the audit chain). The whole
database is read in batches; the findings are published as a table artifact.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from customs.core.clock import utcnow
from flows.clearance import start_clearance
from tasks.recheck import recheck


def restart_clearance(application_id: str) -> None:
    """A new clearance run for a stuck declaration (one per declaration and minute, however often it is asked)."""
    start_clearance(
        application_id, requested_by="batch-recheck", idempotency_key=f"recheck:{application_id}:{utcnow():%Y%m%d%H%M}"
    )


@flow(name="batch-recheck", persist_result=False)
def batch_recheck(restart: bool = True, batch_size: int | None = None) -> dict:
    result = recheck(restart_clearance if restart else None, batch_size)
    logger = get_run_logger()
    logger.info("rechecked %d declarations: %s", result["scanned"], result["counts"] or "nothing to do")
    rows = [
        {k: f[k] for k in ("application_id", "registration_number", "status", "finding", "action", "detail")}
        for f in result["findings"][:500]
    ]
    create_table_artifact(
        key="batch-recheck",
        table=rows or [{"application_id": "-", "finding": "nothing stuck, no revoked signer", "action": "-"}],
        description=f"Batch recheck: {result['scanned']} declarations read; "
        + (", ".join(f"{k}: {v}" for k, v in result["counts"].items()) or "nothing found"),
    )
    return {"scanned": result["scanned"], "counts": result["counts"]}


if __name__ == "__main__":
    print(batch_recheck())
