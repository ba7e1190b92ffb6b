"""dicom_header reads header values off pydicom's undecoded elements: every value it gives must be
the one pydicom's `Dataset.get` gives, on real files (every file of pydicom's own test data and of
the pydicom-data package, big endian, implicit VR, deflated and character-set files among them)
and on crafted values at the edges of what it reads itself (padding, multiple values, numbers
pydicom's IS/DS read their own way, non-ASCII text, escapes)."""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, generate_uid

from services.gateway import dicom_header as header

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# What the ingest path reads through dicom_header, and a few more of each VR it reads itself.
KEYWORDS = ["BurnedInAnnotation", "PatientIdentityRemoved", "SOPInstanceUID", "SeriesInstanceUID",
            "StudyInstanceUID", "SeriesDescription", "InstanceNumber", "Modality", "SOPClassUID",
            "PhotometricInterpretation", "SamplesPerPixel", "BitsAllocated", "BitsStored", "HighBit", "Rows",
            "Columns", "NumberOfFrames", "PixelRepresentation", "StudyDate", "ViewPosition", "PatientSex",
            "PatientAge", "WindowCenter", "WindowWidth", "PixelSpacing", "PatientID", "PatientName",
            "StudyTime", "AccessionNumber", "ImageType", "SliceThickness", "InstitutionName",
            "SmallestImagePixelValue", "LargestImagePixelValue", "RescaleIntercept", "Manufacturer"]


def _corpus() -> list[Path]:
    import data_store  # pydicom-data's package: its files are on disk, no network needed

    own = Path(pydicom.data.__file__).parent / "test_files"
    package = Path(data_store.__file__).parent / "data"
    return sorted([*own.rglob("*.dcm"), *package.glob("*.dcm")])


CORPUS = _corpus()


def _read(data: bytes) -> Dataset | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception:  # noqa: BLE001 - a file pydicom cannot read has no header to compare
        return None


def _same(fast: object, slow: object) -> bool:
    """The same value for every use the ingest makes of it (text, int(), float(), truth, items)."""
    if isinstance(slow, MultiValue):
        return isinstance(fast, MultiValue) and list(fast) == list(slow)
    if isinstance(slow, str) and not isinstance(slow, pydicom.valuerep.DSfloat | pydicom.valuerep.IS):
        return isinstance(fast, str) and fast == slow
    if isinstance(slow, float) and math.isnan(slow):
        return isinstance(fast, float) and math.isnan(fast)
    return fast == slow and bool(fast) == bool(slow) and type(fast) in (type(slow), int, float)


def test_the_corpus_is_there():
    assert len(CORPUS) > 100


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_every_value_is_pydicoms(path: Path):
    data = path.read_bytes()
    fast_ds, slow_ds = _read(data), _read(data)
    if fast_ds is None or slow_ds is None:
        pytest.skip("pydicom cannot read it")
    for keyword in KEYWORDS:
        try:
            slow = slow_ds.get(keyword, "absent")
        except Exception as exc:  # noqa: BLE001 - pydicom refuses the value: so must the reader
            with pytest.raises(type(exc)):
                header.value(fast_ds, keyword, "absent")
            continue
        fast = header.value(fast_ds, keyword, "absent")
        assert _same(fast, slow), (keyword, fast, slow)
        numbers = header.numbers(fast_ds, keyword)
        if numbers is not None:
            assert list(numbers) == [float(v) for v in (slow if isinstance(slow, MultiValue) else [slow])], keyword
    if "PixelData" in slow_ds:
        assert header.pixel_data(fast_ds) == slow_ds.PixelData


