"""The audit chains' anchors as a Prefect task."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from customs.services.audit_anchors import write_anchor
from tasks.policy import DATABASE_RETRIES, time_limit


@task(name="audit-anchor", cache_policy=NO_CACHE, **DATABASE_RETRIES)
@time_limit(120)
def anchor_audit_chains() -> dict[str, Any] | None:
    """Sign the heads of every audit chain and append them to the anchor file, when none was written in the
    current CUSTOMS_AUDIT_ANCHOR_INTERVAL; what was anchored, or None."""
    anchor = write_anchor(when_due=True)
    if anchor is None:
        return None
    heads = {name: head.seq for name, head in anchor.heads().items()}
    get_run_logger().info("audit anchor %d: %s", anchor.number, ", ".join(f"{k} {v}" for k, v in heads.items()))
    return {"anchor": anchor.number, "anchored_at": anchor.anchored_at.isoformat(), "chains": heads}
