"""Time: stored in UTC, shown in Kazakhstan time (Asia/Almaty, UTC+5 since 1 March 2024)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

KZ_TZ = ZoneInfo("Asia/Almaty")  # resolved from the tzdata package, not the host


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: times must carry a zone")
    return moment.astimezone(UTC)


def kz_local(moment: datetime) -> datetime:
    return as_utc(moment).astimezone(KZ_TZ)


def kz_date(moment: datetime) -> date:
    return kz_local(moment).date()


def kz_display(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return kz_local(moment).strftime("%d.%m.%Y %H:%M:%S (UTC+5, Asia/Almaty)")


def job_run_name(job: str):
    """A Prefect flow_run_name for a scheduled job: the job and when it ran, in Kazakhstan time
    (``deadline-watch 29.11 18:05``), so the runs list reads by job and time instead of random names."""

    def name() -> str:
        return f"{job} {kz_local(utcnow()):%d.%m %H:%M}"

    return name
