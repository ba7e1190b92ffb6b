"""Ingest: a study's DICOM objects and report are stored (gateway -> extractor)."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    # What ties the object to other studies beyond its UIDs, for the release split (holdout
    # contamination): sha256 of its decoded pixels in canonical form (the same image re-exported
    # with new UIDs or another transfer syntax; None: uniform or not decoded at ingest), and the
    # keyed digest of its normalised DICOM PatientID (HMAC, never the PatientID; None: none).
    pixel_sha256: str | None = None
    patient_key: str | None = None


class ObjectsManifest(BaseModel):
    """A study's DICOM instance list, as events carry it (schema 3): inline or by reference;
    `count` says how many instances it lists.

    A short list (its JSON at most `services.common.manifests.INLINE_MAX_BYTES`: a chest
    radiograph study's one or two instances) is carried in `inline` (no key, no sha256), so
    ingest stores nothing but the DICOM and readers fetch nothing. A longer one is a JSON object
    in the objects bucket (`services.common.manifests`), written before the event is recorded and
    referenced by `key` and `sha256`, so an event's size does not grow with the study (a lumbar
    MRI of 2,400 instances would be ~1 MB inline, over the broker's limit).

    Events written before schema 3 carried the list itself: the upcaster moves it into `inline`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = ""  # manifests/<study_id>/<sha256>.json in the objects bucket
    sha256: str = ""  # of the object's bytes: a reader verifies it before trusting the list
    count: int = Field(0, ge=0)
    inline: list[DicomObject] = Field(default_factory=list)  # a short list, or an upcast schema-2 event's

    @property
    def by_reference(self) -> bool:
        return bool(self.key)

    @model_validator(mode="after")
    def _by_key_or_inline(self) -> ObjectsManifest:
        if self.key:
            if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
                raise ValueError("a manifest referenced by key carries the sha256 (64 hex digits) of its bytes")
            if self.inline:
                raise ValueError("a manifest is referenced by key or carried inline, not both")
        elif self.sha256:
            raise ValueError("a manifest's sha256 comes with its key")
        elif self.count != len(self.inline):
            raise ValueError(f"an inline manifest of {len(self.inline)} objects says count {self.count}")
        return self


class ReportIngested(Event):
    topic: ClassVar[Topic] = Topic.REPORT_INGESTED
    event_type: Literal["ReportIngested"] = "ReportIngested"
    schema_version: int = 3
    protocol: ProtocolName
    patient_id: str
    study_instance_uid: str
    report_text: str
    objects_manifest: ObjectsManifest
