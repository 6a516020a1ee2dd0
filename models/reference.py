"""Schemas of the reference data files (offices and zones, risk profiles)."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Lane = Literal["green", "yellow", "red"]
LANE_SEVERITY = {"green": 0, "yellow": 1, "red": 2}


Language = Literal["kk", "ru", "en"]


class _Named(BaseModel):
    """``name`` is the official (Russian) name, used where no other is given; ``names`` the name in Kazakh
    and English (and Russian, when it differs), for letters in those languages."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)
    names: dict[Language, str] = Field(default_factory=dict)

    def name_in(self, language: str) -> str:
        return self.names.get(language) or self.name  # type: ignore[call-overload]


class Zone(_Named):
    code: str = Field(min_length=1)


class Office(_Named):
    code: str = Field(pattern=r"^\d{5}$")
    zones: list[Zone] = Field(min_length=1)

    def zone(self, code: str | None) -> Zone | None:
        return next((z for z in self.zones if z.code == code), None)


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


class Authority(_Named):
    """The revenue authority: the legal entity whose employees the officials are (the BIN in their NCA certificates)
    and in whose name the service signs what it sends (customs.notices)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    bin: str = Field(pattern=r"^\d{12}$")


class Official(BaseModel):
    """An authorized official of a customs office, acting in one zone of customs control, known by an NCA identity:
    each act is signed with a certificate whose SERIALNUMBER is IIN<iin>, an employee's certificate of the authority."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[A-Z0-9-]{3,40}$")
    iin: str = Field(pattern=r"^\d{12}$", description="the official's IIN, as NCA writes it in the certificate's SERIALNUMBER")
    name: str = Field(min_length=1)
    office: str = Field(pattern=r"^\d{5}$")
    zone: str = Field(min_length=1)
    role: Literal["inspector", "supervisor"]
    email: str | None = None


class OfficialsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: str | None = None
    authority: Authority
    officials: list[Official] = Field(min_length=1)


class Ground(BaseModel):
    """A ground for refusing or cancelling a release (EAEU Customs Code art. 125, Kazakhstan Code art. 201)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    code: str = Field(pattern=r"^[A-Z_]{3,40}$")
    title: dict[Literal["kk", "ru", "en"], str]
    legal_basis: str = ""
    applies_to: list[Literal["refusal", "cancellation"]] = Field(min_length=1)


class GroundsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: str | None = None
    grounds: list[Ground] = Field(min_length=1)


class ClassifierCode(BaseModel):
    """A code of a classifier and its names: ``titles`` the full name per language, ``names`` a short one where the
    classifier has it (units: "шт", "кг"), ``aliases`` other spellings declarations carry (a Latin "BN" for "БН")."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    code: str = Field(min_length=1, max_length=10)
    titles: dict[Language, str]
    names: dict[Language, str] = Field(default_factory=dict)
    aliases: list[str] = Field(default_factory=list)


class Classifier(BaseModel):
    """The codes of one classifier that the project prints by name, with the published classifier they come from."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    source: str = Field(min_length=1)
    codes: list[ClassifierCode] = Field(min_length=1)

    def find(self, code: object) -> ClassifierCode | None:
        text = str(code or "").strip()
        return next((c for c in self.codes if text == c.code or text in c.aliases), None)


class ClassifiersFile(BaseModel):
    """reference/classifiers.json: the names of codes a declaration carries (boxes 1, 41, 44, 47 and C)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    comment: str | None = None
    units: Classifier
    payment_methods: Classifier
    payment_types: Classifier
    document_types: Classifier
    procedures: Classifier
    decisions: Classifier


class ReferenceData(BaseModel):
    """Everything the rules read besides the declaration itself."""

    model_config = ConfigDict(frozen=True)
    offices: dict[str, Office]
    risk_profiles: tuple[RiskProfile, ...]
    officials: dict[str, Official] = Field(default_factory=dict)
    grounds: dict[str, Ground] = Field(default_factory=dict)
    authority: Authority | None = None
    classifiers: ClassifiersFile | None = None

    def zones_of(self, office: str) -> list[str]:
        found = self.offices.get(office)
        return [z.code for z in found.zones] if found else []

    def supervisors_of(self, office: str, zone: str | None) -> list[Official]:
        return [
            o
            for o in self.officials.values()
            if o.role == "supervisor" and o.office == office and (zone is None or o.zone == zone)
        ]