def _file(elements: list[tuple[str, str, bytes]], syntax: str = ExplicitVRLittleEndian) -> bytes:
    """A Part 10 file holding `elements` (keyword, VR, raw value bytes) exactly as given."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, vr, raw in elements:
        tag = pydicom.datadict.tag_for_keyword(keyword)
        ds[tag] = RawDataElement(pydicom.tag.Tag(tag), vr, len(raw), raw, 0, False,
                                 syntax != ExplicitVRBigEndian)
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


EDGES = [
    ("SOPInstanceUID", "UI", b"1.2.3.4\x00"), ("SOPInstanceUID", "UI", b"1.2.3\\4.5 "),
    ("Modality", "CS", b"CR"), ("Modality", "CS", b" CR "), ("Modality", "CS", b"  "),
    ("ImageType", "CS", b"ORIGINAL\\PRIMARY "), ("SeriesDescription", "LO", b"PA chest  "),
    ("SeriesDescription", "LO", b"Th\xe9orax"), ("SeriesDescription", "LO", b"\x1b$B\x1b(B x "),
    ("InstanceNumber", "IS", b"0 "), ("InstanceNumber", "IS", b" 007"), ("InstanceNumber", "IS", b"+3"),
    ("InstanceNumber", "IS", b"1.0 "), ("InstanceNumber", "IS", b"1_0 "), ("InstanceNumber", "IS", b"1\\2 "),
    ("WindowCenter", "DS", b"40.5"), ("WindowCenter", "DS", b"-1e2"), ("WindowCenter", "DS", b"nan "),
    ("WindowCenter", "DS", b"40\\400 "), ("WindowCenter", "DS", b".5  "), ("WindowCenter", "DS", b"1_0 "),
    ("PixelSpacing", "DS", b"0.139\\0.139 "), ("PixelSpacing", "DS", b"0.1\\"), ("PixelSpacing", "DS", b"0.1"),
    ("Rows", "US", b"\x00\x01"), ("Rows", "US", b"\x00\x01\x00\x02"), ("Rows", "SS", b"\xff\xff"),
    ("PixelRepresentation", "US", b"\x01\x00"), ("PatientAge", "AS", b"045Y"), ("StudyDate", "DA", b"20240131"),
    ("PatientSex", "CS", b"F "), ("Rows", "UN", b"\x00\x01"),
]


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ExplicitVRBigEndian])
@pytest.mark.parametrize(("keyword", "vr", "raw"), EDGES, ids=[f"{k}-{v}-{r!r}" for k, v, r in EDGES])
def test_edge_values_are_pydicoms(keyword: str, vr: str, raw: bytes, syntax: str):
    if vr in ("US", "SS") and syntax == ExplicitVRBigEndian:
        raw = raw[::-1] if len(raw) == 2 else raw[1::-1] + raw[:1:-1]
    data = _file([(keyword, vr, raw + (b" " if len(raw) % 2 else b""))], syntax)
    fast_ds, slow_ds = _read(data), _read(data)
    assert fast_ds is not None and slow_ds is not None
    try:
        slow = slow_ds.get(keyword, "absent")
    except Exception as exc:  # noqa: BLE001
        with pytest.raises(type(exc)):
            header.value(fast_ds, keyword, "absent")
        return
    fast = header.value(fast_ds, keyword, "absent")
    assert _same(fast, slow), (fast, slow)
    numbers = header.numbers(fast_ds, keyword)
    if numbers is not None:
        assert list(numbers) == [float(v) for v in (slow if isinstance(slow, MultiValue) else [slow])]


def test_reads_leave_the_dataset_undecoded_and_absent_gives_the_default():
    ds = _read(_file([("Modality", "CS", b"CR"), ("Rows", "US", b"\x00\x01")]))
    assert ds is not None
    assert header.text(ds, "Modality") == "CR" and header.integer(ds, "Rows", 0) == 256
    assert isinstance(ds.get_item(pydicom.datadict.tag_for_keyword("Modality")), RawDataElement)
    assert header.value(ds, "Columns", "none") == "none" and header.integer(ds, "NumberOfFrames", 1) == 1
    ds.Modality = "DX"  # decoded (set) elements are read as they are
    assert isinstance(ds["Modality"], DataElement) and header.text(ds, "Modality") == "DX"
    with pytest.raises(KeyError):
        header.value(ds, "NotAKeyword")


def test_plain_values_are_read_without_pydicom():
    """What a chest radiograph carries (explicit VR little endian) takes the reader's own path, not
    the fallback (else the module buys nothing)."""
    ds = _read(_file([("SOPInstanceUID", "UI", b"1.2.3.4\x00"), ("Modality", "CS", b"CR"), ("Rows", "US", b"\x00\x01"),
                      ("InstanceNumber", "IS", b"12"), ("WindowWidth", "DS", b"400 ")]))
    assert ds is not None
    for keyword in ("SOPInstanceUID", "Modality", "Rows", "InstanceNumber", "WindowWidth"):
        raw = ds.get_item(pydicom.datadict.tag_for_keyword(keyword))
        assert isinstance(raw, RawDataElement)
        assert header._plain(raw) is not header._MISSING, keyword
