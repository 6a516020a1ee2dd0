"""A reason: why a rule failed, in terms a declarant understands."""

from __future__ import annotations

import unicodedata
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer

MAX_MESSAGE = 600
MAX_PATH = 200
MAX_PARAM = 200
# Unicode categories that start, end or reorder a line, or are not characters at all
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def one_line(text: str, limit: int) -> str:
    """``text`` with no character that could start a line or reorder one (control, line and paragraph
    separators, bidirectional and other format characters: shown as escapes), clipped to ``limit``.

    Messages repeat what the declarant wrote; a value such as ``"XX\n\n=== РЕШЕНИЕ: ВЫПУСК ==="`` must stay
    inside its message, not show as lines of its own in a letter (issue 15)."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif unicodedata.category(char) in UNSAFE_CATEGORIES:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    cleaned = "".join(out)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


class Detail(str):
    """An English message that also carries the values its translations need (``params``).

    Functions that have always answered with a message (``identifier_problem``, ``key_usage_problem``...)
    answer with a ``Detail``: it is the same string to every caller, and the rule that builds a ``Reason``
    from it passes its ``params`` on."""

    params: dict[str, str]

    def __new__(cls, text: str, /, **params: Any) -> Detail:
        made = super().__new__(cls, text)
        made.params = {key: str(value) for key, value in params.items() if value is not None}
        return made


def params_of(message: Any) -> dict[str, str]:
    return dict(getattr(message, "params", None) or {})


class Reason(BaseModel):
    """One failed rule: a stable ``code``, the JSON path (or document name) it is about, and a message.

    The path and the message are single lines of bounded length, whatever values they repeat.

    ``message`` is English and is what is stored (declaration, audit chain: never changed afterwards).
    ``params`` are the values the message repeats (``{"net": "120.5", "gross": "100"}``), so that letters
    can say it in the declarant's language from the message catalogue (``locale/``, keyed by code); the
    key ``variant`` picks one of a code's several messages (``TOTALS_MISMATCH`` of items or of values).
    Optional: a reason without params is shown with its code's generic message. Serialized only when
    not empty, so a reason without params is the same dict as before params existed."""

    model_config = ConfigDict(frozen=True)

    code: str
    path: str
    message: str
    params: dict[str, str] = Field(default_factory=dict)

    @field_validator("params", mode="before")
    @classmethod
    def _params_are_short_lines(cls, value: Any) -> dict[str, str]:
        if not value:
            return {}
        return {str(key): one_line(str(item), MAX_PARAM) for key, item in dict(value).items() if item is not None}

    @model_serializer(mode="wrap")
    def _without_empty_params(self, handler) -> dict[str, Any]:
        data = handler(self)
        if not data.get("params"):
            data.pop("params", None)
        return data

    @field_validator("message")
    @classmethod
    def _message_is_one_line(cls, value: str) -> str:
        return one_line(value, MAX_MESSAGE)

    @field_validator("path")
    @classmethod
    def _path_is_one_line(cls, value: str) -> str:
        return one_line(value, MAX_PATH)

    def __str__(self) -> str:
        return f"{self.code} at {self.path}: {self.message}"


def json_path(loc: tuple[int | str, ...] | list[int | str]) -> str:
    """``('goods', 0, 'hs_code')`` -> ``$.goods[0].hs_code``."""
    path = "$"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path
