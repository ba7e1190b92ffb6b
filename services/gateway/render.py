"""DICOM → display-ready pixels → PNG/JPEG, for the reviewer page.

The pipeline is the standard's (PS3.3 C.11): decode one frame (the pydicom pixel-data plugins:
pylibjpeg for JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000 and RLE), then for grayscale
the Modality LUT (rescale slope/intercept or a LUT sequence), the VOI (the caller's window, else
the file's VOI LUT sequence or window, else the frame's full range) and MONOCHROME1 inversion;
for colour the conversion to RGB (YBR → RGB by the decoder, PALETTE COLOR through its LUTs).

Every failure to decode or render is a RenderError, so the routes answer problem+json.
"""

from __future__ import annotations

import io
import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pydicom
from PIL import Image, PngImagePlugin
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
# YBR_* are converted to RGB by the decoders (JPEG: YBR_FULL_422, JPEG 2000: YBR_ICT/YBR_RCT).
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR")
PHOTOMETRIC = GRAYSCALE + COLOUR


class RenderError(ValueError):
    """The object cannot be shown; the message says why."""


@dataclass(frozen=True)
class Frame:
    """One decoded frame. Grayscale: `values` are modality values (after the Modality LUT);
    colour: `values` are RGB scaled to 0..1 and the VOI does not apply."""

    values: np.ndarray
    ds: pydicom.Dataset  # the header (without pixel data): VOI, photometric interpretation

    @property
    def grayscale(self) -> bool:
        return self.values.ndim == 2


def decoding_plugin(transfer_syntax: pydicom.uid.UID) -> str:
    """The pydicom plugin that decodes this transfer syntax: pylibjpeg (with its libjpeg, openjpeg
    and rle plugins) for every compressed syntax, pydicom itself for native (and deflated) data."""
    return "pylibjpeg" if transfer_syntax.is_compressed else ""


def shown_frame(ds: pydicom.Dataset) -> int:
    """A multi-frame object is shown by its middle frame (a cine loop's or volume's most typical)."""
    return int(ds.get("NumberOfFrames", 1) or 1) // 2


def decode(source: bytes | BinaryIO | pydicom.Dataset, shown: np.ndarray | None = None) -> Frame:
    """Decode the shown frame and bring it to modality values (grayscale) or RGB 0..1 (colour);
    `shown` is that frame already decoded (ingest decodes every frame for its pixel digest).
    Raises RenderError."""
    try:
        if isinstance(source, pydicom.Dataset):
            ds = source
        else:
            ds = pydicom.dcmread(io.BytesIO(source) if isinstance(source, bytes | bytearray | memoryview) else source)
        photometric = str(ds.get("PhotometricInterpretation", ""))
        if photometric not in PHOTOMETRIC:
            raise RenderError(f"photometric interpretation {photometric or '(none)'} is not supported")
        # Decode only the frame on screen (a 120-frame ultrasound loop would cost seconds), always
        # with the plugin ingest checked for: pydicom would otherwise take any installed one.
        arr = shown if shown is not None else pixel_array(
            ds, index=shown_frame(ds), decoding_plugin=decoding_plugin(ds.file_meta.TransferSyntaxUID))
        header = pydicom.Dataset()  # the header alone (Dataset.copy would share, and lose, PixelData)
        for elem in ds:
            if elem.keyword != "PixelData":
                header.add(elem)
        _lift_frame_functional_groups(header, shown_frame(ds))
        if photometric in GRAYSCALE:
            return Frame(np.asarray(apply_modality_lut(arr, header), dtype=np.float64), header)
        if photometric == "PALETTE COLOR":
            rgb = apply_color_lut(arr, ds)
            # A 16-bit LUT descriptor over 8-bit entries is common (and writers disagree on the
            # byte order of such LUTs): entries that all fit in 8 bits are 8-bit entries.
            bits = 8 if rgb.dtype == np.uint8 or rgb.max() <= 255 else 16
        else:
            rgb, bits = arr, int(ds.BitsStored)
        return Frame(rgb.astype(np.float64) / (2**bits - 1), header)
    except RenderError:
        raise
    except Exception as exc:  # a decoder's failure, whatever its type, is this object's problem
        raise RenderError(f"cannot decode the pixel data ({exc.__class__.__name__}: {exc})") from exc


