"""Risk lanes: which risk profiles (data) a registered declaration matches, and the lane that follows."""

from __future__ import annotations

from dataclasses import dataclass

from models.document import GoodsDeclaration, GoodsItem
from models.reference import LANE_SEVERITY, RiskConditions, RiskProfile


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
    item_level = (
        c.hs_prefixes or c.origin_countries or c.min_unit_customs_value is not None or c.max_unit_customs_value is not None
    )
    if item_level and not any(_item_matches(item, c) for item in doc.goods):
        return False
    return True


def assess_risk(doc: GoodsDeclaration, profiles: tuple[RiskProfile, ...]) -> RiskAssessment:
    """The most severe lane of the matching profiles; green when none matches."""
    matched = [p for p in profiles if profile_matches(doc, p)]
    lane = max((p.lane for p in matched), key=LANE_SEVERITY.__getitem__, default="green")
    return RiskAssessment(lane=lane, matched_profiles=tuple(p.id for p in matched))
