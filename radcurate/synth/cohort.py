"""The hidden truth: who the patients are, which studies they had, and what each image shows.

Everything the reports and images say is derived from this truth, so that the reader simulator
and tests can measure how far the pipeline's labels drift from what is really on the image.
Rates are chosen to look like a hospital CXR archive (MIMIC-CXR / CheXpert-like skew: devices,
effusion, atelectasis and cardiomegaly common; pneumothorax, fracture, ILD and hilar findings
rare), not to hit any downstream funnel figure.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import date, timedelta
from itertools import accumulate

import numpy as np

from radcurate.synth.labels import SIDE_WEIGHTS, Label, Setting, Side

SETTING_WEIGHTS = {Setting.ICU: 0.18, Setting.INPATIENT: 0.25, Setting.EMERGENCY: 0.22,
                   Setting.OUTPATIENT: 0.35}
# P(1, 2, 3, 4 studies) per patient: ICU patients are imaged daily, outpatients rarely.
STUDIES_PER_PATIENT = {Setting.ICU: (0.45, 0.25, 0.17, 0.13),
                       Setting.INPATIENT: (0.70, 0.18, 0.08, 0.04),
                       Setting.EMERGENCY: (0.85, 0.11, 0.03, 0.01),
                       Setting.OUTPATIENT: (0.80, 0.14, 0.04, 0.02)}
# Days between a patient's consecutive studies (low, high).
FOLLOW_UP_DAYS = {Setting.ICU: (1, 3), Setting.INPATIENT: (1, 10),
                  Setting.EMERGENCY: (20, 400), Setting.OUTPATIENT: (30, 500)}
HEART_FAILURE_RATE = {Setting.ICU: 0.30, Setting.INPATIENT: 0.22, Setting.EMERGENCY: 0.12,
                      Setting.OUTPATIENT: 0.07}
# Patient-level chronic findings: present on every study of the patient who has them.
CHRONIC_RATES = {Label.EMPHYSEMA: 0.05, Label.INTERSTITIAL_LUNG_DISEASE: 0.015,
                 Label.LUNG_NODULE_MASS: 0.035, Label.MEDIASTINAL_HILAR_ABNORMALITY: 0.012}
# Per-study acute findings by setting.
ACUTE_RATES = {
    Setting.ICU: {Label.ATELECTASIS: 0.35, Label.CONSOLIDATION: 0.16,
                  Label.PLEURAL_EFFUSION: 0.22, Label.PULMONARY_EDEMA: 0.10,
                  Label.PNEUMOTHORAX: 0.05, Label.FRACTURE: 0.02},
    Setting.INPATIENT: {Label.ATELECTASIS: 0.16, Label.CONSOLIDATION: 0.11,
                        Label.PLEURAL_EFFUSION: 0.11, Label.PULMONARY_EDEMA: 0.04,
                        Label.PNEUMOTHORAX: 0.012, Label.FRACTURE: 0.012},
    Setting.EMERGENCY: {Label.ATELECTASIS: 0.07, Label.CONSOLIDATION: 0.08,
                        Label.PLEURAL_EFFUSION: 0.05, Label.PULMONARY_EDEMA: 0.03,
                        Label.PNEUMOTHORAX: 0.015, Label.FRACTURE: 0.035},
    Setting.OUTPATIENT: {Label.ATELECTASIS: 0.04, Label.CONSOLIDATION: 0.025,
                         Label.PLEURAL_EFFUSION: 0.02, Label.PULMONARY_EDEMA: 0.005,
                         Label.PNEUMOTHORAX: 0.003, Label.FRACTURE: 0.008},
}
# Heart failure drives the classic triad: cardiomegaly, edema, effusions.
HF_CARDIOMEGALY, OTHER_CARDIOMEGALY = 0.85, 0.06
HF_EDEMA, HF_EFFUSION = 0.40, 0.45
EDEMA_BRINGS_EFFUSION = 0.55  # effusions accompany edema
EFFUSION_BRINGS_ATELECTASIS = 0.35  # compressive atelectasis next to an effusion
ACUTE_PERSISTENCE = 0.55  # an acute finding is still there on the next study
# Lines and tubes: ICU patients nearly always have some.
DEVICE_RATES = {Setting.ICU: 0.85, Setting.INPATIENT: 0.12, Setting.EMERGENCY: 0.02,
                Setting.OUTPATIENT: 0.01}
PACEMAKER_RATE_HF, PACEMAKER_RATE_OTHER = 0.25, 0.01
DEVICE_PERSISTENCE = 0.85
# P(the finding is present but subtle on the image): subtle findings are what readers miss.
SUBTLE_RATES = {Label.ATELECTASIS: 0.35, Label.CARDIOMEGALY: 0.20, Label.CONSOLIDATION: 0.25,
                Label.PULMONARY_EDEMA: 0.30, Label.PLEURAL_EFFUSION: 0.25,
                Label.PNEUMOTHORAX: 0.35, Label.LUNG_NODULE_MASS: 0.40,
                Label.INTERSTITIAL_LUNG_DISEASE: 0.30, Label.EMPHYSEMA: 0.30,
                Label.FRACTURE: 0.50, Label.MEDIASTINAL_HILAR_ABNORMALITY: 0.35,
                Label.SUPPORT_DEVICES: 0.0}
DATE_SHIFT_ORIGIN = date(2015, 1, 1)  # de-identified dates are shifted into this window
DATE_SHIFT_SPAN_DAYS = 7 * 365


@dataclass(frozen=True)
class Patient:
    """A pseudonymous patient and the chronic state shared by all their studies."""

    patient_id: str
    setting: Setting
    n_studies: int
    heart_failure: bool
    chronic: dict[Label, Side | None]
    pacemaker: bool


@dataclass(frozen=True)
class StudyTruth:
    """What one study's image really shows; the report is written from this."""

    study_id: str
    patient_id: str
    setting: Setting
    study_date: date
    study_time: str
    view_position: str
    labels: tuple[Label, ...]
    subtle: tuple[Label, ...]
    laterality: dict[Label, Side] = field(default_factory=dict)
    devices: tuple[str, ...] = ()
    prior: StudyTruth | None = None

    def to_json(self) -> dict:
        """The hidden-truth record (truth.jsonl), without the report-side fields."""
        return {"study_id": self.study_id, "patient_id": self.patient_id,
                "labels": [str(x) for x in self.labels], "subtle": [str(x) for x in self.subtle],
                "laterality": {str(k): str(v) for k, v in self.laterality.items()},
                "devices": list(self.devices), "setting": str(self.setting),
                "view_position": self.view_position,
                "study_date": self.study_date.isoformat(),
                "prior_study_id": self.prior.study_id if self.prior else None}


