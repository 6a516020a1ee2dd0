"""The job gate: deadline-watch, outbox-dispatch and print-deadlines are not scheduled every minute any more
(issue 17, item 4: three runs a minute that mostly found nothing pushed the clearance runs off the runs list).

Every clearance worker (`customs serve`, `customs worker`, `prefect worker start --type customs-thread`) looks
every CUSTOMS_JOB_GATE_SECONDS (60 s) whether a job has something to do (customs.services.duties: a few cheap
reads of the stored times) and creates a run of its deployment only then, and in any case once every
CUSTOMS_JOB_IDLE_INTERVAL (15 min, at :00, :15, ... Kazakhstan time) for the periodic duties (deadline-watch
writes the audit anchor and publishes the operations summary; outbox-dispatch and print-deadlines their
artifacts). The run's idempotency key is the job and its minute (or its idle slot), so several workers looking
at the same moment create one run between them.

Each pass also anchors the audit chains when they grew since the last anchor (issue 25, item 4): at most a
minute of events is ever unanchored, without a flow run per minute (a look at the chain heads and the anchor
file's last line when nothing changed). Only on the host that holds the anchor key (``customs serve`` makes it);
several workers there write one anchor between them (the anchor file's lock).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from prefect.client.orchestration import SyncPrefectClient
from prefect.exceptions import ObjectNotFound
from prefect.states import Scheduled

from customs.core.clock import job_run_name, utcnow
from customs.core.settings import Settings
from customs.services.audit_anchors import AnchorRefused, write_anchor
from customs.services.duties import GATED_JOBS, jobs_with_work

log = logging.getLogger("customs.gate")
_EPOCH = datetime(2000, 1, 1, tzinfo=utcnow().tzinfo)


def _idle_slot(now: datetime, interval: timedelta, gate: timedelta) -> datetime | None:
    """The start of the idle slot ``now`` opens (within one gate interval after it), else None."""
    start = _EPOCH + interval * ((now - _EPOCH) // interval)
    return start if now - start < gate else None


def anchor_pass(settings: Settings, now: datetime | None = None) -> str | None:
    """Anchor the audit chains if they grew since the last anchor (where the anchor key is); what was written."""
    if not settings.anchor_key_path.exists():
        return None
    try:
        anchor = write_anchor(settings, now=now, only_if_changed=True)
    except (AnchorRefused, OSError) as exc:  # deadline-watch's anchor fails its run, which alerts; here: the log
        log.warning("job gate: audit anchor not written: %s", exc)
        return None
    if anchor is None:
        return None
    heads = ", ".join(f"{name} {head.seq}" for name, head in anchor.heads().items() if head.seq)
    line = f"audit anchor {anchor.number}: {heads}"
    log.info("job gate: %s", line)
    return line


def gate_pass(
    client: SyncPrefectClient, settings: Settings, now: datetime | None = None, *, keeps_project: bool = False
) -> list[str]:
    """Anchor new audit events; create the runs due now; returns a line per run created (or found: another worker
    created it).

    ``keeps_project`` (the workers of `customs serve` and `customs worker`): a job's deployment missing means the
    Prefect server lost the project's state (issue 26): logged as an error, an operations alert recorded, and
    everything re-created at once (customs.orchestration.upkeep), then the run created. Without it (a worker of
    another deployment set, a test's server) a missing deployment is left alone."""
    now = now or utcnow()
    anchor_pass(settings)  # at the real time, whatever minute the runs are created for
    busy = jobs_with_work(now=now, settings=settings)
    slot = _idle_slot(now, settings.job_idle_interval, timedelta(seconds=settings.job_gate_seconds))
    created = []
    for job in GATED_JOBS:
        if job in busy:
            key, why = f"gate:{job}:{now:%Y%m%d%H%M}", "work to do"
        elif slot is not None:
            key, why = f"gate:{job}:idle:{slot:%Y%m%d%H%M}", "periodic duty"
        else:
            continue
        try:
            deployment = client.read_deployment_by_name(f"{job}/{job}")
        except ObjectNotFound:
            if not keeps_project:  # not this project's Prefect server (a test's, say): nothing to start
                continue
            log.error("job gate: the deployment %s/%s is missing on the Prefect server; %s is due (%s)", job, job, job, why)
            from customs.orchestration.upkeep import keep_project

            for line in keep_project(settings, noticed_by=f"the job gate ({job} due: {why})"):
                created.append(f"rebuilt: {line}")
            deployment = client.read_deployment_by_name(f"{job}/{job}")
        run = client.create_flow_run_from_deployment(
            deployment.id,
            state=Scheduled(scheduled_time=now),
            name=job_run_name(job)(),
            idempotency_key=key,
        )
        created.append(f"{job}: {why} ({run.name})")
    return created
