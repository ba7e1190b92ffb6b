"""The extractor and mapper serve both protocols: each event goes to its protocol's backend."""

from __future__ import annotations

from types import SimpleNamespace

from services.common.contracts import FindingsExtracted, ModelProvenance, ObjectsManifest, Protocol, ReportIngested
from services.extractor.app import ExtractorSettings
from services.extractor.handlers import build_handlers as extractor_handlers
from services.mapper.app import MapperSettings
from services.mapper.handlers import build_handlers as mapper_handlers

LUMBAR_REPORT = "L4-L5: Severe spinal canal stenosis. Moderate left neural foraminal narrowing. L5-S1: Normal."


def report(protocol: Protocol, text: str) -> ReportIngested:
    return ReportIngested(study_id="S1", patient_id="P1", study_instance_uid="1.2", protocol=protocol,
                          report_text=text, objects_manifest=ObjectsManifest())


async def test_a_lumbar_report_is_graded_per_condition_and_level_and_mapped_to_all_25_cells():
    extract = extractor_handlers(SimpleNamespace(settings=ExtractorSettings(database_url="postgresql://x"), extra={}))
    findings = (await extract["report-ingested"].prepare(report(Protocol.LUMBAR, LUMBAR_REPORT))).findings
    assert {f.label_hint for f in findings} >= {"spinal_canal_stenosis_l4_l5", "left_neural_foraminal_narrowing_l4_l5"}

    mapping = mapper_handlers(SimpleNamespace(settings=MapperSettings(database_url="postgresql://x"), extra={}))
    event = FindingsExtracted(study_id="S1", patient_id="P1", protocol=Protocol.LUMBAR, findings=findings,
                              provenance=ModelProvenance(backend="rules"))
    result = await mapping["findings-extracted"].prepare(event)
    grades = {label.label_id: label.grade for label in result.labels}
    assert len(grades) == 25
    assert grades["spinal_canal_stenosis_l4_l5"] == "Severe"
    assert grades["left_neural_foraminal_narrowing_l4_l5"] == "Moderate"
    assert grades["spinal_canal_stenosis_l5_s1"] == "Normal/Mild"


async def test_a_chest_report_still_goes_to_the_cxr_backends():
    extract = extractor_handlers(SimpleNamespace(settings=ExtractorSettings(database_url="postgresql://x"), extra={}))
    read = await extract["report-ingested"].prepare(report(Protocol.CXR, "Small right pleural effusion."))
    findings = read.findings
    assert [f.label_hint for f in findings] == ["pleural_effusion"]