def pick(rng: np.random.Generator, options, weights=None):
    """One element of a sequence, optionally weighted.

    Cheaper than `rng.choice`, which converts the options to an array on every call.
    """
    if weights is None:
        return options[int(rng.integers(len(options)))]
    cumulative = list(accumulate(weights))
    index = bisect_right(cumulative, rng.random() * cumulative[-1])
    return options[min(index, len(options) - 1)]


def draw_side(rng: np.random.Generator, label: Label) -> Side | None:
    weights = SIDE_WEIGHTS.get(label)
    return None if weights is None else pick(rng, (Side.LEFT, Side.RIGHT, Side.BILATERAL), weights)


def make_patients(rng: np.random.Generator, n_studies: int) -> list[Patient]:
    """Patients until `n_studies` studies exist; the last one is cut to fit exactly."""
    settings = list(SETTING_WEIGHTS)
    patients: list[Patient] = []
    total = 0
    while total < n_studies:
        setting = pick(rng, settings, list(SETTING_WEIGHTS.values()))
        count = min(pick(rng, (1, 2, 3, 4), STUDIES_PER_PATIENT[setting]), n_studies - total)
        heart_failure = bool(rng.random() < HEART_FAILURE_RATE[setting])
        chronic = {label: draw_side(rng, label)
                   for label, rate in CHRONIC_RATES.items() if rng.random() < rate}
        pacer_rate = PACEMAKER_RATE_HF if heart_failure else PACEMAKER_RATE_OTHER
        patients.append(Patient(f"PT-{len(patients) + 1:06d}", setting, count, heart_failure,
                                chronic, bool(rng.random() < pacer_rate)))
        total += count
    return patients


def _acute_findings(rng, patient: Patient, prior: StudyTruth | None) -> dict[Label, Side | None]:
    """This study's acute findings: carried over from the prior study or newly drawn."""
    found: dict[Label, Side | None] = {}
    for label, rate in ACUTE_RATES[patient.setting].items():
        if prior and label in prior.labels and rng.random() < ACUTE_PERSISTENCE:
            found[label] = prior.laterality.get(label)
        elif rng.random() < rate:
            found[label] = draw_side(rng, label)
    if patient.heart_failure:
        if rng.random() < HF_EDEMA:
            found.setdefault(Label.PULMONARY_EDEMA, None)
        if rng.random() < HF_EFFUSION:
            found.setdefault(Label.PLEURAL_EFFUSION, Side.BILATERAL)
    if Label.PULMONARY_EDEMA in found and rng.random() < EDEMA_BRINGS_EFFUSION:
        found.setdefault(Label.PLEURAL_EFFUSION, Side.BILATERAL)
    if Label.PLEURAL_EFFUSION in found and rng.random() < EFFUSION_BRINGS_ATELECTASIS:
        found.setdefault(Label.ATELECTASIS, found[Label.PLEURAL_EFFUSION])
    return found


