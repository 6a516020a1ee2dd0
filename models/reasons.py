"""A reason: why a rule failed, in terms a declarant understands."""

from __future__ import annotations

import unicodedata

from pydantic import BaseModel, ConfigDict, field_validator

MAX_MESSAGE = 600
MAX_PATH = 200
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


class Reason(BaseModel):
    """One failed rule: a stable ``code``, the JSON path (or document name) it is about, and a message.

    The path and the message are single lines of bounded length, whatever values they repeat."""

    model_config = ConfigDict(frozen=True)

    code: str
    path: str
    message: str

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
