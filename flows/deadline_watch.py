"""deadline-watch: release deadlines of declarations waiting for an official (meant to run every minute).

At 75% of the time from registration to the legal deadline (4 hours by default) the zone's supervisors
are alerted; at the deadline the breach is recorded in the audit chain and they are alerted again.
Each happens once per declaration, whatever the number of watchers or runs.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from tasks.officials import release_deadlines
from tasks.outbox import deliver_notices


@flow(name="deadline-watch", persist_result=False)
def deadline_watch() -> dict:
    report = release_deadlines()
    if report["alerted"] or report["breached"]:
        get_run_logger().warning("release deadlines: %d alerted, %d breached", len(report["alerted"]), len(report["breached"]))
        deliver_notices(return_state=True)
    return report


if __name__ == "__main__":
    print(deadline_watch())
