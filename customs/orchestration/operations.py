"""The operations summary as `customs ops` shows it: the database's figures, the last alerts the automations
brought to a person, and, when a Prefect server answers, the clearance runs that failed in the last 24 hours."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect.client.orchestration import get_client

from customs.core.clock import utcnow
from customs.core.settings import get_settings
from customs.orchestration.server import is_healthy, prefect_api, running_api_url
from customs.services.ops_alerts import recent_alerts
from customs.services.queries import operations_summary
from tasks.operations import failed_clearance_runs


def failed_runs_now(now: datetime) -> list[dict[str, Any]] | None:
    """Failed clearance runs of the last 24 hours, or None when no Prefect server answers."""
    api_url = running_api_url(get_settings())
    if api_url is None or not is_healthy(api_url):
        return None
    with prefect_api(api_url), get_client(sync_client=True) as client:
        return failed_clearance_runs(client, now)


def operations_view(now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    summary = operations_summary(now, failed_runs=failed_runs_now(now))
    summary["alerts"] = recent_alerts(limit=10)  # what the automations sent to a person (POST /v1/ops/alerts)
    return summary
