"""Rendering DICOM for the reviewer: window/level, inversion, size, cache."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
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


def test_nearby_float_windows_are_rendered_on_one_grid_and_share_cache_entries():
    """Issue 11 item 15: a sweep of float windows must not make every request a cache miss."""
    from services.gateway.render import quantise_size, quantise_window

    rng = np.random.default_rng(11)
    sweep = [(1700 + rng.uniform(-0.5, 0.5), 3200 + rng.uniform(-4, 4)) for _ in range(1000)]
    keys = {quantise_window(c, w) for c, w in sweep}
    assert len(keys) <= 3, keys  # width 3200: a grid of 8; every centre rounds to 1700
    assert quantise_window(40, 400) == (40, 400) and quantise_window(-600, 1500) == (-600, 1500)  # presets exact
    assert quantise_window(None, 400) == (None, None)  # half a window is the file's own VOI
    tiny = {quantise_window(0.3 + i * 1e-6, 0.01) for i in range(1000)}
    assert len(tiny) <= 2  # narrow windows keep a finer grid, still bounded
    assert {quantise_size(s, exact=(1024, 2048)) for s in range(960, 1024)} == {960}
    assert quantise_size(1024, exact=(1024,)) == 1024 and quantise_size(65) == 64 and quantise_size(4096) == 4096


def test_a_window_off_the_grid_renders_within_one_grey_level_of_the_exact_one(tmp_path):
    from services.gateway.render import quantise_window

    data = dicom_bytes(tmp_path, "R5")
    center, width = 1703.37, 3197.9
    grid = pixels(render(data, center=quantise_window(center, width)[0], width=quantise_window(center, width)[1]))
    exact = pixels(render(data, center=center, width=width))
    assert np.abs(grid.astype(int) - exact.astype(int)).max() <= 1


def test_a_non_finite_window_is_a_render_error():
    from services.gateway.render import RenderError, quantise_window

    for center, width in ((float("nan"), 400), (40, float("inf")), (40, 0)):
        with pytest.raises(RenderError):
            quantise_window(center, width)


def test_the_cache_stays_within_its_byte_bound_and_keeps_no_image_larger_than_it():
    cache = RenderCache(capacity=100, max_bytes=1000)
    for i in range(50):
        cache.put((i,), bytes(300))
        assert cache.size_bytes <= 1000
    assert len(cache) == 3
    cache.put(("huge",), bytes(1001))  # kept alone, it would hold more than the bound
    assert cache.get(("huge",)) is None and cache.size_bytes <= 1000
