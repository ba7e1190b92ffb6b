"""The consumer's fetch wait: short for a while after events, the idle wait otherwise."""

from __future__ import annotations

import pytest

from services.common.fetch_pacing import FetchPacing


def test_a_consumer_that_has_seen_nothing_fetches_with_the_idle_wait():
    assert FetchPacing(500, 100, 10.0).wait_ms(now=1_000.0) == 500


def test_after_events_the_wait_is_short_for_the_active_seconds_then_idle_again():
    pacing = FetchPacing(500, 100, 10.0)
    pacing.note_activity(now=50.0)
    assert pacing.wait_ms(now=50.0) == 100
    assert pacing.wait_ms(now=59.9) == 100
    assert pacing.wait_ms(now=60.0) == 500


def test_each_new_event_extends_the_short_spell_and_an_older_one_never_shortens_it():
    pacing = FetchPacing(500, 100, 10.0)
    pacing.note_activity(now=50.0)
    pacing.note_activity(now=58.0)
    assert pacing.wait_ms(now=67.0) == 100
    pacing.note_activity(now=40.0)  # a late report of something earlier
    assert pacing.wait_ms(now=67.0) == 100
    assert pacing.wait_ms(now=68.0) == 500


def test_equal_waits_mean_a_fixed_wait():
    pacing = FetchPacing(500, 500, 10.0)
    pacing.note_activity(now=1.0)
    assert pacing.wait_ms(now=1.0) == 500


@pytest.mark.parametrize(("idle", "active", "seconds"), [(500, 600, 10.0), (500, -1, 10.0), (500, 100, -1.0)])
def test_an_active_wait_longer_than_the_idle_one_or_negative_values_are_refused(idle, active, seconds):
    with pytest.raises(ValueError, match="active"):
        FetchPacing(idle, active, seconds)
