"""The fixed CXR label ids the generator knows, and how a finding can be lateralised.

The production taxonomy is configurable; the generator pins the default twelve ids so that
its hidden truth stays comparable across runs and releases.
"""

from __future__ import annotations

from enum import StrEnum


class Label(StrEnum):
    """The twelve default benchmark labels (ids as the default taxonomy spells them)."""

    ATELECTASIS = "atelectasis"
    CARDIOMEGALY = "cardiomegaly"
    CONSOLIDATION = "consolidation"
    PULMONARY_EDEMA = "pulmonary_edema"
    PLEURAL_EFFUSION = "pleural_effusion"
    PNEUMOTHORAX = "pneumothorax"
    LUNG_NODULE_MASS = "lung_nodule_mass"
    INTERSTITIAL_LUNG_DISEASE = "interstitial_lung_disease"
    EMPHYSEMA = "emphysema"
    FRACTURE = "fracture"
    MEDIASTINAL_HILAR_ABNORMALITY = "mediastinal_hilar_abnormality"
    SUPPORT_DEVICES = "support_devices"


LABEL_IDS: tuple[str, ...] = tuple(label.value for label in Label)


class Side(StrEnum):
    """Laterality as the patient sees it (the image shows the patient's left on the right)."""

    LEFT = "left"
    RIGHT = "right"
    BILATERAL = "bilateral"


class Setting(StrEnum):
    """Where the study was acquired: drives disease mix, devices, view and report style."""

    ICU = "icu"
    INPATIENT = "inpatient"
    EMERGENCY = "emergency"
    OUTPATIENT = "outpatient"


# P(left, right, bilateral) for findings that have a side; others are reported without one.
SIDE_WEIGHTS: dict[Label, tuple[float, float, float]] = {
    Label.ATELECTASIS: (0.35, 0.25, 0.40),
    Label.CONSOLIDATION: (0.35, 0.45, 0.20),
    Label.PLEURAL_EFFUSION: (0.30, 0.35, 0.35),
    Label.PNEUMOTHORAX: (0.48, 0.50, 0.02),
    Label.LUNG_NODULE_MASS: (0.45, 0.50, 0.05),
    Label.FRACTURE: (0.50, 0.48, 0.02),
}
