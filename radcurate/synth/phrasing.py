"""Phrase banks for synthetic reports: how radiologists say present, hedged, absent, gone, same.

Templates are lower-case; the composer fills placeholders and capitalises. Placeholders:
{side} left/right/bilateral, {sev} a severity word, {sevly} its adverb, {lobe}, {rib}, {mm},
{cm}. Bilateral findings use the "bi" bank when a label has one. Variety matters more than
medical precision: the point is to exercise extractors the way real reports do.
"""

from __future__ import annotations

from radcurate.synth.labels import Label

L = Label

# (words for subtle findings, words for overt ones)
SEVERITY: dict[Label, tuple[tuple[str, ...], tuple[str, ...]]] = {
    L.ATELECTASIS: (("minimal", "mild", "subsegmental"), ("", "moderate", "patchy")),
    L.CARDIOMEGALY: (("mild",), ("moderate", "marked", "mild")),
    L.CONSOLIDATION: (("subtle", "faint"), ("", "dense", "patchy")),
    L.PULMONARY_EDEMA: (("mild",), ("moderate", "severe", "mild")),
    L.PLEURAL_EFFUSION: (("trace", "small"), ("small", "moderate", "large")),
    L.PNEUMOTHORAX: (("tiny", "small"), ("small", "moderate", "large")),
    L.INTERSTITIAL_LUNG_DISEASE: (("mild",), ("moderate", "advanced")),
    L.EMPHYSEMA: (("mild",), ("moderate", "severe")),
}
ADVERB = {"mild": "mildly", "moderate": "moderately", "marked": "markedly", "severe": "severely",
          "advanced": "markedly"}
