"""A digest of an object's decoded pixels: the same image whatever its UIDs, file or encoding.

The file's sha256 changes when an image is re-exported (new UIDs, another transfer syntax, a
header edited), so it cannot tell a re-exported twin from a new image. This digest is taken over
the decoded pixel data in a canonical form: every frame as a C-ordered little-endian array (what
pydicom decodes; colour as RGB, samples last), preceded by its shape and dtype. A lossless
re-encoding (explicit or implicit VR, big endian, deflate, RLE, JPEG-LS or JPEG 2000 lossless)
gives the same digest; a lossy one gives another (its pixels differ).

Frames are decoded one at a time, so memory holds one frame, and the object is within the
ingest bounds (IngestLimits.max_pixels) before this runs. A uniform image (every pixel the same
value: a blank frame, a failed exposure) gets no digest: it carries nothing a model could learn,
and unrelated patients' blank frames are byte-equal, so it must not tie their studies together.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import pydicom
from pydicom.pixels import iter_pixels
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from services.gateway import dicom_header as header
from services.gateway.render import decoding_plugin

VERSION = "radcurate-pixels/1"


class PixelDecodeError(ValueError):
    """The pixel data could not be decoded (the message says why)."""


def pixel_digest(ds: pydicom.Dataset, on_frame: Callable[[int, np.ndarray], None] | None = None) -> str | None:
    """sha256 (hex) of the decoded pixels in canonical form, or None for a uniform image;
    `on_frame(index, array)` sees each decoded frame (so a caller need not decode it again).
    Raises PixelDecodeError when a frame cannot be decoded."""
    frames = header.integer(ds, "NumberOfFrames", 1)
    digest = hashlib.sha256()
    low = high = None
    try:
        native = _native_frames(ds, frames)
        bounds = native[1] if native is not None else None  # the whole image's min and max, already taken
        decoded = native[0] if native is not None else iter_pixels(
            ds, decoding_plugin=decoding_plugin(ds.file_meta.TransferSyntaxUID))
        for n, frame in enumerate(decoded):
            if on_frame is not None:
                on_frame(n, frame)
            canonical = np.ascontiguousarray(frame, dtype=frame.dtype.newbyteorder("<"))
            if n == 0:  # shape and dtype first: equal bytes of another geometry are another image
                digest.update(f"{VERSION} frames={frames} shape={canonical.shape} dtype={canonical.dtype.str}\n"
                              .encode())
            digest.update(memoryview(canonical).cast("B"))
            if bounds is None:
                f_low, f_high = canonical.min(), canonical.max()
                low = f_low if low is None else min(low, f_low)
                high = f_high if high is None else max(high, f_high)
        if bounds is not None:  # a native image has at least one frame
            low, high = bounds
    except Exception as exc:  # a decoder's failure, whatever its type, is this object's problem
        raise PixelDecodeError(f"cannot decode the pixel data ({exc.__class__.__name__}: {exc})") from exc
    if low is None:
        raise PixelDecodeError("no frame in the pixel data")
    return None if low == high else digest.hexdigest()


_NATIVE_LITTLE_ENDIAN = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})


def _native_frames(ds: pydicom.Dataset, frames: int) -> tuple[list[np.ndarray], tuple[int, int]] | None:
    """The frames pydicom's decoder yields for the commonest object, read straight off the
    buffer, with their min and max: native little-endian grayscale, 8, 16 or 32 bits allocated,
    its unused high bits corrected as pydicom does (shifted out and back: masked when unsigned,
    sign-extended when signed). pydicom's decoder spent ~0.15 ms per object setting itself up for
    this. None for anything else (compressed, big endian, deflated, colour, 1-bit, truncated):
    pydicom decodes it."""
    if ds.file_meta.get("TransferSyntaxUID") not in _NATIVE_LITTLE_ENDIAN or "PixelData" not in ds:
        return None
    samples, allocated = header.integer(ds, "SamplesPerPixel", 1), header.integer(ds, "BitsAllocated", 0)
    stored, representation = header.integer(ds, "BitsStored", 0), header.value(ds, "PixelRepresentation")
    rows, columns = header.integer(ds, "Rows", 0), header.integer(ds, "Columns", 0)
    if (samples != 1 or allocated not in (8, 16, 32) or not 0 < stored <= allocated or representation not in (0, 1)
            or header.text(ds, "PhotometricInterpretation") not in ("MONOCHROME1", "MONOCHROME2")
            or rows < 1 or columns < 1 or frames < 1):
        return None
    data = header.pixel_data(ds)
    count = rows * columns * frames
    dtype = np.dtype(f"<{'i' if representation else 'u'}{allocated // 8}")
    if not isinstance(data, bytes) or len(data) < count * dtype.itemsize:
        return None
    pixels = np.frombuffer(data, dtype=dtype, count=count).reshape(frames, rows, columns)
    low, high = int(pixels.min()), int(pixels.max())
    # The shifts change only values outside the stored bits' range; most files have none (every
    # pixel within BitsStored), and then the pixels are the buffer as it is: no copy, no shifts.
    fits = (-(1 << (stored - 1)) <= low and high < 1 << (stored - 1)) if representation else high < 1 << stored
    if stored < allocated and not fits:
        pixels = pixels.copy()
        np.left_shift(pixels, allocated - stored, out=pixels)
        np.right_shift(pixels, allocated - stored, out=pixels)
        low, high = int(pixels.min()), int(pixels.max())
    return list(pixels), (low, high)