# Enhanced multi-frame objects (enhanced CT/MR) keep rescale and window per frame in functional
# groups; lifted to the top level they go through the same Modality LUT and VOI as any image.
_FRAME_GROUPS = {"PixelValueTransformationSequence": ("RescaleSlope", "RescaleIntercept", "RescaleType"),
                 "FrameVOILUTSequence": ("WindowCenter", "WindowWidth", "VOILUTFunction")}


def _lift_frame_functional_groups(header: pydicom.Dataset, index: int) -> None:
    groups = []
    per_frame = header.get("PerFrameFunctionalGroupsSequence")
    if per_frame and index < len(per_frame):
        groups.append(per_frame[index])
    if header.get("SharedFunctionalGroupsSequence"):
        groups.append(header.SharedFunctionalGroupsSequence[0])
    for sequence, keywords in _FRAME_GROUPS.items():
        item = next((g.get(sequence)[0] for g in groups if g.get(sequence)), None)
        for kw in keywords if item is not None else ():
            if kw in item and kw not in header:
                setattr(header, kw, item.get(kw))


def _window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """PS3.3 C.11.2.1.2 (LINEAR, LINEAR_EXACT) and C.11.2.1.3.1 (SIGMOID), output 0..1."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if width <= 1:  # LINEAR needs width ≥ 1; a degenerate window is a threshold at the centre
        return (values >= center - 0.5).astype(np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _first(value: object) -> float:
    return float(value[0]) if isinstance(value, pydicom.multival.MultiValue) else float(value)


def voi(frame: Frame, center: float | None = None, width: float | None = None) -> np.ndarray:
    """Display values 0..1 (0 = black): the given window, else the file's VOI, else the full range."""
    if not frame.grayscale:
        return frame.values
    ds, values = frame.ds, frame.values
    if center is not None and width is not None:
        shown = _window(values, center, width)
    elif ds.get("VOILUTSequence"):
        item = ds.VOILUTSequence[0]
        out_bits = int(item.LUTDescriptor[2])
        shown = apply_voi_lut(values, ds, prefer_lut=True).astype(np.float64) / (2**out_bits - 1)
    elif "WindowCenter" in ds and "WindowWidth" in ds and _first(ds.WindowWidth) > 0:
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        shown = _window(values, _first(ds.WindowCenter), _first(ds.WindowWidth), function)
    else:
        lo, hi = float(values.min()), float(values.max())
        shown = (values - lo) / max(hi - lo, 1e-9)
    shown = np.clip(shown, 0.0, 1.0)
    # MONOCHROME1: the minimum is white (PS3.3 C.7.6.3.1.2); shown inverted so bone is white.
    return 1.0 - shown if ds.get("PhotometricInterpretation") == "MONOCHROME1" else shown


def to_8bit(shown: np.ndarray) -> np.ndarray:
    return np.rint(shown * 255.0).astype(np.uint8)


def encode(pixels8: np.ndarray, size: int, fmt: str) -> bytes:
    """8-bit grayscale or RGB pixels → JPEG/PNG no larger than size × size (aspect kept)."""
    img = Image.fromarray(pixels8, mode="L" if pixels8.ndim == 2 else "RGB")
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if fmt == "jpeg":
        img.save(out, format="JPEG", quality=90)
    else:
        img.save(out, format="PNG", compress_level=1)  # fast: these are made on the reader's path
    return out.getvalue()


def render(dicom: bytes | BinaryIO, *, center: float | None = None, width: float | None = None,
           size: int = 1024, fmt: str = "png") -> bytes:
    """The image as shown: decoded, Modality LUT, VOI (the file's own unless given), MONOCHROME1
    inverted, no larger than size × size. Raises RenderError."""
    return encode(to_8bit(voi(decode(dicom), center, width)), size, fmt)


# --- the 16-bit master: modality values kept for re-windowing without decoding the DICOM again ---

