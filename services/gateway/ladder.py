"""What a holdout evaluation may show: the release's policy, and the Ladder that applies it.

Full-precision per-label metrics on every submission are a channel to the holdout labels: an
all-ones file reads the prevalence off sensitivity/F1, and two files that differ in one study's
prediction read that study's label off the difference. So an ordinary submission shows only the
protocol's headline metric (macro AUROC, or the lumbar log loss), rounded to the policy's
resolution, and — the Ladder of Blum & Hardt (2015) — a new value only when it beats the team's
best published value by more than the margin; otherwise the team's best again. A change smaller
than the margin (one study's label) therefore shows nothing. The full aggregate result is kept
in the gateway and shown once per team and release, for its final evaluation.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

LADDER = "ladder"


def default_policy(higher_is_better: bool, *, per_day: int, lifetime: int, resolution: float = 0.01,
                   margin: float = 0.01) -> dict[str, Any]:
    """The policy a release records when it comes out (from the gateway's settings then)."""
    return {"name": LADDER, "shows": "headline metric only", "resolution": resolution, "margin": margin,
            "higher_is_better": higher_is_better, "per_day_per_team": per_day,
            "lifetime_per_team": lifetime, "final_per_team": 1, "final_shows": "full aggregate result"}


def headline_path(result: dict) -> tuple[str, ...]:
    """Where the protocol's headline metric sits in a scored result: macro AUROC (cxr), `score`
    (the lumbar log loss), else — a plugin protocol — its first top-level non-integer number."""
    if isinstance(result.get("macro"), dict):
        return ("macro", "auroc")
    if "score" in result:
        return ("score",)
    return next(((k,) for k, v in result.items() if isinstance(v, float)), ("score",))


def headline(result: dict) -> float | None:
    value: Any = result
    for key in headline_path(result):
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _round(value: float, resolution: float) -> float:
    return round(round(value / resolution) * resolution, 10)


def publish(policy: dict, result: dict, best: float | None) -> dict:
    """The answer one ordinary submission gets: the headline at the policy's resolution if it
    beats `best` (the team's best published value for the release) by more than the margin,
    else `best` again. Shaped like the result (`macro.auroc` or `score`) so clients read it alike."""
    value = headline(result)
    better = value is not None and (best is None or (
        value > best + policy["margin"] if policy["higher_is_better"] else value < best - policy["margin"]))
    shown = _round(value, policy["resolution"]) if better else best
    answer: dict[str, Any] = {"policy": policy["name"], "resolution": policy["resolution"],
                              "margin": policy["margin"], "improved": better,
                              "metric_version": result.get("metric_version")}
    path = headline_path(result)
    node = answer
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = shown
    return answer


def best_published(published: list[dict]) -> float | None:
    """The team's best value so far: the last improvement the ladder published."""
    values = [headline(p) for p in published if p and p.get("improved")]
    values = [v for v in values if v is not None]
    return values[-1] if values else None


class PolicySettings(BaseSettings):
    """The policy a new release records (same `RADCURATE_GATEWAY_` prefix as the gateway's settings)."""

    model_config = SettingsConfigDict(env_prefix="RADCURATE_GATEWAY_", extra="ignore")

    evaluations_per_day: int = 5
    evaluations_lifetime: int = 50
    ladder_resolution: float = 0.01
    ladder_margin: float = 0.01

    def policy(self, higher_is_better: bool) -> dict[str, Any]:
        return default_policy(higher_is_better, per_day=self.evaluations_per_day, lifetime=self.evaluations_lifetime,
                              resolution=self.ladder_resolution, margin=self.ladder_margin)
