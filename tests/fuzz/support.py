"""What the fuzz tests share: the count of generated inputs (printed at the end of the run), how many
examples each test asks for (scaled by CUSTOMS_FUZZ_SCALE), and the row counts of every table."""

from __future__ import annotations

import os
from collections import Counter

from hypothesis import HealthCheck, settings
from sqlalchemy import func, select
from sqlmodel import SQLModel

from customs.core.db import transaction

GENERATED: Counter[str] = Counter()
OUTCOMES: Counter[tuple[str, str]] = Counter()
NOTES: list[str] = []  # printed under the counts (e.g. the seed that repeats a run)


def tally(group: str) -> None:
    """One generated input executed (hypothesis calls the test body once per input, shrinking included)."""
    GENERATED[group] += 1


def outcome(group: str, what: str) -> None:
    """What became of an input (a refusal code, an HTTP status...): printed with the counts, not added to them."""
    OUTCOMES[group, what] += 1


def examples(n: int) -> int:
    """``n`` examples, times CUSTOMS_FUZZ_SCALE (e.g. 0.1 for a quick look, 10 for a long night)."""
    return max(1, round(n * float(os.environ.get("CUSTOMS_FUZZ_SCALE", "1"))))


def fuzz_settings(n: int) -> settings:
    """Hypothesis settings of a fuzz test: ``examples(n)`` inputs, no deadline (the database is on disk), no
    health check (the generated documents are large on purpose; the database fixtures are reused across inputs)."""
    return settings(max_examples=examples(n), deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)


# Metering, not something accepted: a client's bytes of the day count every body it sent, refused ones included
# (issue 25: a refused 50 MB body costs bandwidth too), so a refusal may add the day's row of api_client_usage.
METERING = frozenset({"api_client_usage"})


def row_counts() -> dict[str, int]:
    """Rows of every table of the application (declarations, attachments, audit events and chains, the outbox...),
    the metering of METERING left out."""
    with transaction() as session:
        return {
            table.name: session.execute(select(func.count()).select_from(table)).scalar_one()
            for table in SQLModel.metadata.sorted_tables
            if table.name not in METERING
        }


def added(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before[name] for name in after if after[name] != before.get(name, 0)}


def audited_refusal_only(before: dict[str, int], after: dict[str, int]) -> bool:
    """Nothing stored but, for an official's act refused (issue 23), its audit event (and the audit chain it opened)."""
    new = added(before, after)
    return set(new) <= {"audit_event", "audit_chain"} and new.get("audit_event", 0) <= 1
