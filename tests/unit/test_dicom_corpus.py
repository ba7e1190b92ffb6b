"""Real DICOM, file by file: every file of the PyPI package pydicom-data (plus a few of pydicom's
own test files for syntaxes pydicom-data lacks: deflated, JPEG extended, JPEG-LS near-lossless,
JPEG baseline colour) is either ingested and shown correctly, or refused at ingest with a reason
that names the file and what is not supported.

"Shown correctly" is checked three ways against references that do not share our code:
- the decoded frame against an independent decoder (GDCM for JPEG, JPEG-LS and JPEG 2000, pydicom's
  own numpy decoder for RLE and native data): identical for lossless syntaxes;
- the displayed image against pydicom's Modality LUT / VOI LUT / windowing / colour LUT functions,
  with MONOCHROME1 inverted (within one grey level: rounding);
- for files that come in several encodings (RG1_UNCR / RG1_J2KR, emri_small / _RLE / _big_endian /
  _jpeg_ls_lossless …) the displayed images are identical for lossless and close for lossy ones.
Files are fetched with get_testdata_file(name, download=False): never the listing calls (network).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array
from pydicom.uid import generate_uid

from services.gateway.ingest import IngestError, parse_instance
from services.gateway.render import render

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

REFUSED = {  # file: what the refusal must say
    "OT-PAL-8-face.dcm": "not a readable DICOM file",  # no File Meta Information (not Part 10)
    "emri_small_jpeg_2k_lossless_too_short.dcm": "DICOM lacks",  # truncated before its pixel data
    "liver.dcm": "Segmentation object",
    "liver_expb.dcm": "Segmentation object",
    # pydicom's: libjpeg (and GDCM, for 12-bit) cannot decode its stream: found at ingest
    "JPEG-lossy.dcm": "JPEG Extended (Process 2 and 4) pixel data: cannot decode",
}
# Same image, other encoding: (file, sibling, lossless?)
SIBLINGS = [
    ("RG1_J2KR.dcm", "RG1_UNCR.dcm", True), ("RG1_J2KI.dcm", "RG1_UNCI.dcm", False),
    ("RG3_J2KR.dcm", "RG3_UNCR.dcm", True), ("RG3_J2KI.dcm", "RG3_UNCI.dcm", False),
    ("MR2_J2KR.dcm", "MR2_UNCR.dcm", True), ("MR2_J2KI.dcm", "MR2_UNCI.dcm", False),
    ("US1_J2KR.dcm", "US1_UNCR.dcm", True), ("US1_J2KI.dcm", "US1_UNCI.dcm", False),
    ("693_J2KR.dcm", "693_UNCR.dcm", True),
    ("emri_small_RLE.dcm", "emri_small.dcm", True), ("emri_small_big_endian.dcm", "emri_small.dcm", True),
    ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm", True),
    ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm", True),
    ("OBXXXX1A_rle.dcm", "OBXXXX1A.dcm", True),
    # its palette LUT entries are 0x00nn where the little-endian file has 0xnn00: 255 vs 254 at most
    ("OBXXXX1A_expb.dcm", "OBXXXX1A.dcm", False),
    ("OBXXXX1A_rle_2frame.dcm", "OBXXXX1A_2frame.dcm", True),
    ("SC_rgb_expb.dcm", "SC_rgb.dcm", True), ("SC_rgb_16bit.dcm", "SC_rgb.dcm", True),
    ("SC_rgb_32bit.dcm", "SC_rgb.dcm", True), ("SC_rgb_expb_32bit.dcm", "SC_rgb.dcm", True),
    ("SC_ybr_full_uncompressed.dcm", "SC_rgb.dcm", False),
    ("gdcm-US-ALOKA-16_big.dcm", "gdcm-US-ALOKA-16.dcm", True),
    ("liver.dcm", "liver_expb.dcm", True),  # both refused: listed to show the pair is consistent
    ("MR_small_RLE.dcm", "MR_small.dcm", True), ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm", True),
    ("MR_small_jp2klossless.dcm", "MR_small.dcm", True), ("MR_small_bigendian.dcm", "MR_small.dcm", True),
    ("SC_rgb_dcmtk_+eb+cy+np.dcm", "SC_rgb_dcmtk_ebcynp_dcmd.dcm", False),
    ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb.dcm", True), ("SC_rgb_rle_16bit.dcm", "SC_rgb.dcm", True),
]
# pydicom's own test files for syntaxes pydicom-data does not have.
EXTRA = ["image_dfl.dcm", "JPEG-lossy.dcm", "JPGExtended.dcm", "JPEGLSNearLossless_16.dcm", "SC_rgb_jls_lossy_line.dcm",
         "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm", "MR_small.dcm", "MR_small_RLE.dcm",
         "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_bigendian.dcm",
         "SC_rgb_jpeg_gdcm.dcm", "SC_rgb_rle_16bit.dcm", "examples_palette.dcm", "examples_ybr_color.dcm"]
LOSSLESS_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
                     "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
                     "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90"}


def _package_files() -> list[str]:
    import data_store  # pydicom-data's package: its files are on disk, no network needed

    return sorted(os.listdir(Path(data_store.__file__).parent / "data"))


PACKAGE = _package_files()


def path_of(name: str) -> Path:
    return Path(get_testdata_file(name, download=False))


def ingestable(name: str, tmp: Path) -> Path:
    """The file; a few of pydicom's lack study identifiers: given some, so their pixels are tested."""
    path = path_of(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
    if name in PACKAGE or all(k in ds for k in ("StudyInstanceUID", "SeriesInstanceUID", "Modality")):
        return path
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        setattr(ds, keyword, ds.get(keyword) or generate_uid())
    ds.Modality = ds.get("Modality") or "OT"
    ds.save_as(tmp / name, enforce_file_format=True)
    return tmp / name


def test_the_corpus_is_the_whole_package():
    assert len(PACKAGE) == 68 and {"RG1_J2KR.dcm", "RG1_J2KI.dcm", "RG1_UNCR.dcm", "JPEG-LL.dcm"} <= set(PACKAGE)


def shown(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(render(data, size=4096, fmt="png"))))