LOBES = ("upper lobe", "lower lobe", "mid lung zone")
RIBS = ("fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "posterior sixth", "lateral seventh")

POSITIVE: dict[Label, dict[str, tuple[str, ...]]] = {
    L.ATELECTASIS: {
        "uni": ("{sev} {side} basilar atelectasis.", "linear atelectasis at the {side} lung base.",
                "{side} lower lobe atelectasis.", "{sev} atelectasis in the {side} base."),
        "bi": ("bibasilar atelectasis.", "{sev} bibasilar atelectasis.",
               "plate-like atelectasis at both lung bases.")},
    L.CARDIOMEGALY: {"any": (
        "{sev} cardiomegaly.", "the heart is {sevly} enlarged.", "enlarged cardiac silhouette.",
        "{sev} enlargement of the cardiac silhouette.", "cardiomegaly.")},
    L.CONSOLIDATION: {
        "uni": ("{sev} {side} lower lobe consolidation.", "focal consolidation in the {side} {lobe}.",
                "airspace consolidation in the {side} lower lobe, compatible with pneumonia.",
                "{sev} {side} basilar airspace opacity consistent with consolidation."),
        "bi": ("bilateral patchy airspace consolidation.",
               "multifocal consolidation in both lungs, consistent with pneumonia.")},
    L.PULMONARY_EDEMA: {"any": (
        "{sev} pulmonary edema.", "{sev} interstitial pulmonary edema.",
        "pulmonary vascular congestion with {sev} interstitial edema.",
        "findings consistent with {sev} pulmonary edema.", "{sev} CHF with pulmonary edema.")},
    L.PLEURAL_EFFUSION: {
        "uni": ("{sev} {side} pleural effusion.", "{side} pleural effusion, {sev} in size.",
                "blunting of the {side} costophrenic angle due to a {sev} effusion.",
                "{sev} {side}-sided pleural effusion."),
        "bi": ("{sev} bilateral pleural effusions.", "{sev} effusions at both lung bases.",
               "bilateral pleural effusions.")},
    L.PNEUMOTHORAX: {
        "uni": ("{sev} {side} pneumothorax.", "{side} apical pneumothorax measuring {mm} mm.",
                "there is a {sev} {side}-sided pneumothorax.", "{sev} {side} PTX."),
        "bi": ("{sev} bilateral pneumothoraces.",)},
    L.LUNG_NODULE_MASS: {
        "uni": ("{mm} mm nodule in the {side} {lobe}.", "{side} {lobe} mass measuring {cm} cm.",
                "rounded opacity in the {side} {lobe}, compatible with a pulmonary nodule.",
                "spiculated {side} {lobe} mass."),
        "bi": ("multiple bilateral pulmonary nodules, the largest {mm} mm.",)},
    L.INTERSTITIAL_LUNG_DISEASE: {"any": (
        "diffuse reticular interstitial opacities consistent with pulmonary fibrosis.",
        "{sev} interstitial lung disease with basilar predominance.",
        "coarse interstitial markings compatible with fibrotic lung disease.")},
    L.EMPHYSEMA: {"any": (
        "hyperinflated lungs with emphysematous changes.", "{sev} emphysema.",
        "changes of COPD/emphysema with flattened hemidiaphragms.")},
    L.FRACTURE: {
        "uni": ("acute fracture of the {side} {rib} rib.", "{side} {rib} rib fracture.",
                "healing fracture of the {side} {rib} rib.",
                "nondisplaced fracture of the {side} clavicle."),
        "bi": ("bilateral rib fractures.",)},
    L.MEDIASTINAL_HILAR_ABNORMALITY: {"any": (
        "widened mediastinum.", "bilateral hilar lymphadenopathy.", "enlarged right hilum.",
        "widening of the superior mediastinum.", "prominent left hilar mass.")},
}

UNCERTAIN: dict[Label, tuple[str, ...]] = {
    L.ATELECTASIS: ("{side} basilar opacity, possibly atelectasis.",
                    "cannot exclude {side} basilar atelectasis.",
                    "{side} basilar opacity may represent atelectasis."),
    L.CARDIOMEGALY: ("possible mild cardiomegaly.", "cannot exclude cardiomegaly on this AP view.",
                     "the cardiac silhouette may be mildly enlarged."),
    L.CONSOLIDATION: ("{side} basilar opacity may represent pneumonia.",
                      "cannot exclude early {side} lower lobe consolidation.",
                      "possible developing consolidation at the {side} base."),
    L.PULMONARY_EDEMA: ("possible mild pulmonary edema.",
                        "hazy perihilar opacities may represent pulmonary edema.",
                        "mild vascular congestion; early edema cannot be excluded."),
    L.PLEURAL_EFFUSION: ("possible small {side} pleural effusion.",
                         "blunting of the {side} costophrenic angle may represent a small effusion.",
                         "cannot exclude a trace {side} pleural effusion."),
    L.PNEUMOTHORAX: ("questionable tiny {side} apical pneumothorax.",
                     "cannot exclude a small {side} pneumothorax.",
                     "possible small {side} apical pneumothorax; recommend repeat imaging."),
    L.LUNG_NODULE_MASS: ("possible {mm} mm nodule in the {side} {lobe}; consider CT.",
                         "questionable nodular opacity in the {side} {lobe}, may represent a nipple shadow.",
                         "cannot exclude a small nodule in the {side} {lobe}."),
    L.INTERSTITIAL_LUNG_DISEASE: ("coarse interstitial markings may represent early fibrosis.",
                                  "possible underlying interstitial lung disease."),
    L.EMPHYSEMA: ("lungs appear hyperexpanded, possibly reflecting emphysema.",
                  "possible hyperinflation, may represent emphysema."),
    L.FRACTURE: ("possible nondisplaced fracture of the {side} {rib} rib.",
                 "cortical irregularity of the {side} {rib} rib, cannot exclude fracture."),
    L.MEDIASTINAL_HILAR_ABNORMALITY: ("possible mediastinal widening, may be due to AP technique.",
                                      "hilar fullness may represent lymphadenopathy."),
}

# Absent findings: nouns that join into "No X, Y, or Z.", and stand-alone sentences.
NEGATION_NOUN: dict[Label, str] = {
    L.CONSOLIDATION: "focal consolidation", L.PLEURAL_EFFUSION: "pleural effusion",
    L.PNEUMOTHORAX: "pneumothorax", L.PULMONARY_EDEMA: "pulmonary edema",
    L.ATELECTASIS: "atelectasis", L.LUNG_NODULE_MASS: "suspicious pulmonary nodule",
    L.INTERSTITIAL_LUNG_DISEASE: "interstitial lung disease", L.EMPHYSEMA: "emphysema",
}
NEGATION_SENTENCE: dict[Label, tuple[str, ...]] = {
    L.CARDIOMEGALY: ("heart size is normal.", "the cardiac silhouette is normal in size.",
                     "no cardiomegaly."),
    L.MEDIASTINAL_HILAR_ABNORMALITY: ("mediastinal and hilar contours are unremarkable.",
                                      "normal mediastinal contours."),
    L.FRACTURE: ("no acute osseous abnormality.", "no displaced rib fractures."),
    L.PULMONARY_EDEMA: ("no pulmonary edema.", "no evidence of pulmonary vascular congestion or edema."),
    L.PNEUMOTHORAX: ("no pneumothorax.", "there is no pneumothorax."),
}
CARDIOMEDIASTINAL_NORMAL = ("the cardiomediastinal silhouette is within normal limits.",
                            "cardiomediastinal contours are normal.")
NEGATION_LEADS = ("no {}.", "there is no {}.", "no evidence of {}.")

# Findings seen on the prior study and gone now; and findings that are still there.
NOUN: dict[Label, str] = {
    L.ATELECTASIS: "{side} basilar atelectasis", L.CONSOLIDATION: "{side} lower lobe consolidation",
    L.PULMONARY_EDEMA: "pulmonary edema", L.PLEURAL_EFFUSION: "{side} pleural effusion",
    L.PNEUMOTHORAX: "{side} pneumothorax", L.CARDIOMEGALY: "cardiomegaly",
    L.LUNG_NODULE_MASS: "{side} {lobe} nodule", L.EMPHYSEMA: "emphysema",
    L.INTERSTITIAL_LUNG_DISEASE: "interstitial fibrosis", L.FRACTURE: "{side} {rib} rib fracture",
    L.MEDIASTINAL_HILAR_ABNORMALITY: "mediastinal widening",
}
RESOLVED = ("previously seen {noun} has resolved.", "interval resolution of the {noun}.",
            "the {noun} has resolved.", "{noun} seen on the prior study is no longer present.")
STABLE = ("unchanged {sev} {noun}.", "stable {noun}.", "the {sev} {noun} is unchanged.",
          "persistent {noun}.", "{noun}, unchanged from prior.")

DEVICES: dict[str, tuple[str, ...]] = {
    "et_tube": ("ET tube terminates {cm} cm above the carina.", "endotracheal tube in standard position.",
                "ETT tip {cm} cm above the carina."),
    "ng_tube": ("NG tube courses below the diaphragm with tip in the stomach.",
                "enteric tube tip in the stomach.", "NG tube in the stomach."),
    "right_ij_line": ("right IJ central line terminates in the SVC.",
                      "right internal jugular catheter tip at the cavoatrial junction.",
                      "right IJ CVC with tip in the low SVC."),
    "left_subclavian_line": ("left subclavian central venous catheter tip in the SVC.",),
    "picc": ("right PICC line terminates in the mid SVC.",
             "left arm PICC with tip at the cavoatrial junction.", "PICC tip in the distal SVC."),
    "swan_ganz": ("Swan-Ganz catheter tip in the right pulmonary artery.",),
    "chest_tube": ("{side} chest tube in place.", "{side} basilar chest tube.",
                   "{side}-sided chest tube with tip at the apex."),
    "pacemaker": ("left chest wall pacemaker with leads in the right atrium and right ventricle.",
                  "dual-lead cardiac pacemaker in place.", "pacemaker/AICD in place."),
    "port": ("right chest wall port with catheter tip in the SVC.", "port-a-cath tip at the cavoatrial junction."),
}
DEVICE_NAME = {"et_tube": "ET tube", "ng_tube": "NG tube", "right_ij_line": "right IJ central line",
               "left_subclavian_line": "left subclavian line", "picc": "PICC",
               "swan_ganz": "Swan-Ganz catheter", "chest_tube": "chest tube",
               "pacemaker": "pacemaker", "port": "chest port"}
DEVICES_UNCHANGED = ("lines and tubes are unchanged in position.", "support devices are unchanged.")
DEVICE_UNCHANGED_SUFFIX = (", unchanged.", ", stable in position.", ", unchanged in position.")
DEVICE_REMOVED = ("interval removal of the {name}.", "the {name} has been removed.")

LUNGS_CLEAR = ("the lungs are clear.", "lungs are well expanded and clear.", "the lungs are clear bilaterally.")
LUNGS_OTHERWISE_CLEAR = ("the lungs are otherwise clear.", "otherwise clear lungs.")
NORMAL_IMPRESSION = ("no acute cardiopulmonary process.", "no acute cardiopulmonary abnormality.",
                     "normal chest radiograph.", "no acute intrathoracic findings.")

INDICATIONS = {
    "icu": ("intubated patient, evaluate tube position", "hypoxia", "line placement, evaluate for pneumothorax",
            "respiratory failure", "post-op day 1", "fever"),
    "inpatient": ("shortness of breath", "fever", "PICC placement", "pneumonia follow-up", "hypoxia"),
    "emergency": ("chest pain", "cough and fever, r/o pneumonia", "shortness of breath", "trauma, fall",
                  "dyspnea"),
    "outpatient": ("chronic cough", "pre-operative evaluation", "follow-up", "routine", "TB screening"),
}

# Common misspellings seen in dictated reports; otherwise two letters are swapped.
TYPOS = {"pneumothorax": "pnuemothorax", "effusion": "effusoin", "atelectasis": "atelectsis",
         "cardiomegaly": "cardiomegally", "consolidation": "consolidaton", "pleural": "plueral",
         "edema": "edemia", "nodule": "nodlue", "unchanged": "unchagned", "silhouette": "silhouete"}
