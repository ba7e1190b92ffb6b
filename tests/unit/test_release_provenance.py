"""Every released label row says how it was decided (issue 12 §2): provenance.csv beside each
split's labels, and the dataset card's count per decision path."""

from __future__ import annotations

import csv
import io
import json

from services.common.protocols.kit.release import provenance_counts, study_provenance
from tests.unit.test_consensus_release import RULE, accepted_rows, compose

VOTES = [{"reader_id": r, "verdict": v, "added_labels": [], "removed_labels": []}
         for r, v in (("r1", "agree_all"), ("r2", "agree_all"), ("r3", "agree_mostly"))]


def with_provenance(rows: list[dict]) -> list[dict]:
    """Accepted rows as consensus gives them: every third adjudicated by curator c1."""
    return [{**r, "rule": RULE.rule, "rule_version": RULE.version, "votes": VOTES,
             "adjudicated": i % 3 == 0, "adjudicator": "c1" if i % 3 == 0 else None} for i, r in enumerate(rows)]


def read(files, key: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(files[key].decode())))


def test_each_split_has_one_provenance_row_per_labelled_study():
    rows = with_provenance(accepted_rows())
    c = compose(rows=rows)
    files = c.files.files
    for bucket, prefix, studies in (("public", "releases/r1", c.released),
                                    ("holdout", "releases/r1/holdout", c.holdout)):
        prov = {r["study_id"]: r for r in read(files, (bucket, f"{prefix}/provenance.csv"))}
        labels = [r["study_id"] for r in read(files, (bucket, f"{prefix}/labels.csv"))]
        assert sorted(prov) == labels == sorted(s.study_id for s in studies)
        for sid, p in prov.items():
            adjudicated = int(sid[1:]) % 3 == 0
            assert p == {"study_id": sid, "decision_path": "adjudicated" if adjudicated else "rule",
                         "votes": "agree_all=2;agree_mostly=1;disagree=0", "rule": "cxr-agree-all-majority",
                         "rule_version": "1", "adjudicator": "c1" if adjudicated else ""}


def test_the_card_counts_each_decision_path_per_split():
    c = compose(rows=with_provenance(accepted_rows()))
    card = json.loads(c.files.files[("public", "releases/r1/dataset_card.json")])
    for split, studies in (("released", c.released), ("holdout", c.holdout)):
        adjudicated = sum(int(s.study_id[1:]) % 3 == 0 for s in studies)
        assert card["provenance"][split] == {"rule": len(studies) - adjudicated, "adjudicated": adjudicated}


def test_the_labels_file_keeps_its_columns():
    c = compose(rows=with_provenance(accepted_rows()))
    header = c.files.files[("public", "releases/r1/labels.csv")].decode().splitlines()[0]
    assert "decision_path" not in header  # scorers read every non-key column of labels.csv as a label


def test_provenance_falls_back_to_the_configured_rule():
    p = study_provenance({"adjudicated": False, "adjudicator": "ignored"}, "", "rule-x", "7")
    assert p == {"decision_path": "rule", "votes": "", "rule": "rule-x", "rule_version": "7", "adjudicator": ""}
    assert provenance_counts([p, {"decision_path": "adjudicated"}]) == {"rule": 1, "adjudicated": 1}
