"""Schemas of the reference data files (offices and zones, risk profiles)."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Lane = Literal["green", "yellow", "red"]
LANE_SEVERITY = {"green": 0, "yellow": 1, "red": 2}


class Zone(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    code: str = Field(min_length=1)
    name: str = Field(min_length=1)


class Office(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    code: str = Field(pattern=r"^\d{5}$")
    name: str = Field(min_length=1)
    zones: list[Zone] = Field(min_length=1)


class OfficesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: str | None = None
    offices: list[Office] = Field(min_length=1)


class RiskConditions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    direction: Literal["IM", "EK"] | None = None
    hs_prefixes: list[str] = Field(default_factory=list)
    origin_countries: list[str] = Field(default_factory=list)
    min_unit_customs_value: Decimal | None = None
    max_unit_customs_value: Decimal | None = None
    min_total_customs_value: Decimal | None = None
    declarant_ids: list[str] = Field(default_factory=list)


class RiskProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(min_length=1)
    description: str = ""
    lane: Lane
    conditions: RiskConditions


class RiskProfilesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: str | None = None
    profiles: list[RiskProfile]


class ReferenceData(BaseModel):
    """Everything the rules read besides the declaration itself."""

    model_config = ConfigDict(frozen=True)
    offices: dict[str, Office]
    risk_profiles: tuple[RiskProfile, ...]
