"""`radcurate report --truth` reads a release from the consensus tables on a real Postgres schema
and states its label error against the truth."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

import services
from radcurate.simulate import Truth
from radcurate.truth_report import load_release, truth_audit
from services.common.db import apply_migrations

pytestmark = pytest.mark.integration
PROV = json.dumps({"backend": "rules", "model": "", "prompt_version": "v1"})


@pytest.fixture
def consensus_db(fresh_schema):
    apply_migrations(fresh_schema, sorted((Path(services.__file__).parent / "consensus" / "migrations").glob("*.sql")))
    return fresh_schema


def seed_release(dsn: str) -> None:
    """S1 released (labels right), S2 released with a false cardiomegaly, S3 holdout missing a pneumothorax."""
    studies = {"S1": (["pleural_effusion"], ["agree_all"] * 3), "S2": (["cardiomegaly"], ["agree_all", "agree_all",
                                                                                          "disagree"]),
               "S3": (["pleural_effusion"], ["agree_all"] * 3)}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for sid, (labels, verdicts) in studies.items():
            conn.execute("INSERT INTO assignments VALUES (%s,%s,'cxr-label-verification','run',%s,%s,'easy',"
                         "'cxr-v1',%s,%s,'[]')",
                         (sid, f"P{sid}", json.dumps(["r1", "r2", "r3"]), json.dumps(labels), PROV, PROV))
            for k, verdict in enumerate(verdicts):
                conn.execute("INSERT INTO votes VALUES (%s,%s,%s,%s,'[]','[]',10,now(),true)",
                             (f"{sid}-{k}", sid, f"r{k}", verdict))
            conn.execute("INSERT INTO decisions (study_id, accepted, labels, rule, rule_version, needs_adjudication,"
                         " reason, vote_ids) VALUES (%s,true,%s,'cxr-agree-all-majority','1',false,'accepted','[]')",
                         (sid, json.dumps(labels)))
        conn.execute("INSERT INTO releases (release_id, protocol, plan, released, holdout, manifest_key,"
                     " manifest_sha256) VALUES ('rel-1','cxr-label-verification','{}',%s,%s,'k','x')",
                     (json.dumps(["S1", "S2"]), json.dumps(["S3"])))
        conn.execute("INSERT INTO holdout_truth VALUES ('rel-1','S3',%s)", (json.dumps(["pleural_effusion"]),))


def test_the_audit_of_a_stored_release_names_false_positives_negatives_and_what_3_of_3_catches(consensus_db):
    seed_release(consensus_db)
    release = load_release(consensus_db, "cxr-label-verification")
    assert release.release_id == "rel-1" and set(release.benchmark["holdout"]) == {"S3"}
    truth = {"S1": Truth(frozenset({"pleural_effusion"}), frozenset(), "S1"),
             "S2": Truth(frozenset(), frozenset(), "S2"),
             "S3": Truth(frozenset({"pleural_effusion", "pneumothorax"}), frozenset({"pneumothorax"}), "S3")}
    result = truth_audit(release, truth)
    assert result["per_label"]["released"]["cardiomegaly"] == {"fp": 1, "fn": 0}
    assert result["per_label"]["holdout"]["pneumothorax"] == {"fp": 0, "fn": 1}
    assert result["caught"]["released"]["by_unanimous_rule"] == 1  # S2 had a disagree
    assert result["caught"]["holdout"]["by_unanimous_rule"] == 0  # S3: all three agreed, all wrong
    assert result["caught"]["released"]["by_fourth_reader"] in (0, 1)


def test_an_unknown_release_or_a_truth_file_missing_studies_is_a_clear_error(consensus_db):
    seed_release(consensus_db)
    with pytest.raises(LookupError, match="no release 'nope'"):
        load_release(consensus_db, "cxr-label-verification", "nope")
    release = load_release(consensus_db, "cxr-label-verification", "rel-1")
    with pytest.raises(ValueError, match="not in the truth file"):
        truth_audit(release, {"S1": Truth(frozenset(), frozenset(), "S1")})
