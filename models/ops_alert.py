"""Alerts the Prefect automations deliver to the intake API (POST /v1/ops/alerts), one row per occurrence.

``key`` names the occurrence (a clearance run's attempt that failed or crashed, a deadline breached, a print
request overdue): an automation that fires twice for it, or a webhook call Prefect repeats, finds the row and
reaches nobody a second time. The e-mails themselves are notices of the outbox, with their own dedup keys.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime


class OpsAlert(SQLModel, table=True):
    __tablename__ = "ops_alert"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, max_length=160, description="The occurrence: one alert each.")
    kind: str = Field(max_length=40, description="clearance_run_failed, deadline_breached, print_overdue")
    application_id: str | None = Field(default=None, index=True, max_length=40)
    automation: str | None = Field(default=None, max_length=200, description="The Prefect automation that called.")
    event: str = Field(max_length=120, description="The Prefect event that triggered it.")
    event_id: str | None = Field(default=None, max_length=40)
    resource_id: str = Field(max_length=200)
    received_at: datetime = Field(sa_type=UTCDateTime, index=True)
    recipients: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