def _lift(ds: pydicom.Dataset, index: int) -> None:
    """Enhanced objects: rescale and window live in the functional groups (read them by hand)."""
    for group_seq in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        groups = ds.get(group_seq) or []
        group = groups[index if group_seq.startswith("Per") else 0] if groups else None
        for seq in ("PixelValueTransformationSequence", "FrameVOILUTSequence"):
            if group is not None and seq in group:
                for elem in group[seq][0]:
                    if elem.keyword not in ds:
                        ds[elem.tag] = elem


def reference_frame(ds: pydicom.Dataset, path: Path, index: int) -> np.ndarray | None:
    """The frame decoded by a decoder other than ours (GDCM), or pydicom's numpy one (RLE, native);
    None where there is none (12-bit JPEG extended: only the displayed image is checked)."""
    syntax = ds.file_meta.TransferSyntaxUID
    if not syntax.is_compressed:  # a Dataset: pydicom reads deflated data only through dcmread
        return pixel_array(ds, index=index)
    if syntax == "1.2.840.10008.1.2.4.51" and ds.BitsStored > 8:  # GDCM lacks 12-bit JPEG extended
        return None
    plugin = "pydicom" if syntax == "1.2.840.10008.1.2.5" else "gdcm"
    return pixel_array(str(path), index=index, decoding_plugin=plugin)


