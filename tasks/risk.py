"""Risk lanes: which risk profiles (data) a registered declaration matches, and the lane that follows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from prefect import task

from customs.db import transaction
from customs.reference import load_reference
from customs.settings import get_settings
from customs.timeutil import utcnow
from models.declaration import Status
from models.document import GoodsDeclaration, GoodsItem
from models.reference import LANE_SEVERITY, RiskConditions, RiskProfile
from tasks.common import StepOutcome, lock_declaration, outcome_of, retry_on_database_error
from tasks.registration import format_logical_control


@dataclass(frozen=True)
class RiskAssessment:
    lane: str
    matched_profiles: tuple[str, ...]


def _item_matches(item: GoodsItem, c: RiskConditions) -> bool:
    if c.hs_prefixes and not any(item.hs_code.startswith(p) for p in c.hs_prefixes):
        return False
    if c.origin_countries and item.origin_country not in c.origin_countries:
        return False
    unit_value = item.customs_value / item.quantity
    if c.min_unit_customs_value is not None and unit_value < c.min_unit_customs_value:
        return False
    if c.max_unit_customs_value is not None and unit_value > c.max_unit_customs_value:
        return False
    return True


def profile_matches(doc: GoodsDeclaration, profile: RiskProfile) -> bool:
    c = profile.conditions
    if c.direction is not None and doc.direction != c.direction:
        return False
    if c.declarant_ids and not set(doc.declarant.identifiers) & set(c.declarant_ids):
        return False
    if c.min_total_customs_value is not None and doc.totals.customs_value < c.min_total_customs_value:
        return False
    item_level = c.hs_prefixes or c.origin_countries or c.min_unit_customs_value is not None or c.max_unit_customs_value is not None
    if item_level and not any(_item_matches(item, c) for item in doc.goods):
        return False
    return True


def assess_risk(doc: GoodsDeclaration, profiles: tuple[RiskProfile, ...]) -> RiskAssessment:
    """The most severe lane of the matching profiles; green when none matches."""
    matched = [p for p in profiles if profile_matches(doc, p)]
    lane = max((p.lane for p in matched), key=LANE_SEVERITY.__getitem__, default="green")
    return RiskAssessment(lane=lane, matched_profiles=tuple(p.id for p in matched))


def assign_lane(application_id: str, *, now: datetime | None = None) -> StepOutcome:
    settings = get_settings()
    reference = load_reference(settings.reference_dir)
    with transaction() as session:
        declaration = lock_declaration(session, application_id)
        if declaration.status != Status.REGISTERED:
            return outcome_of(declaration, acted=False)
        doc, reasons = format_logical_control(declaration.content, reference)
        if doc is None or reasons:  # registration passed the same control; this means the rules changed under it
            raise RuntimeError(f"{application_id}: registered declaration no longer passes format control: {reasons}")
        assessment = assess_risk(doc, reference.risk_profiles)
        declaration.lane = assessment.lane
        declaration.risk_profiles = list(assessment.matched_profiles)
        declaration.move_to(session, Status.LANE_ASSIGNED, actor="system", at=now or utcnow(),
                            details={"lane": assessment.lane, "risk_profiles": list(assessment.matched_profiles)})
        return outcome_of(declaration, acted=True)


@task(name="risk-assessment", retries=3, retry_delay_seconds=[1, 2, 4], retry_condition_fn=retry_on_database_error, timeout_seconds=60)
def risk_assessment(application_id: str) -> StepOutcome:
    """Lane from the risk profiles: green, yellow (documentary control) or red (inspection)."""
    return assign_lane(application_id)
