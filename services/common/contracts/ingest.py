"""Ingest: a study's DICOM objects and report are stored (gateway -> extractor)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from services.common.contracts.envelope import Event, ProtocolName, Topic


class DicomObject(BaseModel):
    """One stored DICOM instance: where it lives in the object store, and what it is."""

    model_config = ConfigDict(frozen=True)

    object_key: str  # content-addressed: sha256 of the bytes
    sha256: str
    sop_instance_uid: str
    series_instance_uid: str
    series_description: str = ""
    instance_number: int = 1
    modality: str = ""
    # DICOM PixelSpacing (row, column) in mm; lumbar consensus averages reader points in mm with it.
    pixel_spacing: tuple[float, float] | None = None


class ReportIngested(Event):
    topic: ClassVar[Topic] = Topic.REPORT_INGESTED
    event_type: Literal["ReportIngested"] = "ReportIngested"
    schema_version: int = 2
    protocol: ProtocolName
    patient_id: str
    study_instance_uid: str
    report_text: str
    objects: list[DicomObject]