def reference_display(ds: pydicom.Dataset, arr: np.ndarray) -> np.ndarray:
    """Display values 0..255 through pydicom's own LUT functions (PS3.3 C.11)."""
    photometric = ds.PhotometricInterpretation
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        return rgb / (255 if rgb.max() <= 255 else 65535) * 255
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return arr / (2**ds.BitsStored - 1) * 255
    values = apply_modality_lut(arr, ds)
    if "VOILUTSequence" in ds:
        out = apply_voi_lut(values, ds) / (2 ** ds.VOILUTSequence[0].LUTDescriptor[2] - 1)
    elif "WindowCenter" in ds:
        out = apply_voi_lut(values, ds, prefer_lut=False)
        # apply_windowing's output range: the stored range through the rescale (PS3.3 C.11.2.1.2)
        lo, hi = (0, 2**ds.BitsStored - 1) if ds.PixelRepresentation == 0 else \
            (-(2 ** (ds.BitsStored - 1)), 2 ** (ds.BitsStored - 1) - 1)
        if "RescaleSlope" in ds and "RescaleIntercept" in ds:
            lo, hi = (v * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for v in (lo, hi))
        out = (out - lo) / (hi - lo)
    else:
        out = (values - values.min()) / max(values.max() - values.min(), 1e-9)
    out = np.clip(out, 0, 1)
    return (1 - out if photometric == "MONOCHROME1" else out) * 255


CASES = PACKAGE + [n for n in EXTRA if n not in PACKAGE]


@pytest.mark.parametrize("name", CASES)
def test_each_file_is_shown_correctly_or_refused_with_a_reason(name, tmp_path):
    if name in REFUSED:
        with pytest.raises(IngestError) as refused:
            parse_instance(name, path_of(name), scrub=True)
        assert str(refused.value).startswith(f"{name}: ") and REFUSED[name] in str(refused.value)
        return
    path = ingestable(name, tmp_path)
    parsed, _ = parse_instance(name, path, scrub=True)  # the real files carry names: scrubbed
    image = shown(parsed.data)  # what is stored is what is shown
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        stored = pydicom.dcmread(io.BytesIO(parsed.data))
    syntax = ds.file_meta.TransferSyntaxUID
    index = int(ds.get("NumberOfFrames", 1) or 1) // 2  # the middle frame is shown
    ours = pixel_array(stored, index=index, decoding_plugin="pylibjpeg" if syntax.is_compressed else "")
    reference = reference_frame(ds, path, index)
    if reference is None:
        reference = ours
    elif syntax in LOSSLESS_SYNTAXES:
        assert np.array_equal(ours, reference), f"{name}: decode differs from the reference decoder"
    else:  # lossy: two decoder implementations differ by a few levels at most
        assert np.abs(ours.astype(np.int64) - reference).mean() < 1.5
    _lift(ds, index)
    expected = reference_display(ds, reference)
    assert image.shape[:2] == (ds.Rows, ds.Columns)
    assert image.ndim == expected.ndim, f"{name}: colour and grayscale confused"
    difference = np.abs(image.astype(np.float64) - expected)
    tolerance = 1.0 if syntax in LOSSLESS_SYNTAXES else 6.0
    assert np.percentile(difference, 99.9) <= tolerance, f"{name}: displayed image differs from the reference"


@pytest.mark.parametrize(("name", "sibling", "lossless"), SIBLINGS, ids=[f"{a}~{b}" for a, b, _ in SIBLINGS])
def test_the_same_image_in_another_encoding_is_shown_the_same(name, sibling, lossless):
    if name in REFUSED:
        assert sibling in REFUSED
        return
    a, b = shown(path_of(name).read_bytes()), shown(path_of(sibling).read_bytes())
    if lossless:
        assert np.array_equal(a, b)
    else:
        assert np.abs(a.astype(np.int64) - b).mean() < 2.0


def test_monochrome1_is_inverted_so_the_lungs_are_dark():
    """RG1 is a CR chest PA in MONOCHROME1: high stored values are dark. Shown, the lungs (centre
    left and right of the mediastinum) must be darker than the mediastinum between them."""
    image = shown(path_of("RG1_UNCR.dcm").read_bytes()).astype(float)
    rows, cols = image.shape
    band = image[int(rows * 0.35):int(rows * 0.55)]
    lungs = np.r_[band[:, int(cols * 0.22):int(cols * 0.38)].ravel(),
                  band[:, int(cols * 0.62):int(cols * 0.78)].ravel()]
    mediastinum = band[:, int(cols * 0.46):int(cols * 0.54)]
    assert lungs.mean() + 30 < mediastinum.mean()
