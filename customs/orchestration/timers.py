"""The two deadline timers of a print request: runs of the `print-deadline-timer` deployment scheduled for
its 20-minute alert and its 30-minute deadline, so each happens within about a second of its time."""

from __future__ import annotations

from datetime import datetime

from prefect.exceptions import ObjectNotFound
from prefect.states import Scheduled

from customs.core.settings import get_settings
from customs.orchestration.server import is_healthy, prefect_api, running_api_url, shared_client


def schedule_print_timers(request_id: str, alert_at: datetime, due_at: datetime) -> list[str]:
    """Create the two timer runs of a print request (idempotent: asking twice gives the same runs)."""
    created = []
    client = shared_client()  # one long-lived client (see customs.orchestration.server.shared_client)
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


def schedule_print_timers_if_served(request_id: str, alert_at: datetime, due_at: datetime) -> str | None:
    """Schedule the timers when a Prefect server with the timer deployment answers (`customs serve`); the
    every-minute print-deadlines pass watches the request either way. Returns a note when scheduling failed."""
    api_url = running_api_url(get_settings())
    if api_url is None or not is_healthy(api_url):
        return None
    try:
        with prefect_api(api_url):
            schedule_print_timers(request_id, alert_at, due_at)
    except ObjectNotFound:  # no print-deadline-timer deployment here (customs serve is not running): nothing to say
        return None
    except Exception as exc:
        return f"deadline timers not scheduled ({type(exc).__name__}); the every-minute print-deadlines pass covers it"
    return None
