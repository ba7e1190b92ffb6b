"""Score a lumbar submission against a `train.csv`-shaped truth (the competition metric).

`radcurate score --protocol lumbar --truth train.csv --pred submission.csv` dispatches here;
`python -m radcurate.lumbar.score_cmd --truth T --pred P` runs it on its own. The metric is
`services.common.protocols.lumbar.scoring` — the same code the holdout evaluation uses — so a figure
printed here is the figure a submitter gets from the organiser.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from services.common.protocols.lumbar.scoring import (
    SubmissionError,
    parse_submission,
    score_lumbar,
    truth_from_train_csv,
)

RESULT_KEYS = ("score", "spinal", "foraminal", "subarticular", "any_severe_spinal")


class ScoreInputError(ValueError):
    """The truth or the submission cannot be scored; the message names the file and the fix."""


def score_lumbar_files(truth_csv: Path | str, submission_csv: Path | str) -> dict[str, float]:
    """`{"score", "spinal", "foraminal", "subarticular", "any_severe_spinal"}` (lower is better)."""
    truth_text = _read(truth_csv, "truth")
    submission_text = _read(submission_csv, "submission")
    try:
        truth = truth_from_train_csv(truth_text)
    except ValueError as exc:
        raise ScoreInputError(f"truth {truth_csv}: {exc}") from None
    if not truth:
        raise ScoreInputError(f"truth {truth_csv}: no graded rows to score")
    try:
        result = score_lumbar(truth, parse_submission(submission_text))
    except SubmissionError as exc:
        raise ScoreInputError(f"submission {submission_csv}: {exc}") from None
    except ValueError as exc:  # the truth lacks a whole condition group
        raise ScoreInputError(f"truth {truth_csv}: {exc}") from None
    return {key: result[key] for key in RESULT_KEYS}


def _read(path: Path | str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScoreInputError(f"{what} file {path} does not exist") from None
    except (UnicodeDecodeError, IsADirectoryError, PermissionError) as exc:
        raise ScoreInputError(f"{what} file {path} cannot be read as UTF-8 text: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="score a lumbar submission (lower is better)")
    parser.add_argument("--truth", required=True, type=Path, help="train.csv-shaped truth")
    parser.add_argument("--pred", required=True, type=Path,
                        help="row_id,normal_mild,moderate,severe submission")
    args = parser.parse_args(argv)
    try:
        print(json.dumps(score_lumbar_files(args.truth, args.pred)))
    except ScoreInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
