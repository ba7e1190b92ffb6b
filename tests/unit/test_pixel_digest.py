"""The pixel digest (services.gateway.pixel_digest) on real DICOM from pydicom's test data: the
same image in every lossless encoding digests alike; another image, geometry or a lossy
re-encoding does not; a uniform image has none; undecodable pixels are an error."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from services.gateway.pixel_digest import PixelDecodeError, pixel_digest


def read(name: str) -> pydicom.Dataset:
    return pydicom.dcmread(get_testdata_file(name, download=False))


MR_ENCODINGS = ["MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm",
                "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"]


def test_one_image_in_every_lossless_encoding_has_one_digest():
    digests = {name: pixel_digest(read(name)) for name in MR_ENCODINGS}
    assert len(set(digests.values())) == 1 and None not in digests.values(), digests
    frames = {pixel_digest(read(n)) for n in ("emri_small.dcm", "emri_small_RLE.dcm", "emri_small_big_endian.dcm")}
    assert len(frames) == 1 and frames.isdisjoint(digests.values())  # a multi-frame image: its own


def test_the_digest_follows_the_pixels_not_the_header():
    ds = read("MR_small.dcm")
    before = pixel_digest(ds)
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.PatientID = "1.2.3", "1.2.4", "someone else"
    assert pixel_digest(ds) == before
    arr = ds.pixel_array.copy()
    arr[0, 0] ^= 1  # one pixel
    ds.PixelData = arr.tobytes()
    assert pixel_digest(ds) != before


def test_same_bytes_in_another_geometry_are_another_image():
    ds = read("MR_small.dcm")
    before = pixel_digest(ds)
    ds.Rows, ds.Columns = ds.Columns * 2, ds.Rows // 2  # 64 x 64 read as 128 x 32
    assert pixel_digest(ds) != before


def test_a_lossy_reencoding_is_another_image():
    assert pixel_digest(read("SC_rgb.dcm")) != pixel_digest(read("SC_rgb_dcmtk_+eb+cy+np.dcm"))


def test_a_uniform_image_has_no_digest():
    ds = read("MR_small.dcm")
    ds.PixelData = np.full((ds.Rows, ds.Columns), 7, dtype=np.int16).tobytes()
    assert pixel_digest(ds) is None


def test_undecodable_pixels_are_an_error():
    ds = read("MR_small_RLE.dcm")
    ds.PixelData = ds.PixelData[:200]
    with pytest.raises(PixelDecodeError, match="cannot decode the pixel data"):
        pixel_digest(ds)
