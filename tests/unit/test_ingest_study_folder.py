"""A study folder as it reaches a curator: a DICOM media export (a DICOMDIR beside the images, files
without an extension) copied by a desktop that leaves its own files (.DS_Store, ._* AppleDouble
files, __MACOSX/, Thumbs.db). `radcurate ingest DIR` sends the images only, and the gateway says
what a DICOMDIR or a file without its DICOM header is when one is sent anyway."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from radcurate.bulk_ingest import study_paths
from services.gateway.ingest import IngestError, parse_instance


def test_a_study_folder_sends_its_images_and_not_the_media_index_or_desktop_files(tmp_path: Path) -> None:
    study = tmp_path / "dicom" / "S-1"
    images = ["PT000000/ST000000/SE000000/IM000001", "PT000000/ST000000/SE000000/IM000002", "extra.dcm"]
    others = ["DICOMDIR", ".DS_Store", "PT000000/._IM000001", "__MACOSX/PT000000/IM000001", "Thumbs.db",
              "PT000000/desktop.ini", ".hidden/IM9"]
    for name in images + others:
        (study / name).parent.mkdir(parents=True, exist_ok=True)
        (study / name).write_bytes(b"x")
    assert sorted(name for name, _ in study_paths(tmp_path, "S-1")) == sorted(images)


def _testdata(name: str) -> Path:
    path = get_testdata_file(name, download=False)  # pydicom's own test files: on disk, no network
    if path is None:
        pytest.skip(f"{name} is not installed")
    return Path(str(path))


def test_a_dicomdir_is_refused_as_what_it_is() -> None:
    with pytest.raises(IngestError, match=r"^DICOMDIR: a DICOMDIR \(the index of a DICOM media export\), not an image"):
        parse_instance("DICOMDIR", _testdata("DICOMDIR"), scrub=True, patient_id="P-1")


def test_a_file_without_its_dicom_header_is_refused_in_a_curator_s_words() -> None:
    with warnings.catch_warnings(), pytest.raises(IngestError) as refused:
        warnings.simplefilter("ignore")
        parse_instance("face.dcm", _testdata("OT-PAL-8-face.dcm"), scrub=True, patient_id="P-1")
    assert "face.dcm: not a readable DICOM file (no 'DICM' file meta header" in str(refused.value)
    assert "force=True" not in str(refused.value)
