"""The fault test's reading of the services' delivery log (tests/support/chaos.py `Trail`): the
lines are produced by the real loggers with the services' log format, then judged."""

from __future__ import annotations

import logging
from pathlib import Path

from tests.support.chaos import Trail

FORMAT = "%(asctime)s {svc} %(levelname)s %(name)s: %(message)s"  # services.common.runtime.serve's


def write_log(path: Path, svc: str, lines: list[tuple[str, tuple]]) -> None:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(FORMAT.format(svc=svc)))
    delivery = logging.getLogger("radcurate.delivery")
    delivery.addHandler(handler)
    delivery.setLevel(logging.INFO)
    try:
        for fmt, args in lines:
            delivery.info(fmt, *args)
    finally:
        delivery.removeHandler(handler)
        handler.close()


def test_an_applied_event_committed_past_but_missing_from_the_inbox_is_named(tmp_path: Path):
    write_log(tmp_path / "gateway.log", "gateway", [
        ("%s published %s[%d]@%d %s", ("gateway", "vote-cast", 1, 0, "v0")),
        ("%s published %s[%d]@%d %s", ("gateway", "vote-cast", 1, 1, "v1")),
    ])
    write_log(tmp_path / "consensus.log", "consensus", [
        ("%s %s[%d]@%d %s %s", ("consensus", "vote-cast", 1, 0, "v0", "applied")),
        ("%s %s[%d]@%d %s %s", ("consensus", "vote-cast", 1, 1, "v1", "retried:OperationalError")),
        ("%s %s[%d]@%d %s %s", ("consensus", "vote-cast", 1, 1, "v1", "applied")),
        ("%s %s[%d] committed offset %d", ("consensus", "vote-cast", 1, 2)),
    ])
    trail = Trail.read(tmp_path)
    assert trail.committed == {("consensus", "vote-cast", 1): 2}
    assert trail.lost_effects({"consensus": {"v0", "v1"}}) == []
    assert trail.lost_effects({"consensus": {"v1"}}) == [
        "consensus applied v0 (vote-cast[1]@0), committed offset 2, but its inbox row is gone"]
    assert trail.never_consumed({"consensus": {"vote-cast"}, "sampler": {"vote-cast"}}) == [
        "sampler never took v0 (vote-cast[1]@0)", "sampler never took v1 (vote-cast[1]@1)"]


def test_an_applied_event_not_yet_committed_past_is_not_a_loss(tmp_path: Path):
    """Applied, but the offset commit did not follow (the batch's transaction may have died with
    Postgres): the group replays it, so a missing inbox row is not a loss."""
    write_log(tmp_path / "consensus.log", "consensus", [
        ("%s %s[%d]@%d %s %s", ("consensus", "vote-cast", 0, 5, "v5", "applied")),
        ("%s %s[%d] committed offset %d", ("consensus", "vote-cast", 0, 5)),
    ])
    assert Trail.read(tmp_path).lost_effects({"consensus": set()}) == []
