"""`radcurate plan`: what a review campaign will yield, simulated before any radiologist is asked.

Runs `campaign.run_campaign` once per seed (sampling, reader panel and every read change with the
seed; the archive does not) and prints each figure as its mean over seeds with the 2.5-97.5
percentile range of the seeds: the spread a curator should expect from chance alone.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from radcurate.campaign import RULES, CampaignOutcome, CampaignPlan, candidates, run_campaign, synth_pool
from services.common.contracts import SelectionPlan

Figure = Callable[[CampaignOutcome], float]


def _total(o: CampaignOutcome, key: str) -> float:
    return sum(o.audit["studies"][split][key] for split in ("released", "holdout"))


def _caught(o: CampaignOutcome, key: str) -> float:
    values = [o.audit["caught"][split][key] for split in ("released", "holdout")]
    return math.nan if None in values else float(sum(values))


def _mean_kappa(o: CampaignOutcome) -> float:
    values = [k for k in o.kappa.values() if k is not None]
    return float(np.mean(values)) if values else math.nan


FIGURES: dict[str, Figure] = {
    "accepted": lambda o: o.accepted,
    "accepted by adjudication proposal": lambda o: o.adjudicated,
    "benchmark studies": lambda o: o.selected,
    "  normal": lambda o: o.composition["groups"]["normal"],
    "  single-label": lambda o: o.composition["groups"]["single_label"],
    "  multi-label": lambda o: o.composition["groups"]["multi_label"],
    "  largest label pair": lambda o: o.composition["max_pair"][0],
    "benchmark studies with a label error": lambda o: _total(o, "with_error"),
    "wrong labels in the benchmark": lambda o: _total(o, "label_errors"),
    "  of the wrong studies, caught by 3/3 rule": lambda o: _caught(o, "by_unanimous_rule"),
    "  of the wrong studies, caught by 4th reader": lambda o: _caught(o, "by_fourth_reader"),
    "mean Fleiss' kappa over labels": _mean_kappa,
    "reader-hours": lambda o: o.reader_hours,
}


def summarise(outcomes: Sequence[CampaignOutcome]) -> dict[str, dict[str, float | None]]:
    """Each figure's mean and 2.5-97.5 percentile range over the seeds' outcomes."""
    summary = {}
    for name, figure in FIGURES.items():
        values = np.array([figure(o) for o in outcomes], dtype=float)
        values = values[~np.isnan(values)]
        if values.size == 0:
            summary[name] = {"mean": None, "low": None, "high": None}
            continue
        low, high = np.percentile(values, [2.5, 97.5])
        summary[name] = {"mean": float(values.mean()), "low": float(low), "high": float(high)}
    return summary


def per_label(outcomes: Sequence[CampaignOutcome]) -> dict[str, dict[str, float | None]]:
    """Per label: mean kappa, and mean false positives / negatives in the benchmark (both splits)."""
    labels = list(outcomes[0].kappa)
    out = {}
    for label in labels:
        kappas = [o.kappa[label] for o in outcomes if o.kappa[label] is not None]
        errors = {kind: float(np.mean([sum(o.audit["per_label"][s][label][kind] for s in ("released", "holdout"))
                                       for o in outcomes])) for kind in ("fp", "fn")}
        alphas = [o.reliability["krippendorff_alpha"][label] for o in outcomes
                  if o.reliability["krippendorff_alpha"][label] is not None]
        out[label] = {"kappa": float(np.mean(kappas)) if kappas else None,
                      "kappa_ci95_first_seed": outcomes[0].reliability["fleiss_kappa_ci95"][label],
                      "alpha": float(np.mean(alphas)) if alphas else None, **errors}
    return out


def shortfalls(outcomes: Sequence[CampaignOutcome]) -> dict[str, int]:
    """Each kind of unmet quota (numbers blanked so seeds group) and in how many seeds it occurred."""
    kinds: dict[str, int] = {}
    for o in outcomes:
        for note in {re.sub(r"\d+", "#", u) for u in o.unmet}:
            kinds[note] = kinds.get(note, 0) + 1
    return dict(sorted(kinds.items()))


def _cell(s: dict, digits: int) -> str:
    if s["mean"] is None:
        return "n/a"
    return f"{s['mean']:.{digits}f} [{s['low']:.{digits}f}, {s['high']:.{digits}f}]"


def render(results: dict[str, dict], seeds: int) -> list[str]:
    """One column per rule: mean [2.5-97.5 % range over seeds]."""
    rules = list(results)
    width = max(24, *(len(r) + 2 for r in rules))
    lines = [f"{'per campaign (mean [range over ' + str(seeds) + ' seeds])':<46}"
             + "".join(f"{r:>{width}}" for r in rules), "-" * (46 + width * len(rules))]
    for name in FIGURES:
        digits = 2 if "kappa" in name else 1 if "hours" in name else 0
        lines.append(f"{name:<46}" + "".join(f"{_cell(results[r]['summary'][name], digits):>{width}}" for r in rules))
    lines += ["", "per label, mean over seeds: Fleiss' kappa / false positives / false negatives in the benchmark",
              f"{'label':<34}" + "".join(f"{r:>{width}}" for r in rules)]
    for label in results[rules[0]]["per_label"]:
        cells = []
        for r in rules:
            x = results[r]["per_label"][label]
            kappa = "n/a" if x["kappa"] is None else f"{x['kappa']:.2f}"
            cells.append(f"{kappa + ' / ' + format(x['fp'], '.1f') + ' / ' + format(x['fn'], '.1f'):>{width}}")
        lines.append(f"{label:<34}" + "".join(cells))
    return lines


def plan(pool: Annotated[int, typer.Option(min=20, help="Studies in the (synthetic) archive.")] = 13_735,
         pool_seed: Annotated[int, typer.Option(help="Seed of the archive.")] = 0,
         sample: Annotated[int, typer.Option(min=1, help="Studies sampled for review.")] = 1000,
         readers_per_study: Annotated[int, typer.Option(min=1)] = 3,
         panel: Annotated[int, typer.Option(min=1, help="Radiologists in the panel.")] = 17,
         rule: Annotated[list[str], typer.Option(help=f"Consensus rule(s) to compare: {', '.join(RULES)}.")] = [  # noqa: B006
             "agree-all-2"],
         compare_rules: Annotated[bool, typer.Option("--compare-rules", help="Run every rule.")] = False,
         target: Annotated[int, typer.Option(min=2, help="Benchmark size (selection).")] = 200,
         normal_share: Annotated[float, typer.Option(min=0, max=1)] = 0.10,
         single_label_share: Annotated[float, typer.Option(min=0, max=1)] = 0.25,
         max_label_share: Annotated[float, typer.Option(min=0.001, max=1)] = 0.35,
         max_pair_share: Annotated[float, typer.Option(min=0.001, max=1)] = 0.15,
         min_per_label: Annotated[int, typer.Option(min=0)] = 5,
         seeds: Annotated[int, typer.Option(min=1, help="Campaigns simulated per rule.")] = 5,
         as_json: Annotated[bool, typer.Option("--json")] = False,
         cache_dir: Annotated[Path, typer.Option(help="Where the labelled archive is cached.")] = Path(
             ".radcurate/plan-cache")) -> None:
    """Simulate a review campaign (sample, read, decide, select) and print its expected yield,
    benchmark composition, label error against the truth, kappa and reader-hours, with ranges."""
    rules = list(RULES) if compare_rules else rule
    try:
        selection = SelectionPlan(target_size=target, normal_share=normal_share, single_label_share=single_label_share,
                                  max_label_share=max_label_share, max_pair_share=max_pair_share,
                                  min_per_label=min_per_label)
        plans = {r: CampaignPlan(sample_size=sample, readers_per_study=readers_per_study, panel_size=panel, rule=r,
                                 selection=selection) for r in rules}
    except ValueError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    started = time.perf_counter()
    archive = synth_pool(pool, pool_seed, cache_dir)
    labelled = time.perf_counter() - started
    results, pool_candidates = {}, candidates(archive)
    for name, p in plans.items():
        outcomes = [run_campaign(archive, p, seed, pool_candidates) for seed in range(seeds)]
        results[name] = {"summary": summarise(outcomes), "per_label": per_label(outcomes),
                         "unmet": shortfalls(outcomes)}
    elapsed = time.perf_counter() - started
    if as_json:
        typer.echo(json.dumps({"results": results, "seeds": seeds, "seconds": elapsed}, indent=2, sort_keys=True))
        return
    typer.echo(f"archive {pool} studies (seed {pool_seed}), sample {sample}, {readers_per_study} readers per study"
               f" from a panel of {panel}, benchmark {target}; {seeds} seed(s) per rule")
    typer.echo("\n".join(render(results, seeds)))
    for name, r in results.items():
        for note, count in r["unmet"].items():
            typer.secho(f"  {name}, {count}/{seeds} seeds: {note}", fg=typer.colors.YELLOW)
    typer.echo(f"\n{elapsed:.1f}s ({labelled:.1f}s to build or load the labelled archive)")
