"""Reference data loaded from JSON files and validated at start-up: offices and zones, risk profiles,
officials, grounds for refusing or cancelling a release, the names of classifier codes."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from pydantic import ValidationError

from models.identifiers import is_valid_identifier
from models.reference import ClassifiersFile, GroundsFile, OfficesFile, OfficialsFile, ReferenceData, RiskProfilesFile


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


def _classifiers(path: Path) -> ClassifiersFile:
    """Every code named in the three languages, no code (or alias) twice in a classifier."""
    found = _read(path, ClassifiersFile)
    for name in ClassifiersFile.model_fields:
        classifier = getattr(found, name)
        if name == "comment" or classifier is None:
            continue
        seen: set[str] = set()
        for entry in classifier.codes:
            missing = {"kk", "ru", "en"} - set(entry.titles)
            if missing:
                raise ReferenceDataError(f"{path}: {name} code {entry.code} has no title in {', '.join(sorted(missing))}")
            if entry.names and {"kk", "ru", "en"} - set(entry.names):
                raise ReferenceDataError(f"{path}: {name} code {entry.code} has short names, but not in every language")
            for spelling in (entry.code, *entry.aliases):
                if spelling in seen:
                    raise ReferenceDataError(f"{path}: {name} code {spelling} appears twice")
                seen.add(spelling)
    return found


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
    officials = _read(directory / "officials.json", OfficialsFile)
    grounds = _read(directory / "release_grounds.json", GroundsFile)
    zones = {o.code: {z.code for z in o.zones} for o in offices.offices}
    seen: set[str] = set()
    iins: dict[str, str] = {}
    for official in officials.officials:
        where = f"{directory / 'officials.json'}: official {official.id}"
        if official.id in seen:
            raise ReferenceDataError(f"{where} appears twice")
        seen.add(official.id)
        if not is_valid_identifier(official.iin):
            raise ReferenceDataError(f"{where}: IIN {official.iin} is not a valid IIN (its check digit is wrong)")
        if official.iin in iins:
            raise ReferenceDataError(f"{where}: IIN {official.iin} is already official {iins[official.iin]}'s")
        iins[official.iin] = official.id
        if official.office not in zones:
            raise ReferenceDataError(f"{where}: office {official.office} is not in offices.json")
        if official.zone not in zones[official.office]:
            raise ReferenceDataError(
                f"{where}: zone {official.zone} is not a zone of office {official.office} "
                f"({', '.join(sorted(zones[official.office]))})"
            )
    codes = [g.code for g in grounds.grounds]
    if len(codes) != len(set(codes)):
        raise ReferenceDataError(f"{directory / 'release_grounds.json'}: ground codes are not unique")
    for ground in grounds.grounds:
        missing = {"kk", "ru", "en"} - set(ground.title)
        if missing:
            raise ReferenceDataError(
                f"{directory / 'release_grounds.json'}: ground {ground.code} has no title in {', '.join(sorted(missing))}"
            )
    return ReferenceData(
        offices={o.code: o for o in offices.offices},
        classifiers=_classifiers(directory / "classifiers.json"),
        risk_profiles=tuple(profiles.profiles),
        officials={o.id: o for o in officials.officials},
        grounds={g.code: g for g in grounds.grounds},
        authority=officials.authority,
    )
