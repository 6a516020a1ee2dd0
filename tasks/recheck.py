"""Batch recheck as a Prefect task."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from customs.services.recheck import batch_recheck_run
from tasks.events import emit_deadline_breaches
from tasks.policy import retry_on_database_error, time_limit


@task(
    name="recheck",
    retries=2,
    retry_delay_seconds=[5, 15],
    retry_condition_fn=retry_on_database_error,
    cache_policy=NO_CACHE,
)
@time_limit(1800)
def recheck(restart: Callable[[str], None] | None, batch_size: int | None = None) -> dict[str, Any]:
    """Stuck declarations (each restarted with ``restart`` when given), passed release deadlines, revoked signers."""
    result = batch_recheck_run(restart=restart, batch_size=batch_size)
    emit_deadline_breaches(result.pop("breaches", []))  # told to Prefect's automations, once each
    return result
