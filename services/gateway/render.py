"""DICOM → PNG/JPEG with window/level, for the reviewer page."""

from __future__ import annotations

import io
from collections import OrderedDict

import numpy as np
import pydicom
from PIL import Image


def _window(ds: pydicom.Dataset, center: float | None, width: float | None) -> tuple[float, float]:
    def first(v: object) -> float | None:
        if v is None:
            return None
        return float(v[0]) if isinstance(v, pydicom.multival.MultiValue) else float(v)

    c = center if center is not None else first(ds.get("WindowCenter"))
    w = width if width is not None else first(ds.get("WindowWidth"))
    return c, w


def render(dicom_bytes: bytes, *, center: float | None = None, width: float | None = None,
           size: int = 1024, fmt: str = "png") -> bytes:
    """Apply the rescale, the window (the file's own unless given) and MONOCHROME1 inversion."""
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes))
    pixels = ds.pixel_array.astype(np.float32)
    if pixels.ndim == 3:  # a multi-frame object: show the middle frame
        pixels = pixels[pixels.shape[0] // 2]
    pixels = pixels * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
    c, w = _window(ds, center, width)
    if c is None or w is None or w <= 0:
        lo, hi = float(pixels.min()), float(pixels.max())
    else:
        lo, hi = c - w / 2, c + w / 2
    scaled = np.clip((pixels - lo) / max(hi - lo, 1e-6), 0, 1) * 255
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        scaled = 255 - scaled
    img = Image.fromarray(scaled.astype(np.uint8), mode="L")
    img.thumbnail((size, size))
    out = io.BytesIO()
    img.save(out, format="JPEG" if fmt == "jpeg" else "PNG", **({"quality": 90} if fmt == "jpeg" else {}))
    return out.getvalue()


class RenderCache:
    """Rendered images are small and asked for repeatedly (prefetch, re-windowing): keep the last few."""

    def __init__(self, capacity: int = 512) -> None:
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._capacity = capacity

    def get(self, key: tuple) -> bytes | None:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        return None

    def put(self, key: tuple, value: bytes) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)
