"""What a predictions file must look like for a release, checked from public facts only.

The gateway knows each release's holdout study ids (the public manifest lists them; their labels
are never here), so it can tell an evaluator everything wrong with a file — rows, ids, values —
before any quota is spent, and write an example file. Consensus checks the same again when it
scores (services/consensus/scoring_*.py); tests/unit/test_gateway_submissions.py holds the two
to the same verdict.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter
from collections.abc import Collection, Sequence

from services.common.protocols.kit.submission import SubmissionFormat

MAX_NAMED = 5
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def example_csv(fmt: SubmissionFormat, study_ids: Collection[str]) -> str:
    """A well-formed file with an uninformative prediction in every row (it validates; it scores
    as chance)."""
    value = "0.5" if fmt.high == 1 else "1"
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(fmt.header)
    for key in fmt.keys(study_ids):
        writer.writerow([key, *([value] * len(fmt.value_columns))])
    return out.getvalue()


def problems(text: str, fmt: SubmissionFormat, study_ids: Collection[str]) -> list[str]:
    """Everything wrong with the rows of a file whose header is already right (`check_format`);
    each kind of problem counted, with up to MAX_NAMED examples. Empty: the file can be scored."""
    lines = [(n, row) for n, row in enumerate(csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline="")), 1)
             if any(cell.strip() for cell in row)]
    header = [c.strip() for c in lines[0][1]]
    key_at, value_at = header.index(fmt.key_column), [header.index(c) for c in fmt.value_columns]
    found: dict[str, list[str]] = {}
    keys: list[str] = []
    for n, row in lines[1:]:
        if len(row) != len(header):
            found.setdefault("lines with the wrong number of fields", []).append(f"line {n}")
            continue
        keys.append(row[key_at].strip())
        for j in value_at:
            kind = _bad_value(row[j].strip(), fmt)
            if kind:
                found.setdefault(f"values that are {kind}", []).append(f"line {n} {header[j]} {row[j].strip()!r}")
    expected = set(fmt.keys(study_ids))
    present = set(keys)
    found["repeated " + fmt.key_column] = sorted(repr(k) for k, c in Counter(keys).items() if c > 1)
    found[f"{fmt.key_column}s not in the holdout set"] = sorted(repr(k) for k in present - expected)
    found["missing holdout rows"] = sorted(repr(k) for k in expected - present)
    return [_summary(what, examples) for what, examples in found.items() if examples]


def _bad_value(cell: str, fmt: SubmissionFormat) -> str | None:
    word = cell.lower().lstrip("+-")
    if word == "nan":
        return "NaN"
    if word in ("inf", "infinity"):
        return "infinite"
    if _NUMBER.fullmatch(cell) is None:  # float() would also take "1_0" or " 1"; scoring does not
        return "not numbers"
    value = float(cell)
    if math.isinf(value):
        return "infinite"
    if not fmt.low <= value <= fmt.high:
        return "outside [0, 1]" if fmt.high == 1 else "negative"
    return None


def _summary(what: str, examples: Sequence[str]) -> str:
    shown = ", ".join(examples[:MAX_NAMED]) + (", ..." if len(examples) > MAX_NAMED else "")
    return f"{what}: {len(examples)} ({shown})"
