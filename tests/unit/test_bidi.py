"""Bidirectional controls shown as escapes (customs.rules.bidi, issue 25 part 6)."""

from __future__ import annotations

import unicodedata

from markupsafe import Markup

from customs.notices.render import shown_as_stored_value
from customs.rules.bidi import BIDI_CONTROLS, has_bidi_controls, shown_as_stored


def test_each_control_is_shown_as_its_code_point_and_nothing_else_changes():
    assert shown_as_stored("Холодильники \u202egnp.exe\u202c") == "Холодильники [U+202E]gnp.exe[U+202C]"
    assert shown_as_stored("\u2067ТОО\u2069 \u200e\u200f\u061c") == "[U+2067]ТОО[U+2069] [U+200E][U+200F][U+061C]"
    for control in BIDI_CONTROLS:
        shown = shown_as_stored(f"a{control}b")
        assert shown == f"a[U+{ord(control):04X}]b" and shown.isascii()
    kept = "ТОО «Алатау Импорт» ӘҒҚҢӨҰҮҺІ שלום مرحبا \u200d\t<b>&"  # letters of either direction, joiners, markup
    assert shown_as_stored(kept) == kept and not has_bidi_controls(kept)


def test_the_list_is_every_explicit_control_and_mark_of_the_bidi_algorithm():
    explicit = {"LRE", "RLE", "PDF", "LRO", "RLO", "LRI", "RLI", "FSI", "PDI"}
    found = {chr(c) for c in range(0x110000) if unicodedata.bidirectional(chr(c)) in explicit}
    marks = {"\u200e", "\u200f", "\u061c"}  # LRM, RLM, ALM
    assert found | marks == BIDI_CONTROLS


def test_the_template_hook_keeps_markup_markup_and_other_values_as_they_are():
    shown = shown_as_stored_value(Markup("<b>\u202eabc</b>"))
    assert isinstance(shown, Markup) and shown == Markup("<b>[U+202E]abc</b>")
    plain = shown_as_stored_value("<b>\u202e</b>")
    assert plain == "<b>[U+202E]</b>" and not isinstance(plain, Markup)  # escaped as HTML afterwards, as before
    assert shown_as_stored_value(None) is None and shown_as_stored_value(7) == 7
    listed = ["\u202e"]
    assert shown_as_stored_value(listed) is listed  # a list prints its repr, where Python escapes the control itself
