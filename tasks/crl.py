"""CRL refresh as a Prefect task."""

from __future__ import annotations

from datetime import datetime

from prefect import task

from customs.core.settings import get_settings
from customs.pki.crl_refresh import refresh_crls, task_timeout
from tasks.policy import time_limit


@task(name="refresh-crls")
@time_limit(lambda: task_timeout(get_settings()))
def refresh_crls_task(now: datetime | None = None) -> list[dict]:
    """The CRLs of ``CUSTOMS_CRL_URLS`` into ``CUSTOMS_CRL_DIR``. No retries: a URL that fails keeps its old
    CRL and is reported; the next hourly run is the retry (CRLs are valid for hours to days)."""
    return refresh_crls(now=now).as_dicts()
