"""Synthetic, de-identified chest-radiograph studies for `make demo` and tests.

`synth_cxr` writes DICOM images, free-text reports and the hidden truth they were made from;
`write_cxr_dicom` writes a single image (optionally with identifying attributes, for tests of
the ingest's de-identification check).
"""

from radcurate.synth.cxr import SynthPaths, SynthSummary, synth_cxr
from radcurate.synth.dicom import CR_IMAGE_STORAGE, write_cxr_dicom
from radcurate.synth.labels import LABEL_IDS, Label

__all__ = ["CR_IMAGE_STORAGE", "LABEL_IDS", "Label", "SynthPaths", "SynthSummary", "synth_cxr",
           "write_cxr_dicom"]
