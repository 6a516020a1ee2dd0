"""deadline-watch (every minute): registration deadlines, and release deadlines of declarations waiting for an official.

At 75% of the time from registration to the legal deadline (4 hours by default) the zone's supervisors
are alerted; at the deadline the breach is recorded in the audit chain and they are alerted again.
Each happens once per declaration, whatever the number of watchers or runs.

It also anchors the audit chains (their heads signed into the anchor file, once per
CUSTOMS_AUDIT_ANCHOR_INTERVAL) and publishes the operations summary, which carries the last anchor, so a
copy of every anchor lives in Prefect's database as well. An anchor that cannot be written (a key others may
read, say) fails the run after the deadlines were handled and the summary published.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from customs.core.clock import job_run_name
from tasks.audit import anchor_audit_chains
from tasks.notices import deliver_notices
from tasks.officials import registration_deadlines, release_deadlines
from tasks.operations import publish_operations_summary


@flow(name="deadline-watch", flow_run_name=job_run_name("deadline-watch"), persist_result=False)
def deadline_watch() -> dict:
    """Registration deadlines (alert to the support service: registration is automatic) and release
    deadlines (the zone's supervisors); the audit anchor when one is due; the operations summary."""
    logger = get_run_logger()
    registration = registration_deadlines()
    release = release_deadlines()
    for what, report in (("registration", registration), ("release", release)):
        if report["alerted"] or report["breached"]:
            logger.warning("%s deadlines: %d alerted at 75%%, %d breached", what, len(report["alerted"]), len(report["breached"]))
    if any(r["alerted"] or r["breached"] for r in (registration, release)):
        deliver_notices(return_state=True)
    anchored = anchor_audit_chains(return_state=True)
    publish_operations_summary()
    return {"registration": registration, "release": release, "audit_anchor": anchored.result()}


if __name__ == "__main__":
    print(deadline_watch())
