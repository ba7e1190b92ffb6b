"""A third protocol, registered from the tests (tests/support/pneumothorax.py), goes through each
service's logic without any service file naming it: extract, map, sample, the reader's vote at
the gateway, the vote event on the wire, the consensus decision, the release and the metric."""

from __future__ import annotations

from types import SimpleNamespace

import pydantic
import pytest

from services.common import protocols
from services.common.contracts import (
    EvaluationRequested,
    FindingsExtracted,
    LabelsSuggested,
    ModelProvenance,
    ObjectsManifest,
    ReportIngested,
    SamplingPlan,
    SamplingRequested,
    SelectionPlan,
    SuggestedLabel,
    VoteCast,
    parse_event,
)
from services.common.objectstore import sha256_hex
from services.common.protocols.kit.rule_config import RuleConfig
from services.consensus.evaluation import evaluate
from services.extractor.app import ExtractorSettings
from services.extractor.handlers import build_handlers as extractor_handlers
from services.gateway.api.routes.evaluations import check_format
from services.gateway.api.routes.reviews import VoteIn, _judgement, _view
from services.gateway.problems import Problem
from services.mapper.app import MapperSettings
from services.mapper.handlers import build_handlers as mapper_handlers
from services.sampler.handlers import draw
from tests.support import pneumothorax
from tests.support.pneumothorax import NAME, RULE, Triage

RULE_CONFIG = RuleConfig(protocol=NAME, rule=RULE, version="1")


