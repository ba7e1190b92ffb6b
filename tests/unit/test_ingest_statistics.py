"""When the batch ingest has Postgres analyze its look-up tables: at the first mark, then at 4x."""

from __future__ import annotations

from services.gateway.ingest_batch import ANALYZE_FIRST, Statistics


def test_statistics_are_due_at_the_first_mark_then_each_time_the_count_reaches_four_times_the_last() -> None:
    stats = Statistics(first=4)
    assert [stats.due(n) for n in (1, 2)] == [False, False]  # 3 studies
    assert stats.due(1)  # 4: the first mark
    assert [stats.due(n) for n in (5, 6)] == [False, False]  # 15
    assert stats.due(1)  # 16 = 4 x 4
    assert not stats.due(0)


def test_a_batch_that_jumps_several_marks_asks_once_and_the_next_mark_is_past_it() -> None:
    stats = Statistics(first=4)
    assert stats.due(70)  # past 4, 16 and 64 at once
    assert [stats.due(n) for n in (185,)] == [False]  # 255
    assert stats.due(1)  # 256


def test_the_default_first_mark_is_a_few_batches_in() -> None:
    stats = Statistics()
    assert not stats.due(ANALYZE_FIRST - 1)
    assert stats.due(1)
