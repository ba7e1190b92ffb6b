"""The gateway's free validator and the consensus scorer agree on every file: what the validator
passes scores, what it refuses is rejected — so `POST /evaluations/validate` can be trusted before
quota is spent. The example file the gateway offers validates."""

from __future__ import annotations

import pytest

from services.common import protocols
from services.common.contracts import Protocol
from services.common.protocols.lumbar.grid import CELL_IDS
from services.gateway.api.routes.evaluations import check_format
from services.gateway.submissions import example_csv, problems

STUDIES = ["s-01", "s-02", "s-03", "s-04"]


def _truth(protocol: str) -> dict:
    if protocol == Protocol.LUMBAR:
        return {s: {cell: ("Severe" if i % 3 == 0 else "Normal/Mild") for i, cell in enumerate(CELL_IDS)}
                for s in STUDIES}
    return {s: (["cardiomegaly"] if i % 2 else []) for i, s in enumerate(STUDIES)}


def _consensus_accepts(text: str, protocol: str) -> bool:
    release = {"release_id": "r", "manifest_sha256": "0" * 64, "holdout": STUDIES, "protocol": protocol}
    try:
        protocols.get(protocol).score_submission(text, release, _truth(protocol), 10)
    except protocols.SubmissionRejected:
        return False
    return True


def _mutations(example: str) -> dict[str, str]:
    header, first, second, *rest = example.splitlines()
    key, *values = first.split(",")
    return {
        "example": example,
        "a row missing": "\n".join([header, second, *rest]),
        "a row repeated": "\n".join([header, first, first, second, *rest]),
        "an unknown id": "\n".join([header, ",".join(["zz-99" + key[4:], *values]), second, *rest]),
        "NaN": "\n".join([header, ",".join([key, "NaN", *values[1:]]), second, *rest]),
        "infinite": "\n".join([header, ",".join([key, "inf", *values[1:]]), second, *rest]),
        "not a number": "\n".join([header, ",".join([key, "high", *values[1:]]), second, *rest]),
        "underscore number": "\n".join([header, ",".join([key, "1_0", *values[1:]]), second, *rest]),
        "negative": "\n".join([header, ",".join([key, "-0.2", *values[1:]]), second, *rest]),
        "above one": "\n".join([header, ",".join([key, "1.5", *values[1:]]), second, *rest]),
        "short line": "\n".join([header, ",".join([key, *values[1:]]), second, *rest]),
        "exponent": "\n".join([header, ",".join([key, "5e-1", *values[1:]]), second, *rest]),
    }


@pytest.mark.parametrize("protocol", [Protocol.CXR.value, Protocol.LUMBAR.value])
def test_the_validator_and_the_scorer_give_the_same_verdict(protocol):
    fmt = protocols.get(protocol).submission_format()
    verdicts = {}
    for name, text in _mutations(example_csv(fmt, STUDIES)).items():
        found = problems(check_format(text.encode(), protocol), fmt, STUDIES)
        assert (found == []) == _consensus_accepts(text, protocol), f"{protocol}, {name}: validator says {found}"
        verdicts[name] = found
    assert verdicts["example"] == [] and verdicts["exponent"] == []
    assert all(verdicts[n] for n in verdicts if n not in ("example", "exponent", "above one"))
    assert (verdicts["above one"] == []) is (protocol == Protocol.LUMBAR)  # lumbar rows are renormalised


def test_problems_are_counted_and_named():
    fmt = protocols.get(Protocol.CXR).submission_format()
    header, *rows = example_csv(fmt, STUDIES).splitlines()
    text = "\n".join([header, rows[0], rows[0], rows[1].replace("0.5", "nan", 1)])
    found = problems(text, fmt, STUDIES)
    assert "values that are NaN: 1 (line 4 " in found[0]
    assert "repeated study_id: 1 ('s-01')" in found
    assert "missing holdout rows: 2 ('s-03', 's-04')" in found


def test_the_example_has_a_row_per_holdout_key():
    lumbar = example_csv(protocols.get(Protocol.LUMBAR).submission_format(), STUDIES).splitlines()
    assert lumbar[0] == "row_id,normal_mild,moderate,severe" and len(lumbar) == 1 + 25 * len(STUDIES)
    assert lumbar[1].startswith("s-01_spinal_canal_stenosis_l1_l2,")
    cxr = example_csv(protocols.get(Protocol.CXR).submission_format(), STUDIES).splitlines()
    assert cxr[0].startswith("study_id,") and [r.split(",")[0] for r in cxr[1:]] == STUDIES
