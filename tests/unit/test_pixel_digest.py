"""The pixel digest (services.gateway.pixel_digest) on real DICOM from pydicom's test data: the
same image in every lossless encoding digests alike; another image, geometry or a lossy
re-encoding does not; a uniform image has none; undecodable pixels are an error."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from services.gateway import pixel_digest as pixel_digest_module
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


def native(allocated: int, stored: int, signed: int, frames: int, implicit: bool, photometric: str) -> pydicom.Dataset:
    """A native grayscale object of random pixels, their unused high bits set at random too."""
    ds = read("MR_small.dcm")
    ds.file_meta.TransferSyntaxUID = (pydicom.uid.ImplicitVRLittleEndian if implicit
                                      else pydicom.uid.ExplicitVRLittleEndian)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = allocated, stored, stored - 1, signed
    ds.Rows, ds.Columns, ds.PhotometricInterpretation = 16, 24, photometric
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = np.random.default_rng(allocated * stored + signed).integers(
        0, 256, size=16 * 24 * frames * allocated // 8, dtype=np.uint8).tobytes()
    return ds


@pytest.mark.parametrize(("allocated", "stored"), [(8, 8), (8, 6), (16, 16), (16, 12), (16, 10), (32, 32), (32, 20)])
@pytest.mark.parametrize("signed", [0, 1])
@pytest.mark.parametrize(("frames", "implicit", "photometric"), [(1, False, "MONOCHROME2"), (3, True, "MONOCHROME1")])
def test_native_grayscale_read_off_the_buffer_digests_as_pydicoms_decoder(allocated, stored, signed, frames, implicit,
                                                                          photometric, monkeypatch):
    """The native fast path (issue 15 §2) gives the digest, frames and uniformity pydicom's decoder gives."""
    seen_fast: list[np.ndarray] = []
    fast = pixel_digest(native(allocated, stored, signed, frames, implicit, photometric),
                        on_frame=lambda n, f: seen_fast.append(f))
    with monkeypatch.context() as m:
        m.setattr(pixel_digest_module, "_native_frames", lambda ds, frames: None)
        seen_slow: list[np.ndarray] = []
        slow = pixel_digest(native(allocated, stored, signed, frames, implicit, photometric),
                            on_frame=lambda n, f: seen_slow.append(f))
    assert fast is not None and fast == slow
    assert len(seen_fast) == len(seen_slow) == frames
    for a, b in zip(seen_fast, seen_slow, strict=True):
        assert a.shape == b.shape and a.dtype.newbyteorder("<") == b.dtype.newbyteorder("<") and (a == b).all()


def test_the_fast_path_takes_only_native_little_endian_grayscale():
    assert pixel_digest_module._native_frames(native(16, 12, 0, 1, False, "MONOCHROME2"), 1) is not None
    assert pixel_digest_module._native_frames(read("MR_small_bigendian.dcm"), 1) is None
    assert pixel_digest_module._native_frames(read("MR_small_RLE.dcm"), 1) is None
    assert pixel_digest_module._native_frames(read("SC_rgb.dcm"), 1) is None
    truncated = native(16, 12, 0, 1, False, "MONOCHROME2")
    truncated.PixelData = truncated.PixelData[:100]
    assert pixel_digest_module._native_frames(truncated, 1) is None  # left to pydicom, which refuses it
    with pytest.raises(PixelDecodeError):
        pixel_digest(truncated)


def within_stored_bits(allocated: int, stored: int, signed: int, frames: int = 1) -> pydicom.Dataset:
    """A native object whose pixels all lie within BitsStored (the commonest file), its extremes included."""
    ds = native(allocated, stored, signed, frames, False, "MONOCHROME2")
    low, high = (-(1 << (stored - 1)), (1 << (stored - 1)) - 1) if signed else (0, (1 << stored) - 1)
    values = np.random.default_rng(stored).integers(low, high + 1, size=16 * 24 * frames, dtype=np.int64)
    values[:2] = low, high
    ds.PixelData = values.astype(f"<{'i' if signed else 'u'}{allocated // 8}").tobytes()
    return ds


@pytest.mark.parametrize(("allocated", "stored"), [(8, 6), (16, 12), (16, 10), (32, 20)])
@pytest.mark.parametrize("signed", [0, 1])
def test_pixels_within_the_stored_bits_are_read_as_they_are_and_digest_as_pydicoms_decoder(allocated, stored, signed,
                                                                                          monkeypatch):
    """Pixels that already fit BitsStored are the buffer itself (no copy, no shifts: the masking
    would change nothing), with pydicom's digest and values."""
    ds = within_stored_bits(allocated, stored, signed, frames=2)
    frames, bounds = pixel_digest_module._native_frames(ds, 2)
    assert all(np.shares_memory(f, np.frombuffer(ds.PixelData, dtype=np.uint8)) for f in frames)
    assert bounds == (-(1 << (stored - 1)), (1 << (stored - 1)) - 1) if signed else bounds == (0, (1 << stored) - 1)
    seen_fast: list[np.ndarray] = []
    fast = pixel_digest(ds, on_frame=lambda n, f: seen_fast.append(f))
    with monkeypatch.context() as m:
        m.setattr(pixel_digest_module, "_native_frames", lambda ds, frames: None)
        seen_slow: list[np.ndarray] = []
        slow = pixel_digest(within_stored_bits(allocated, stored, signed, frames=2),
                            on_frame=lambda n, f: seen_slow.append(f))
    assert fast is not None and fast == slow
    for a, b in zip(seen_fast, seen_slow, strict=True):
        assert (a == b).all()


def test_pixels_that_differ_only_in_unused_high_bits_are_a_uniform_image():
    """Masked as pydicom masks them, 0x1005 and 0x2005 in a 12-bit image are both 5: no digest (the
    bounds the fast path reports are the masked pixels', not the buffer's)."""
    ds = native(16, 12, 0, 1, False, "MONOCHROME2")
    ds.PixelData = np.array([0x1005, 0x2005] * (16 * 12), dtype="<u2").tobytes()
    frames, bounds = pixel_digest_module._native_frames(ds, 1)
    assert bounds == (5, 5) and (frames[0] == 5).all()
    assert pixel_digest(ds) is None
    ds.PixelData = np.array([0x1005, 0x2006] * (16 * 12), dtype="<u2").tobytes()
    assert pixel_digest(ds) is not None
