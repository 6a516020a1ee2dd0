"""A reason: why a rule failed, in terms a declarant understands."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Reason(BaseModel):
    """One failed rule: a stable ``code``, the JSON path (or document name) it is about, and a message."""

    model_config = ConfigDict(frozen=True)

    code: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.code} at {self.path}: {self.message}"


def json_path(loc: tuple[int | str, ...] | list[int | str]) -> str:
    """``('goods', 0, 'hs_code')`` -> ``$.goods[0].hs_code``."""
    path = "$"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path