def _cardiomegaly(rng, patient: Patient, prior: StudyTruth | None) -> bool:
    """Heart size is a trait of the patient, so it rarely changes between studies."""
    if prior is not None:
        return Label.CARDIOMEGALY in prior.labels
    return bool(rng.random() < (HF_CARDIOMEGALY if patient.heart_failure else OTHER_CARDIOMEGALY))


# Device code -> P(present | the study has lines and tubes), per setting.
DEVICE_MIX = {
    Setting.ICU: {"et_tube": 0.65, "ng_tube": 0.60, "right_ij_line": 0.45, "picc": 0.20,
                  "left_subclavian_line": 0.08, "swan_ganz": 0.05, "chest_tube": 0.08},
    Setting.INPATIENT: {"picc": 0.60, "right_ij_line": 0.20, "ng_tube": 0.15, "port": 0.10,
                        "chest_tube": 0.08},
    Setting.EMERGENCY: {"port": 0.50, "picc": 0.30, "ng_tube": 0.20},
    Setting.OUTPATIENT: {"port": 0.60, "picc": 0.40},
}
CHEST_TUBE_FOR_PNEUMOTHORAX = 0.6  # ICU pneumothoraces are usually drained


def _devices(rng, patient: Patient, found: dict, prior: StudyTruth | None) -> tuple[str, ...]:
    """Lines and tubes: persist between studies of an admission, match the setting."""
    devices: list[str] = ["pacemaker"] if patient.pacemaker else []
    kept = [d for d in (prior.devices if prior else ()) if d != "pacemaker"]
    devices += [d for d in kept if rng.random() < DEVICE_PERSISTENCE]
    if not kept and rng.random() < DEVICE_RATES[patient.setting]:
        mix = DEVICE_MIX[patient.setting]
        drawn = [d for d, rate in mix.items() if rng.random() < rate]
        devices += drawn or [next(iter(mix))]
    if (Label.PNEUMOTHORAX in found and patient.setting is Setting.ICU
            and rng.random() < CHEST_TUBE_FOR_PNEUMOTHORAX):
        devices.append("chest_tube")
    return tuple(dict.fromkeys(devices))


def _view_and_time(rng, setting: Setting) -> tuple[str, str]:
    """Portable AP at any hour for the ICU; PA in daytime for walking patients."""
    ap_rate = {Setting.ICU: 1.0, Setting.INPATIENT: 0.6, Setting.EMERGENCY: 0.4,
               Setting.OUTPATIENT: 0.03}[setting]
    view = "AP" if rng.random() < ap_rate else "PA"
    hour = int(rng.integers(0, 24)) if view == "AP" else int(rng.integers(8, 18))
    return view, f"{hour:02d}{int(rng.integers(60)):02d}{int(rng.integers(60)):02d}"


def draw_study(rng, patient: Patient, study_id: str, when: date,
               prior: StudyTruth | None) -> StudyTruth:
    """One study of `patient`, conditioned on the patient's previous study."""
    found = _acute_findings(rng, patient, prior)
    found.update(patient.chronic)
    if _cardiomegaly(rng, patient, prior):
        found[Label.CARDIOMEGALY] = None
    devices = _devices(rng, patient, found, prior)
    if devices:
        found[Label.SUPPORT_DEVICES] = None
    labels = tuple(label for label in Label if label in found)
    subtle = tuple(label for label in labels if rng.random() < SUBTLE_RATES[label])
    laterality = {label: side for label, side in found.items() if side is not None}
    view, time = _view_and_time(rng, patient.setting)
    return StudyTruth(study_id, patient.patient_id, patient.setting, when, time, view,
                      labels, subtle, laterality, devices, prior)


def build_cohort(rng: np.random.Generator, n_studies: int) -> list[StudyTruth]:
    """All studies, ordered by study id; ids are shuffled so a patient's studies are scattered."""
    patients = make_patients(rng, n_studies)
    numbers = iter(rng.permutation(n_studies) + 1)
    studies: list[StudyTruth] = []
    for patient in patients:
        when = DATE_SHIFT_ORIGIN + timedelta(days=int(rng.integers(DATE_SHIFT_SPAN_DAYS)))
        prior = None
        for _ in range(patient.n_studies):
            prior = draw_study(rng, patient, f"CXR-{int(next(numbers)):06d}", when, prior)
            studies.append(prior)
            low, high = FOLLOW_UP_DAYS[patient.setting]
            when += timedelta(days=int(rng.integers(low, high + 1)))
    return sorted(studies, key=lambda s: s.study_id)
