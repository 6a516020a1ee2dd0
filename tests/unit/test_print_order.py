"""Which paper copy renders next (customs.rules.printing, issue 25 part 7): a 1-item copy was ready 8.6 minutes
after its request, behind four 999-item copies asked a moment before it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from customs.rules.printing import WaitingCopy, next_to_render, render_priority

NOW = datetime(2026, 12, 8, 6, 0, tzinfo=UTC)
TIMEOUT = timedelta(minutes=10)


def due(minutes_ago: float) -> datetime:
    """The deadline of a copy asked ``minutes_ago`` (30 minutes after its request)."""
    return NOW - timedelta(minutes=minutes_ago) + timedelta(minutes=30)


def test_a_small_copy_goes_ahead_of_large_ones_asked_before_it():
    large = [render_priority(due(1 - n / 10), 999, NOW, TIMEOUT) for n in range(4)]  # asked first
    small = render_priority(due(0), 1, NOW, TIMEOUT)
    assert sorted([*large, small])[0] == small
    assert sorted(large) == large  # among equals in size, the nearest deadline first
    assert render_priority(due(0), 12, NOW, TIMEOUT) < render_priority(due(5), 13, NOW, TIMEOUT)


def test_a_copy_near_its_deadline_goes_first_whatever_its_size():
    late_large = render_priority(due(21), 999, NOW, TIMEOUT)  # 9 minutes left: less than a rendering may take
    small = render_priority(due(0), 1, NOW, TIMEOUT)
    later_urgent = render_priority(due(20.5), 1, NOW, TIMEOUT)
    assert sorted([small, later_urgent, late_large]) == [late_large, later_urgent, small]


def waiting(*copies: tuple[int, bool]) -> list[WaitingCopy]:
    return [WaitingCopy((1, items, NOW), n, large) for n, (items, large) in enumerate(copies)]


def test_the_last_free_renderer_is_kept_for_small_copies():
    large_a, large_b, small = waiting((999, True), (998, True), (1, False))
    # two renderers, none busy: the small one first (fewest items)
    assert next_to_render([large_a, large_b, small], free=2, large_rendering=0, processes=2) is small
    assert next_to_render([large_a, large_b], free=2, large_rendering=0, processes=2) is large_b
    # one large copy rendering, one renderer free: the other large one may not take it, the small one may
    assert next_to_render([large_a], free=1, large_rendering=1, processes=2) is None
    assert next_to_render([large_a, small], free=1, large_rendering=1, processes=2) is small
    assert next_to_render([large_a, small], free=0, large_rendering=1, processes=2) is None
    # three renderers: large copies may hold two
    assert next_to_render([large_a], free=2, large_rendering=1, processes=3) is large_a
    assert next_to_render([large_a], free=1, large_rendering=2, processes=3) is None
    # a single renderer serves everyone, in order
    assert next_to_render([large_a, small], free=1, large_rendering=0, processes=1) is small
    assert next_to_render([large_a], free=1, large_rendering=0, processes=1) is large_a
