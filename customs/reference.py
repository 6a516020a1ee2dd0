"""Reference data (offices, zones, risk profiles) loaded from JSON files and validated at start-up."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from pydantic import ValidationError

from models.reference import OfficesFile, ReferenceData, RiskProfilesFile


class ReferenceDataError(Exception):
    pass


def _read(path: Path, model):
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReferenceDataError(f"reference data file {path} is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReferenceDataError(f"reference data file {path} is not valid UTF-8 JSON: {exc}") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ReferenceDataError(f"reference data file {path} is invalid: {problems}") from None


@lru_cache(maxsize=4)
def load_reference(directory: Path) -> ReferenceData:
    offices = _read(directory / "offices.json", OfficesFile)
    profiles = _read(directory / "risk_profiles.json", RiskProfilesFile)
    codes = [o.code for o in offices.offices]
    if len(codes) != len(set(codes)):
        raise ReferenceDataError(f"{directory / 'offices.json'}: office codes are not unique")
    ids = [p.id for p in profiles.profiles]
    if len(ids) != len(set(ids)):
        raise ReferenceDataError(f"{directory / 'risk_profiles.json'}: risk profile ids are not unique")
    return ReferenceData(offices={o.code: o for o in offices.offices}, risk_profiles=tuple(profiles.profiles))