class RecordingConn:
    """Stands in for the transaction's connection: records the SQL a repository runs."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple]] = []

    async def execute(self, sql: str, params: tuple = ()) -> None:
        self.calls.append((sql, params))


@pytest.fixture
def ptx():
    return protocols.register(pneumothorax.PROTOCOL)  # importing the module registered it already


@pytest.fixture
def unregistered():
    protocols.unregister(NAME)
    yield
    protocols.register(pneumothorax.PROTOCOL)  # as the import left it, for whichever test comes next


def report(study_id: str, text: str) -> ReportIngested:
    return ReportIngested(study_id=study_id, patient_id=f"P-{study_id}", protocol=NAME, study_instance_uid="1.2",
                          report_text=text, objects_manifest=ObjectsManifest())


def test_an_unregistered_protocol_is_refused_by_name_everywhere(unregistered):
    assert NAME not in protocols.names()
    with pytest.raises(protocols.UnknownProtocol, match=NAME):
        protocols.get(NAME)
    with pytest.raises(pydantic.ValidationError, match=f"unknown protocol '{NAME}'"):
        report("S1", "Small left pneumothorax.")


async def test_a_report_is_extracted_and_mapped_by_the_protocols_own_backends(ptx):
    assert NAME in protocols.names()
    extract = extractor_handlers(SimpleNamespace(settings=ExtractorSettings(database_url="postgresql://x"), extra={}))
    event = report("S1", "Small left apical pneumothorax. No effusion.")
    findings = await extract["report-ingested"].prepare(event)
    conn = RecordingConn()
    [extracted] = await extract["report-ingested"].apply(conn, event, findings)
    assert [f.label_hint for f in extracted.findings] == ["pneumothorax"]
    assert extracted.protocol == NAME and extracted.provenance.model == "ptx-keyword"
    assert "INSERT INTO findings" in conn.calls[0][0] and [NAME] in conn.calls[0][1]  # the protocol column

    mapping = mapper_handlers(SimpleNamespace(settings=MapperSettings(database_url="postgresql://x"), extra={}))
    extracted = FindingsExtracted.model_validate_json(extracted.model_dump_json())
    result = await mapping["findings-extracted"].prepare(extracted)
    [suggested] = await mapping["findings-extracted"].apply(RecordingConn(), extracted, result)
    assert [lb.label_id for lb in suggested.labels] == ["pneumothorax"]
    assert (suggested.protocol, suggested.taxonomy_version) == (NAME, "ptx-v1")

    negative = await extract["report-ingested"].prepare(report("S2", "No pneumothorax."))
    assert negative.findings == []


def test_the_sampler_draws_with_the_protocols_strata(ptx):
    prov = ModelProvenance(backend="rules")
    pool = [LabelsSuggested(study_id=f"S{i}", patient_id=f"P{i}", protocol=NAME, taxonomy_version="ptx-v1",
                            labels=[SuggestedLabel(label_id="pneumothorax")] if i % 3 == 0 else [],
                            extraction=prov, mapping=prov) for i in range(12)]
    cmd = SamplingRequested(study_id="run", run_id="run", protocol=NAME, panel=["a", "b"],
                            plan=SamplingPlan(n=6, readers_per_study=2, min_per_label=2, seed=1))
    result = draw(cmd, pool)
    assert len(result.selected) == 6
    assert result.label_counts.get("pneumothorax", 0) >= 2


async def test_the_gateway_shows_the_task_and_reads_a_vote_the_protocols_way(ptx):
    row = {"assignment_id": "A1", "study_id": "S1", "status": "open", "difficulty": "easy",
           "suggested": [{"label_id": "pneumothorax", "evidence": ["Small pneumothorax."]}], "unmapped": [],
           "protocol": NAME, "open_seconds": 12.0}
    assert _view(row).label_ids == ["pneumothorax"] and _view(row).protocol == NAME

    body = VoteIn.model_validate({"present": True, "box": {"x": 10, "y": 12, "width": 30, "height": 40}})
    vote, confirmed = await _judgement(None, ptx, body, row, "A1", "r1")
    assert isinstance(vote.judgement, Triage) and vote.judgement.box.width == 30 and confirmed == []
    on_the_wire = parse_event(vote.model_dump(mode="json"))  # what consensus and the sampler read back
    assert isinstance(on_the_wire, VoteCast) and on_the_wire.judgement == vote.judgement

    with pytest.raises(Problem) as refused:
        await _judgement(None, ptx, VoteIn.model_validate({"present": True}), row, "A1", "r1")
    assert refused.value.status == 422 and "box" in refused.value.detail


def test_consensus_decides_releases_and_scores_the_protocols_way(ptx):
    votes = [{"vote_id": f"v{i}", "reader_id": f"r{i}", "present": True, "box": None} for i in range(3)]
    decision, cells = ptx.decide("S1", votes, {"suggested": ["pneumothorax"]}, RULE_CONFIG)
    assert decision.accepted and decision.labels == ("pneumothorax",) and cells == []
    split, _ = ptx.decide("S2", votes[:2] + [{**votes[2], "present": False}], {}, RULE_CONFIG)
    assert not split.accepted and split.needs_adjudication

    rows = [{"study_id": f"S{i}", "patient_id": f"P{i}", "labels": ["pneumothorax"] if i % 2 else [],
             "objects": []} for i in range(8)]
    composed = ptx.compose_release("R1", rows, SelectionPlan(target_size=8, holdout_fraction=0.5, min_per_label=0),
                                   {"ingested": 8}, RULE_CONFIG, {"studies": 8})
    assert composed.files.manifest_key and set(composed.truth) == {s.study_id for s in composed.holdout}

    holdout = sorted(composed.truth)
    csv_text = "study_id,pneumothorax\n" + "".join(
        f"{sid},{0.9 if composed.truth[sid] else 0.1}\n" for sid in holdout)
    assert check_format(csv_text.encode(), NAME) == csv_text
    release = {"release_id": "R1", "protocol": NAME, "holdout": holdout, "manifest_sha256": "abc"}
    cmd = EvaluationRequested(study_id="E1", evaluation_id="E1", evaluator_id="ev", release_id="R1",
                              predictions_csv=csv_text, submission_sha256=sha256_hex(csv_text.encode()))
    outcome = evaluate(cmd, release, composed.truth)
    assert outcome.status == "scored" and outcome.result["accuracy"] == 1.0 and outcome.receipt