def master_png(frame: Frame) -> bytes:
    """A lossless-enough 16-bit PNG of the frame's modality values (grayscale), or an 8-bit RGB PNG
    (colour). Values are stored as (value - offset) / scale; both, and the photometric
    interpretation, are kept in the PNG's text chunks."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Photometric", str(frame.ds.get("PhotometricInterpretation", "")))
    if not frame.grayscale:
        out = io.BytesIO()
        Image.fromarray(to_8bit(frame.values), mode="RGB").save(out, format="PNG", pnginfo=info, compress_level=1)
        return out.getvalue()
    lo, hi = float(frame.values.min()), float(frame.values.max())
    integral = np.all(np.equal(np.mod(frame.values, 1), 0))
    scale = 1.0 if integral and hi - lo <= 65535 else max(hi - lo, 1e-9) / 65535
    stored = np.rint((frame.values - lo) / scale).astype(np.uint16)
    info.add_text("Offset", repr(lo))
    info.add_text("Scale", repr(scale))
    out = io.BytesIO()
    Image.fromarray(stored).save(out, format="PNG", pnginfo=info, compress_level=1)
    return out.getvalue()


def from_master(png: bytes) -> Frame:
    """The Frame a master PNG holds (modality values for grayscale, RGB 0..1 for colour)."""
    img = Image.open(io.BytesIO(png))
    img.load()
    header = pydicom.Dataset()
    header.PhotometricInterpretation = img.text.get("Photometric", "MONOCHROME2")
    arr = np.asarray(img)
    if arr.ndim == 3:
        return Frame(arr.astype(np.float64) / 255.0, header)
    values = arr.astype(np.float64) * float(img.text["Scale"]) + float(img.text["Offset"])
    return Frame(values, header)


# --- request parameters as rendered (and cached) --------------------------------------------
# A window is rendered on a grid, so that requests differing by less than the display can show
# (a float sweep: 40.0001, 40.0002...) are one image and one cache entry, not a miss each.
WINDOW_STEPS = 256  # grid steps per window width: one step moves the display by ≤ 1 grey level of 256
MIN_WINDOW_STEP = 2.0**-10  # floor for tiny windows (SUV, parametric maps)
SIZE_STEP = 64  # pixels


def window_step(width: float) -> float:
    """The window grid for `width`: the largest power of two no greater than width / 256 (so
    integral windows of ≥ 256 wide, the usual presets, are kept exactly), at least 2⁻¹⁰."""
    return max(2.0 ** math.floor(math.log2(width / WINDOW_STEPS)), MIN_WINDOW_STEP)


def quantise_window(center: float | None, width: float | None) -> tuple[float | None, float | None]:
    """The window as rendered: both on the grid of `width`'s step, or (None, None) for the file's
    own VOI when either is missing. Raises RenderError for a width ≤ 0 or a value that is not finite."""
    if center is None or width is None:
        return None, None
    if not (math.isfinite(center) and math.isfinite(width)) or width <= 0:
        raise RenderError(f"window centre {center} / width {width}: the width must be > 0 and both finite")
    step = window_step(width)
    return round(center / step) * step, max(round(width / step) * step, step)


def quantise_size(size: int, exact: Iterable[int] = ()) -> int:
    """The size as rendered: one of `exact` (the sizes made ahead) as asked, any other rounded down
    to a multiple of 64 pixels (never under 64), so the image stays no larger than asked."""
    return size if size in tuple(exact) else max(SIZE_STEP, size // SIZE_STEP * SIZE_STEP)


class RenderCache:
    """Rendered images are asked for repeatedly (prefetch, re-windowing): keep the most recent,
    bounded by count and by bytes (a native-size chest radiograph PNG is a few MB). An image
    larger than the whole byte bound is not kept at all. Callers quantise what forms the key
    (quantise_window, quantise_size): a key built from raw floats would make every request new."""

    def __init__(self, capacity: int = 512, max_bytes: int = 256 * 2**20) -> None:
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._capacity, self._max_bytes, self._bytes = capacity, max_bytes, 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size_bytes(self) -> int:
        """The bytes held (the images' lengths)."""
        return self._bytes

    def get(self, key: tuple) -> bytes | None:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        return None

    def put(self, key: tuple, value: bytes) -> None:
        if key in self._items:
            self._bytes -= len(self._items.pop(key))
        if len(value) > self._max_bytes:
            return
        self._items[key] = value
        self._bytes += len(value)
        self._items.move_to_end(key)
        while len(self._items) > self._capacity or self._bytes > self._max_bytes:
            _, dropped = self._items.popitem(last=False)
            self._bytes -= len(dropped)
