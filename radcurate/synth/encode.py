"""A fast writer for the generator's CR files: pydicom encodes a template once, studies splice in.

pydicom spends ~5 ms building and writing each small dataset, which alone would blow the
13,735-studies-in-a-minute budget. Every synthetic file has the same attributes and only a
dozen short values change, so the constant elements are encoded once (by pydicom itself) and
each study adds its own short elements and pixel data. Tests check the result is byte-identical
to `dcmwrite(cxr_dataset(...), enforce_file_format=True)`.
"""

from __future__ import annotations

import struct

import numpy as np
from pydicom import dcmread, dcmwrite
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element

from radcurate.synth.dicom import DEFAULT_STUDY_DATE, cxr_dataset, study_values
from radcurate.synth.image import SIZE

PREAMBLE = b"\0" * 128 + b"DICM"
META_VARIABLE = ("MediaStorageSOPInstanceUID",)


def short_element(keyword: str, text: str) -> bytes:
    """Explicit VR little endian encoding of a short text element (UI, DA, TM, CS, LO, SH)."""
    tag, vr = tag_for_keyword(keyword), dictionary_VR(keyword)
    raw = text.encode("ascii")
    if len(raw) % 2:
        raw += b"\0" if vr == "UI" else b" "
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(raw)) + raw


def assemble(meta_parts: list[bytes | str], body_parts: list[bytes | str], values: dict[str, str],
             pixels: np.ndarray, element=short_element) -> bytes:
    """A file's bytes from a template's pre-encoded parts, this object's values and its pixels.

    Every fixed element was encoded once from the template; only the variable ones (named by
    keyword in the parts) and the pixel data are encoded here.
    """
    meta = b"".join(p if isinstance(p, bytes) else short_element(
        "MediaStorageSOPInstanceUID", values["SOPInstanceUID"])
        for p in meta_parts if p != "FileMetaInformationGroupLength")
    group_length = struct.pack("<HH2sHI", 2, 0, b"UL", 4, len(meta))
    data = pixels.astype("<u2").tobytes()
    body = []
    for p in body_parts:
        if isinstance(p, bytes):
            body.append(p)
        elif p == "PixelData":
            body.append(struct.pack("<HH2s2xI", 0x7FE0, 0x0010, b"OW", len(data)) + data)
        else:
            body.append(element(p, values[p]))
    return PREAMBLE + group_length + meta + b"".join(body)


def _parts(ds: Dataset, variable: tuple[str, ...]) -> list[bytes | str]:
    """Elements in tag order: encoded bytes for constants, the keyword for variables."""
    parts: list[bytes | str] = []
    for elem in ds:
        if elem.keyword in variable or elem.keyword == "FileMetaInformationGroupLength":
            parts.append(elem.keyword)
            continue
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_data_element(fp, elem, ["iso8859"])
        parts.append(fp.getvalue())
    return parts


class CxrEncoder:
    """Encodes de-identified CR files of one fixed shape (`size` x `size`, SIZE by default), quickly."""

    def __init__(self, size: int = SIZE) -> None:
        self.size = size
        template = cxr_dataset(study_id="CXR-000000", patient_id="PT-000000", seed=0,
                               pixels=np.zeros((size, size), np.uint16),
                               study_date=DEFAULT_STUDY_DATE, study_time="000000",
                               view_position="PA")
        fp = DicomBytesIO()
        dcmwrite(fp, template, enforce_file_format=True)
        # Read back so the meta carries what dcmwrite adds (implementation class and version).
        written = dcmread(DicomBytesIO(fp.getvalue()))
        variable = tuple(study_values(study_id="X", patient_id="X", seed=0,
                                      study_date=DEFAULT_STUDY_DATE, study_time="000000",
                                      view_position="PA"))
        self._meta = _parts(written.file_meta, META_VARIABLE)
        self._body = _parts(template, variable + ("PixelData",))

    def encode(self, values: dict[str, str], pixels: np.ndarray) -> bytes:
        """The file bytes for one study: `values` from `study_values`, uint16 pixels."""
        return assemble(self._meta, self._body, values, pixels)
