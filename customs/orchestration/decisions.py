"""An official's decision, once committed (a signed act, customs.services.officials), made known to the flow run
that waits for it: the run is resumed with no input and reads the decision from the database.

Nothing given to Prefect decides anything: a waiting run has no input form (a resume through the Prefect API or UI
carries no decision, and one that finds none is audited as refused, flows/clearance.py)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType, FlowRunFilterTags
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import resume_flow_run

from customs.core.settings import get_settings
from customs.orchestration.server import is_healthy, prefect_api, running_api_url
from customs.services.officials import decisions_recorded_for

log = logging.getLogger("customs.decisions")


@dataclass
class Resumed:
    """The flow runs given the decision, and what went wrong on the way (the decision stands either way)."""

    flow_runs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    api_url: str | None = None  # the Prefect server asked; None: none answered

    def explained(self) -> str:
        """What became of the waiting run, for the person who decided."""
        if self.flow_runs:
            return f"flow run {', '.join(self.flow_runs)} resumed with the decision"
        if self.api_url is None:
            return (
                "no Prefect server answered: the decision is recorded; the run waiting for it is given it when "
                "`customs serve` reaches Prefect again (batch-recheck closes runs left waiting)"
            )
        return f"no flow run of this declaration was waiting for a decision at {self.api_url}: the decision is recorded"


def resume_waiting_runs(application_id: str, *, settle_seconds: float = 10.0) -> Resumed:
    """Give the decision to the flow runs of this declaration that wait for it, if a Prefect server is up.

    A run still on its way to the wait (running, not yet suspended) is given a few seconds to get there.
    Nothing here can undo the decision, which is already committed: problems are noted, not raised."""
    result = Resumed()
    try:
        api_url = running_api_url(get_settings())
        if api_url is None or not is_healthy(api_url):
            return result
        result.api_url = api_url
        deadline = time.monotonic() + settle_seconds
        with prefect_api(api_url), get_client(sync_client=True) as client:
            while True:
                runs = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        tags=FlowRunFilterTags(all_=["clearance", f"application:{application_id}"]),
                        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED, StateType.RUNNING])),
                    )
                )
                for run in runs:
                    if run.state.is_paused() and str(run.id) not in result.flow_runs:
                        try:
                            resume_flow_run(run.id)
                            result.flow_runs.append(str(run.id))
                        except Exception as exc:  # it finds the decision in the database when it next looks
                            result.notes.append(f"flow run {run.id} could not be resumed ({exc})")
                if not any(r.state.is_running() for r in runs) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
    except Exception as exc:
        result.notes.append(f"the decision is recorded, but waiting flow runs could not be reached ({type(exc).__name__}: {exc})")
    for note in result.notes:
        log.warning("%s: %s", application_id, note)
    return result


def resume_decided_runs(client) -> list[str]:
    """Clearance runs still waiting for a decision that was recorded meanwhile (given while the Prefect server
    was away, so nobody could resume them): each is woken now, reads its decision and carries on."""
    runs = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=["clearance"]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])),
        ),
        limit=200,  # the server's most per page; the rest at the next sweep, or their own wait's end
    )
    waiting = {run.parameters.get("application_id"): run for run in runs if run.parameters.get("application_id")}
    resumed = []
    for application_id in decisions_recorded_for(list(waiting)):
        try:
            resume_flow_run(waiting[application_id].id)
            resumed.append(application_id)
        except Exception as exc:  # the next sweep, or the run's own wait time-out, gets to it
            log.warning("%s: the run waiting for its recorded decision could not be resumed (%s)", application_id, exc)
    if resumed:
        log.info("resumed %d run(s) whose decision was recorded while they could not be reached", len(resumed))
    return resumed
