"""The official's decision as the Prefect UI's form shows it, and as the rules take it.

The form is for an official, not a developer: one choice says what is decided and, for a release, with which
code; the grounds of a refusal are chosen from the list (with their titles), not typed; nothing internal
shows. Choices are written in Russian with the English after them: the officials' working language, and the
Prefect UI's. The same decision given by `customs decide` or the API is turned into the same form values
(the Prefect server checks what resumes a run against the form's schema).
"""

from __future__ import annotations

from typing import Any

from models.reference import Ground, ReferenceData

RELEASE_CHOICES = {
    "10": "Выпуск разрешён, код 10 (release permitted)",
    "11": "Выпуск под обеспечение, код 11 (release against security)",
    "12": "Выпуск по ст. 121 ТК ЕАЭС, код 12 (release under EAEU CC art. 121)",
}
REFUSE_CHOICE = "Отказ в выпуске: выберите основания ниже (refuse release: choose the grounds below)"
SEPARATOR = ": "


def decision_choices() -> list[str]:
    return [*RELEASE_CHOICES.values(), REFUSE_CHOICE]


def refusal_grounds(reference: ReferenceData) -> list[Ground]:
    return [g for g in reference.grounds.values() if "refusal" in g.applies_to]


def ground_choice(ground: Ground) -> str:
    return f"{ground.code}{SEPARATOR}{ground.title.get('ru') or ground.title.get('en') or ground.code}"


def to_form(given: dict[str, Any], reference: ReferenceData) -> dict[str, Any]:
    """A decision as the rules take it (decision, decision_code, ground codes) as the form's values."""
    if given["decision"] == "release":
        decision = RELEASE_CHOICES.get(given.get("decision_code") or "10", given.get("decision_code") or "10")
    else:
        decision = REFUSE_CHOICE
    grounds = [
        ground_choice(reference.grounds[code]) if code in reference.grounds else code for code in given.get("grounds") or []
    ]
    return {
        "decision": decision,
        "official_id": given["official_id"],
        "grounds": grounds,
        "grounds_text": given.get("grounds_text") or "",
        **({"decision_id": given["decision_id"]} if given.get("decision_id") else {}),
    }


def from_form(values: dict[str, Any]) -> dict[str, Any]:
    """The form's values (or a decision given the older way: decision release/refuse with decision_code) as the
    rules take them."""
    decision = values.get("decision")
    code = values.get("decision_code")
    by_choice = {choice: number for number, choice in RELEASE_CHOICES.items()}
    if decision in by_choice:
        decision, code = "release", by_choice[decision]
    elif decision == REFUSE_CHOICE:
        decision, code = "refuse", None
    grounds = [str(g).split(SEPARATOR, 1)[0] for g in values.get("grounds") or []]
    return {
        "decision": decision,
        "official_id": values.get("official_id"),
        "decision_code": (code or "10") if decision == "release" else None,
        "grounds": grounds,
        "grounds_text": values.get("grounds_text") or "",
        "decision_id": values.get("decision_id"),
    }
