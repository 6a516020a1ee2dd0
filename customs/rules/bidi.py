"""Bidirectional controls shown, not obeyed (issue 25, part 6), in what a person reads: letters and paper copies.

A declarant may write any character in a name, an address or a goods description, and intake keeps the bytes as they
came. Some characters are not letters but orders to the text layout: U+202E (RIGHT-TO-LEFT OVERRIDE) draws what
follows backwards, so "Холодильники \u202egnp.exe\u202c" (stored) printed as "Холодильники exe.png": the paper said
something other than the declaration. Wherever declarant-supplied text is shown (customs.notices.render's template
environment), each such control is replaced by its code point in brackets, "[U+202E]", which no layout engine
reorders: the page reads the stored characters in their stored order, and the reader sees that a control was there.

The controls (Unicode Standard Annex #9, "Explicit Directional Embeddings, Overrides and Isolates" and the implicit
marks): LRE, RLE, PDF, LRO, RLO (U+202A-U+202E), LRI, RLI, FSI, PDI (U+2066-U+2069), and the marks LRM, RLM
(U+200E, U+200F) and ALM (U+061C), which change how the neutral characters around them (spaces, dots, brackets,
digits) are ordered. Right-to-left letters themselves (Arabic, Hebrew) are text and are left as they are.
"""

from __future__ import annotations

import re

BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_CONTROL = re.compile("[" + "".join(sorted(BIDI_CONTROLS)) + "]")


def escape(character: str) -> str:
    """How a bidirectional control is shown: ``[U+202E]``."""
    return f"[U+{ord(character):04X}]"


def has_bidi_controls(text: str) -> bool:
    return _CONTROL.search(text) is not None


def shown_as_stored(text: str) -> str:
    """``text`` with each bidirectional control replaced by its visible escape; any other character kept."""
    return _CONTROL.sub(lambda match: escape(match.group()), text)
