"""Ingest streams and is bounded: a study of large files is never in memory whole, and objects
over the size or pixel bounds are refused before anything is decoded."""

from __future__ import annotations

import hashlib
import io
import tracemalloc
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from services.common import deid
from services.gateway.ingest import IngestError, IngestLimits, TooLarge, parse_instance, validate_study

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def real(name: str) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(get_testdata_file(name, download=False))


@pytest.fixture(scope="module")
def big_study(tmp_path_factory) -> list[tuple[str, Path]]:
    """Five 7.2 MB chest radiographs (RG1, uncompressed) of one study, de-identified."""
    root = tmp_path_factory.mktemp("big")
    ds = real("RG1_UNCR.dcm")
    deid.scrub(ds, secret="tests", patient_id="P")
    ds.StudyInstanceUID = generate_uid()
    files = []
    for i in range(5):
        ds.SOPInstanceUID = generate_uid()
        ds.save_as(root / f"{i}.dcm", enforce_file_format=True)
        files.append((f"{i}.dcm", root / f"{i}.dcm"))
    return files


@pytest.mark.parametrize("scrub", [False, True])
def test_a_study_of_large_files_is_checked_one_file_at_a_time(big_study, scrub):
    one_file = big_study[0][1].stat().st_size
    tracemalloc.start()
    try:
        parsed, _ = validate_study("BIG", "P", "report", big_study, scrub=scrub)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(parsed) == 5 and all(p.length >= one_file - 1024 for p in parsed)
    # The study is 5 files: it never was in memory, only one file at a time, with one decoded
    # frame of it (the pixel digest decodes frame by frame).
    assert peak < 2.5 * one_file


def test_an_object_over_the_size_bound_is_refused_before_it_is_read(big_study):
    name, path = big_study[0]
    with pytest.raises(TooLarge, match=rf"{name}: \d+ bytes is over the limit of 1000000 bytes per object"):
        parse_instance(name, path, scrub=False, limits=IngestLimits(max_object_bytes=1_000_000))


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    """A small JPEG 2000 object whose header claims 65535 × 65535 × 10 pixels: refused by the
    pixel bound before any decode is attempted (a decode would try to allocate ~80 GB)."""
    ds = real("emri_small_jpeg_2k_lossless.dcm")
    deid.scrub(ds, secret="tests", patient_id="P")
    ds.Rows = ds.Columns = 65535
    ds.save_as(tmp_path / "bomb.dcm", enforce_file_format=True)
    assert (tmp_path / "bomb.dcm").stat().st_size < 100_000
    with pytest.raises(TooLarge, match=r"bomb.dcm: 65535 × 65535 pixels × 10 frame\(s\) is over the limit"):
        parse_instance("bomb.dcm", tmp_path / "bomb.dcm", scrub=False)


def test_truncated_native_pixel_data_is_refused(tmp_path):
    ds = real("emri_small.dcm")
    deid.scrub(ds, secret="tests", patient_id="P")
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    ds.save_as(tmp_path / "short.dcm", enforce_file_format=True)
    with pytest.raises(IngestError, match=r"short.dcm: pixel data is truncated \(40960 of 81920 bytes\)"):
        parse_instance("short.dcm", tmp_path / "short.dcm", scrub=False)


def test_an_unsupported_transfer_syntax_is_named(tmp_path):
    ds = real("emri_small_jpeg_2k_lossless.dcm")
    deid.scrub(ds, secret="tests", patient_id="P")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder
    ds.save_as(tmp_path / "mpeg.dcm", enforce_file_format=True)
    with pytest.raises(IngestError, match=r"mpeg.dcm: transfer syntax MPEG2 Main Profile / Main Level "
                                          r"\(1.2.840.10008.1.2.4.100\) cannot be decoded"):
        parse_instance("mpeg.dcm", tmp_path / "mpeg.dcm", scrub=False)


class CountingUpload(io.BytesIO):
    """An upload's spooled file that counts the reads made on it."""

    reads = 0

    def read(self, size: int | None = -1) -> bytes:
        self.reads += 1
        return super().read(size)


def test_a_small_object_is_read_from_its_upload_once_and_hashed_from_memory(big_study):
    """A small object is read whole once, parsed and digested from memory (pydicom read a spooled
    upload in ~100 small reads, and the file digest read it all again); a large one streams."""
    ds = real("CT_small.dcm")
    deid.scrub(ds, secret="tests", patient_id="P")
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    upload = CountingUpload(buffer.getvalue())
    parsed, _ = parse_instance("small.dcm", upload, scrub=False, patient_id="P")
    assert upload.reads == 1
    assert parsed.obj.sha256 == hashlib.sha256(buffer.getvalue()).hexdigest()
    with open(big_study[0][1], "rb") as fp:  # 7.2 MB: over the in-memory bound, so it streams in parts
        large = CountingUpload(fp.read())
    parsed, _ = parse_instance("large.dcm", large, scrub=False, patient_id="P")
    assert large.reads > 1 and parsed.obj.sha256 == hashlib.sha256(large.getvalue()).hexdigest()
