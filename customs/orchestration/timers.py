"""The runs of a print request: its copy rendered at once (a run of `paper-copy`), and its two deadline
timers, runs of `print-deadline-timer` scheduled for its 20-minute alert and its 30-minute deadline, so each
happens within about a second of its time."""

from __future__ import annotations

from datetime import datetime

from prefect.exceptions import ObjectNotFound
from prefect.states import Scheduled

from customs.core.clock import utcnow
from customs.core.settings import get_settings
from customs.orchestration.server import is_healthy, prefect_api, running_api_url, shared_client
from customs.services.printing import copy_is_large

LARGE_COPIES_QUEUE = "printing-large"


def schedule_print_timers(request_id: str, alert_at: datetime, due_at: datetime) -> list[str]:
    """Create the runs of a print request: the copy's rendering now, the two timers at their times
    (idempotent: asking twice gives the same runs)."""
    created = []
    client = shared_client()  # one long-lived client (see customs.orchestration.server.shared_client)
    copy = client.read_deployment_by_name("paper-copy/paper-copy")
    run = client.create_flow_run_from_deployment(
        copy.id,
        parameters={"request_id": request_id},
        state=Scheduled(scheduled_time=utcnow()),
        name=f"copy-{request_id}",
        tags=["printing", f"print-request:{request_id}"],
        idempotency_key=f"paper-copy:{request_id}",
        # a large copy's run waits in printing-large (one at a time), not in a worker thread (prefect.yaml)
        work_queue_name=LARGE_COPIES_QUEUE if copy_is_large(request_id) else None,
    )
    created.append(str(run.id))
    deployment = client.read_deployment_by_name("print-deadline-timer/print-deadline-timer")
    for stage, moment in (("alert", alert_at), ("breach", due_at)):
        run = client.create_flow_run_from_deployment(
            deployment.id,
            parameters={"request_id": request_id, "stage": stage},
            state=Scheduled(scheduled_time=moment),
            name=f"{request_id}-{stage}",
            tags=["printing", f"print-request:{request_id}"],
            idempotency_key=f"print-timer:{request_id}:{stage}",
        )
        created.append(str(run.id))
    return created


def schedule_print_timers_if_served(request_id: str, alert_at: datetime, due_at: datetime) -> tuple[bool, str | None]:
    """Create the request's runs when a Prefect server with these deployments answers (`customs serve`).

    Returns (scheduled, note): not scheduled, the caller renders the copy itself; the every-minute
    print-deadlines pass watches the request either way. The note says why scheduling failed."""
    api_url = running_api_url(get_settings())
    if api_url is None or not is_healthy(api_url):
        return False, None
    try:
        with prefect_api(api_url):
            schedule_print_timers(request_id, alert_at, due_at)
    except ObjectNotFound:  # no such deployments here (customs serve is not running): nothing to say
        return False, None
    except Exception as exc:
        return (
            False,
            f"paper-copy and deadline runs not created ({type(exc).__name__}); the every-minute print-deadlines pass covers it",
        )
    return True, None
