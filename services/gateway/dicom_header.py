"""Header values the ingest checks read, straight off pydicom's undecoded elements.

pydicom parses a file into raw elements and decodes each one on first access (its value
hooks, character sets, validation, a DataElement built and stored): ~14 µs an element, and the
ingest path reads ~25 elements of every object besides those the de-identification check reads,
about a quarter of parsing a chest radiograph. Most of them are short ASCII strings or one
unsigned short, whose value is plain to read from the bytes: `value` reads those itself and
returns what `Dataset.get` would (the same text, int or float), and hands everything else to
pydicom unchanged: an element already decoded, implicit VR (no VR in the file), UN, a
multi-valued or empty value, non-ASCII text or an ISO 2022 escape (character sets), a number
pydicom's IS/DS would read differently. The dataset is not modified.
"""

from __future__ import annotations

import functools
import re
import struct
from typing import Any

import pydicom
from pydicom import config
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement

# String VRs of the default repertoire whose single value pydicom decodes as the text less its
# trailing spaces and NULs (multi_string; convert_text for SH/LO; convert_UI).
_TEXT_VRS = frozenset({"AE", "AS", "CS", "LO", "SH", "UI"})
_DATE_VRS = frozenset({"DA", "DT", "TM"})  # the same, unless pydicom converts them to datetimes
_NUMBERS = {"US": ("<H", ">H"), "SS": ("<h", ">h"), "UL": ("<I", ">I"), "SL": ("<i", ">i")}
# The numbers Python's int/float and pydicom's IS/DSfloat read alike (not '1_0', 'nan', '1.0' as IS).
_IS = re.compile(r"\s*[+-]?\d+\s*")
_DS = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")
_MISSING = object()


@functools.cache
def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(f"{keyword!r} is not a DICOM keyword")
    return tag


def value(ds: pydicom.Dataset, keyword: str, default: Any = None) -> Any:
    """`ds.get(keyword, default)`, without decoding the element through pydicom where its bytes
    are plain (module docstring)."""
    elem = ds.get_item(_tag(keyword))
    if elem is None:
        return default
    if not isinstance(elem, RawDataElement):
        return elem.value
    fast = _plain(elem)
    return ds.get(keyword, default) if fast is _MISSING else fast


def _plain(elem: RawDataElement) -> Any:
    """The value of an undecoded element as pydicom would give it, or _MISSING where pydicom
    must decode it."""
    raw, vr = elem.value, elem.VR
    if not isinstance(raw, bytes) or not raw or vr is None or elem.is_implicit_VR:
        return _MISSING
    if vr in _NUMBERS:
        fmt = _NUMBERS[vr][0 if elem.is_little_endian else 1]
        return struct.unpack(fmt, raw)[0] if len(raw) == struct.calcsize(fmt) else _MISSING
    text_vr = vr in _TEXT_VRS or (vr in _DATE_VRS and not config.datetime_conversion)
    if not (text_vr or vr in ("IS", "DS")) or not raw.isascii() or b"\\" in raw or b"\x1b" in raw:
        return _MISSING
    text = raw.decode("ascii").rstrip(" \x00")
    if text_vr:
        return text if text else _MISSING  # an empty value: pydicom's '' (or None) as it has it
    # IS / DS: pydicom's IS and DSfloat are an int and a float; anything unusual is theirs.
    if vr == "IS":
        return int(text) if _IS.fullmatch(text) else _MISSING
    return float(text) if _DS.fullmatch(text) else _MISSING


def numbers(ds: pydicom.Dataset, keyword: str) -> tuple[float, ...] | None:
    """The values of an undecoded IS or DS attribute whose bytes are plain numbers, as floats
    (for a multi-valued one like PixelSpacing: what iterating pydicom's value gives, as floats);
    None for anything else (absent, decoded, unusual): the caller asks pydicom."""
    elem = ds.get_item(_tag(keyword))
    if not isinstance(elem, RawDataElement) or elem.VR not in ("IS", "DS") or elem.is_implicit_VR:
        return None
    raw = elem.value
    if not isinstance(raw, bytes) or not raw or not raw.isascii():
        return None
    pattern = _IS if elem.VR == "IS" else _DS
    items = raw.decode("ascii").rstrip(" \x00").split("\\")
    if not all(pattern.fullmatch(item) for item in items):
        return None
    return tuple(float(item) for item in items)


def integer(ds: pydicom.Dataset, keyword: str, default: int) -> int:
    """An integer attribute as the checks read it: `int(ds.get(keyword, default) or default)`."""
    return int(value(ds, keyword, default) or default)


def text(ds: pydicom.Dataset, keyword: str) -> str:
    """A string attribute as the checks read it: `str(ds.get(keyword, ""))`."""
    return str(value(ds, keyword, ""))


def pixel_data(ds: pydicom.Dataset) -> Any:
    """`ds.PixelData` (None when absent): native pixel bytes as read, without pydicom's decoding
    of the element (the bytes are the value for OB/OW in an explicit VR file)."""
    elem = ds.get_item(0x7FE00010)
    if elem is None:
        return None
    if isinstance(elem, RawDataElement) and elem.VR in ("OB", "OW") and not elem.is_implicit_VR \
            and isinstance(elem.value, bytes):
        return elem.value
    return ds.get("PixelData")
