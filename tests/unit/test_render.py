"""Rendering DICOM for the reviewer: window/level, inversion, size, cache."""

from __future__ import annotations

import io

import numpy as np
import pydicom
from PIL import Image

from services.gateway.render import RenderCache, render
from tests.support.factories import dicom_bytes


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_the_image_is_rendered_at_the_requested_size(tmp_path):
    img = pixels(render(dicom_bytes(tmp_path, "R1"), size=128))
    assert max(img.shape) == 128 and img.dtype == np.uint8


def test_a_narrow_window_raises_contrast(tmp_path):
    data = dicom_bytes(tmp_path, "R2")
    wide = pixels(render(data, center=2048, width=4096, size=128))
    narrow = pixels(render(data, center=float(np.median(wide)) * 16, width=400, size=128))
    assert narrow.std() > wide.std()


def test_jpeg_is_available_for_slow_links(tmp_path):
    assert render(dicom_bytes(tmp_path, "R3"), size=64, fmt="jpeg")[:2] == b"\xff\xd8"


def test_the_cache_keeps_the_most_recent_images():
    cache = RenderCache(capacity=2)
    cache.put(("a",), b"A")
    cache.put(("b",), b"B")
    assert cache.get(("a",)) == b"A"  # touching a makes b the oldest
    cache.put(("c",), b"C")
    assert (cache.get(("a",)), cache.get(("b",)), cache.get(("c",))) == (b"A", None, b"C")


def test_the_16bit_master_rewindows_exactly_like_the_dicom(tmp_path):
    from services.gateway.derivatives import FULL, MASTER, _rewindow, make, sized

    data = dicom_bytes(tmp_path, "R4")
    made = make(data, sizes=(64,))
    assert set(made) == {MASTER, FULL, sized(64, "jpeg")}
    assert Image.open(io.BytesIO(made[MASTER])).mode.startswith("I")  # 16 bits kept, not 8
    assert np.array_equal(pixels(_rewindow(made[MASTER], 1800, 900, 4096, "png")),
                          pixels(render(data, center=1800, width=900, size=4096)))
    assert np.array_equal(pixels(made[FULL]), pixels(render(data, size=4096)))


def test_a_scaled_master_keeps_non_integral_modality_values_within_a_step():
    from services.gateway.render import Frame, from_master, master_png

    values = np.linspace(-3.7, 70000.25, 64 * 64).reshape(64, 64)
    header = pydicom.Dataset()
    header.PhotometricInterpretation = "MONOCHROME2"
    back = from_master(master_png(Frame(values, header))).values
    assert np.abs(back - values).max() <= (values.max() - values.min()) / 65535


def test_the_cache_is_bounded_by_bytes_too():
    cache = RenderCache(capacity=100, max_bytes=10)
    cache.put(("a",), b"12345")
    cache.put(("b",), b"12345")
    cache.put(("c",), b"123")
    assert (cache.get(("a",)), cache.get(("b",)), cache.get(("c",))) == (None, b"12345", b"123")
