"""`radcurate score`: the holdout metric as a command, for organisers and for checking a result.

Uses exactly the scoring code the consensus service runs. A malformed prediction (or truth) file
is reported with what is wrong and exit code 2, never scored.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

EXIT_MALFORMED = 2


class Malformed(ValueError):
    """A file cannot be scored; the message names the problem."""


def truth_from_labels_csv(text: str) -> tuple[dict[str, frozenset[str]], list[str]]:
    """A release's labels CSV (`study_id` + one 0/1 column per label id) as label sets."""
    import csv
    import io

    rows = [r for r in csv.reader(io.StringIO(text.removeprefix("\ufeff"))) if any(c.strip() for c in r)]
    if not rows or rows[0][:1] != ["study_id"] or len(rows[0]) < 2:
        raise Malformed("truth file: expected a header 'study_id,<label id>,...'")
    label_ids = [c.strip() for c in rows[0][1:]]
    truth: dict[str, frozenset[str]] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if len(row) != len(rows[0]) or any(c.strip() not in ("0", "1") for c in row[1:]):
            raise Malformed(f"truth file line {line_no}: expected {len(label_ids)} values of 0 or 1")
        if row[0].strip() in truth:
            raise Malformed(f"truth file line {line_no}: repeated study id {row[0].strip()!r}")
        truth[row[0].strip()] = frozenset(lab for lab, c in zip(label_ids, row[1:], strict=True) if c.strip() == "1")
    return truth, label_ids


def score_cxr_files(truth_text: str, pred_text: str, n_bootstrap: int, seed: int) -> dict:
    from services.common.protocols.cxr.scoring import PredictionFileError, parse_predictions, score_cxr

    truth, label_ids = truth_from_labels_csv(truth_text)
    try:
        preds = parse_predictions(pred_text, label_ids, truth)
    except PredictionFileError as exc:
        raise Malformed(f"prediction file: {exc}") from None
    result = score_cxr(truth, preds, label_ids, n_bootstrap=n_bootstrap, seed=seed)
    out = {"per_label": result["per_label"], "macro": result["macro"]}
    return {**out, "ci95": result["ci95"]} if n_bootstrap else out


def score_lumbar_files(truth_text: str, pred_text: str, n_bootstrap: int, seed: int) -> dict:
    """Lumbar: truth is the competition's train.csv, predictions its submission format."""
    from services.common.protocols.lumbar.scoring import (
        SubmissionError,
        parse_submission,
        score_lumbar_with_intervals,
        truth_from_train_csv,
    )

    try:
        truth = truth_from_train_csv(truth_text)
    except ValueError as exc:
        raise Malformed(f"truth file: {exc}") from None
    try:
        return score_lumbar_with_intervals(truth, parse_submission(pred_text), n_bootstrap=n_bootstrap, seed=seed)
    except SubmissionError as exc:
        raise Malformed(f"prediction file: {exc}") from None


# The dispatch point: one scorer per protocol (the lumbar command set may replace its entry).
SCORERS: dict[str, Callable[[str, str, int, int], dict]] = {"cxr": score_cxr_files, "lumbar": score_lumbar_files}


def score(protocol: Annotated[str, typer.Option(help="cxr or lumbar")] = "cxr",
          truth: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Truth labels CSV.")] = ...,
          pred: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Predictions CSV.")] = ...,
          bootstrap: Annotated[int, typer.Option(min=0, help="Bootstrap replicates for 95% intervals (cxr).")] = 0,
          seed: int = 0) -> None:
    """Score a predictions file against truth labels; print JSON {"per_label": ..., "macro": ...}."""
    scorer = SCORERS.get(protocol)
    if scorer is None:
        _fail(f"unknown protocol {protocol!r}; one of {', '.join(SCORERS)}")
    try:
        result = scorer(_read(truth), _read(pred), bootstrap, seed)
    except Malformed as exc:
        _fail(str(exc))
    typer.echo(json.dumps(result, indent=2, sort_keys=True))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        _fail(f"{path}: not UTF-8 text")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(EXIT_MALFORMED)
