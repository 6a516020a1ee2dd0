"""batch-recheck: every 15 minutes, what fell through the cracks.

Clearance runs that disagree with their declaration are reconciled too (tasks/reconcile.py): crashed runs
of unfinished declarations run again, runs left pending, running or paused after their declaration became
final are closed; each action is audited on the declaration and listed by `customs ops`.

Stuck declarations (submitted but never started, a step that failed, waiting past a deadline) are
restarted as new clearance runs or have their breach recorded; signers that the current CRLs list as
revoked, for declarations not yet released, are reported (once each, in the audit chain). The whole
database is read in batches; the findings are published as a table artifact.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from customs.core.clock import job_run_name, utcnow
from customs.rules.privacy import mask_private
from flows.clearance import start_clearance
from tasks.recheck import recheck
from tasks.reconcile import reconcile_runs


def restart_clearance(application_id: str) -> None:
    """A new clearance run for a stuck declaration (one per declaration and minute, however often it is asked); the
    restart is audited by batch-recheck itself (``recheck_restart``), not by a parameter of the run."""
    start_clearance(application_id, idempotency_key=f"recheck:{application_id}:{utcnow():%Y%m%d%H%M}")


@flow(name="batch-recheck", flow_run_name=job_run_name("batch-recheck"), persist_result=False)
def batch_recheck(restart: bool = True, batch_size: int | None = None) -> dict:
    result = recheck(restart_clearance if restart else None, batch_size)
    reconciled = reconcile_runs()
    logger = get_run_logger()
    logger.info("rechecked %d declarations: %s", result["scanned"], result["counts"] or "nothing to do")
    for action in reconciled:
        logger.warning("clearance run %s (%s): %s, %s", action["flow_run"], action["state"], action["action"], action["why"])
    counts = dict(result["counts"])
    for action in reconciled:
        key = f"run_{action['state'].lower()}/{action['action']}"
        counts[key] = counts.get(key, 0) + 1
    rows = (
        [
            {k: f[k] for k in ("application_id", "registration_number", "status", "finding", "action")}
            | {"detail": mask_private(f["detail"])}  # a revoked signer's certificate subject: initials, IIN masked
            for f in result["findings"][:500]
        ]
        + [
            {
                "application_id": a["application_id"],
                "registration_number": a["flow_run"],
                "status": a["status"],
                "finding": f"clearance run {a['state']}",
                "action": a["action"],
                "detail": mask_private(a["why"] or ""),
            }
            for a in reconciled[:500]
        ]
    )
    create_table_artifact(
        key="batch-recheck",
        table=rows or [{"application_id": "-", "finding": "nothing stuck, no revoked signer", "action": "-"}],
        description=f"Batch recheck: {result['scanned']} declarations read; "
        + (", ".join(f"{k}: {v}" for k, v in counts.items()) or "nothing found"),
    )
    return {"scanned": result["scanned"], "counts": counts, "reconciled": reconciled}


if __name__ == "__main__":
    print(batch_recheck())
