"""crl-refresh: the CAs' CRLs downloaded into CUSTOMS_CRL_DIR (meant to run every hour).

Each CRL of CUSTOMS_CRL_URLS is verified against its issuer in CUSTOMS_TRUST_DIR (signature, validity
period, newer than the one in place) before it replaces the old file; a bad or unreachable one leaves the
old CRL where it is. Signature checks pick the new CRLs up at their next call. Every run publishes the
per-URL outcome as a table artifact.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from customs.core.clock import job_run_name
from customs.core.settings import get_settings
from customs.pki.crl_refresh import PROBLEM_OUTCOMES
from tasks.crl import refresh_crls_task

_COLUMNS = ("url", "outcome", "code", "issuer", "crl_number", "this_update", "next_update", "file", "message")


@flow(name="crl-refresh", flow_run_name=job_run_name("crl-refresh"), persist_result=False)
def crl_refresh() -> list[dict]:
    """One pass over the configured CRL URLs, judging validity at the real time (no parameter sets the clock;
    ``customs.pki.crl_refresh.refresh_crls`` takes ``now`` for tests)."""
    logger = get_run_logger()
    settings = get_settings()
    if not settings.crl_urls:
        logger.warning(
            "no CRL URLs configured (CUSTOMS_CRL_URLS): nothing refreshed; the CRLs in %s age until they are stale",
            settings.crl_dir,
        )
    rows = refresh_crls_task()  # limited to task_timeout(settings) by the task itself
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
        if row["outcome"] in PROBLEM_OUTCOMES:
            logger.warning("CRL %s %s (%s): %s", row["url"], row["outcome"], row["code"], row["message"])
        else:
            logger.info("CRL %s %s: %s", row["url"], row["outcome"], row["message"])
    summary = ", ".join(f"{outcome} {count}" for outcome, count in sorted(counts.items())) or "no URL configured"
    logger.info("CRL refresh: %s", summary)
    create_table_artifact(
        key="crl-refresh",
        table=[{column: row[column] for column in _COLUMNS} for row in rows]
        or [{"url": "-", "outcome": "no CRL URL configured (CUSTOMS_CRL_URLS)"}],
        description=f"CRLs downloaded into the CRL directory: {summary}",
    )
    return rows


if __name__ == "__main__":
    print(crl_refresh())
