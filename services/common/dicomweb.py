"""A small DICOMweb client (PS3.18): QIDO-RS search, WADO-RS retrieve, STOW-RS store, over httpx.

Plain httpx rather than `dicomweb-client`: that package is synchronous (requests) and this code
runs on an event loop; what is needed here — a JSON search, a multipart/related retrieve of one
instance, a multipart/related store — is a page of code. QIDO answers in the DICOM JSON model
(PS3.18 F.2): attributes keyed by 8-hex-digit tags, values in a "Value" list.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

DICOM = "application/dicom"
# transfer-syntax=* asks for the instance as stored: no transcoding, so a lossless JPEG 2000 file
# arrives bit for bit (and a lossy one is not decoded and re-encoded on the way).
ACCEPT_AS_STORED = f'multipart/related; type="{DICOM}"; transfer-syntax=*'
ACCEPT_DEFAULT = f'multipart/related; type="{DICOM}"'
QIDO_PAGE = 500

TAGS = {
    "StudyInstanceUID": "0020000D", "SeriesInstanceUID": "0020000E", "SOPInstanceUID": "00080018",
    "AccessionNumber": "00080050", "PatientID": "00100020", "StudyDate": "00080020",
    "ModalitiesInStudy": "00080061", "NumberOfStudyRelatedInstances": "00201208", "Modality": "00080060",
    "StudyDescription": "00081030",
}


class DicomWebError(RuntimeError):
    """The PACS refused or failed a request; the message names the request and the answer."""


@dataclass(frozen=True)
class StudyMatch:
    """One study a QIDO-RS search found."""

    study_instance_uid: str
    accession_number: str = ""
    patient_id: str = ""
    number_of_instances: int | None = None


@dataclass(frozen=True)
class InstanceRef:
    series_instance_uid: str
    sop_instance_uid: str


def attribute(item: Mapping[str, Any], keyword: str) -> str:
    """The first value of an attribute of a DICOM JSON object, as text ('' when absent)."""
    values = (item.get(TAGS[keyword]) or {}).get("Value") or []
    if not values:
        return ""
    first = values[0]
    return str(first.get("Alphabetic", "") if isinstance(first, dict) else first)


def parse_multipart_related(content_type: str, body: bytes) -> list[bytes]:
    """The bodies of the parts of a multipart/related payload (RFC 2387), byte-exact."""
    boundary = _param(content_type, "boundary")
    if not boundary:
        raise DicomWebError(f"multipart answer without a boundary (Content-Type: {content_type})")
    delimiter = b"--" + boundary.encode()
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):  # the close delimiter
            break
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise DicomWebError("malformed multipart part: no blank line after its headers")
        # The CRLF before the next delimiter belongs to the delimiter, not to the part.
        parts.append(content[:-2] if content.endswith(b"\r\n") else content)
    return parts


def build_multipart_related(parts: Iterable[bytes], boundary: str | None = None) -> tuple[str, bytes]:
    """(Content-Type, body) of a multipart/related payload of DICOM instances (for STOW-RS)."""
    boundary = boundary or f"radcurate-{uuid.uuid4().hex}"
    body = b"".join(f"--{boundary}\r\nContent-Type: {DICOM}\r\n\r\n".encode() + p + b"\r\n" for p in parts)
    return f'multipart/related; type="{DICOM}"; boundary={boundary}', body + f"--{boundary}--\r\n".encode()


def _param(content_type: str, name: str) -> str:
    for piece in content_type.split(";")[1:]:
        key, _, value = piece.strip().partition("=")
        if key.strip().lower() == name:
            return value.strip().strip('"')
    return ""


class DicomWebClient:
    """QIDO-RS, WADO-RS and STOW-RS against one DICOMweb root (e.g. http://pacs/dicom-web)."""

    def __init__(self, base_url: str, *, client: httpx.AsyncClient | None = None, timeout: float = 120) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._as_stored = True  # cleared when the PACS cannot send instances untranscoded

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _get(self, path: str, **kwargs: Any) -> httpx.Response:
        url = f"{self.base_url}{path}"
        try:
            return await self._client.get(url, **kwargs)
        except httpx.HTTPError as exc:
            raise DicomWebError(f"GET {url}: {exc.__class__.__name__}: {exc}") from exc

    async def search_studies(self, query: Mapping[str, str] | None = None) -> list[StudyMatch]:
        """QIDO-RS /studies with the given matching keys, every page of the answer."""
        found: list[StudyMatch] = []
        while True:
            params = {**(query or {}), "includefield": "NumberOfStudyRelatedInstances",
                      "limit": str(QIDO_PAGE), "offset": str(len(found))}
            page = await self._search("/studies", params)
            found += [StudyMatch(attribute(i, "StudyInstanceUID"), attribute(i, "AccessionNumber"),
                                 attribute(i, "PatientID"), _int(attribute(i, "NumberOfStudyRelatedInstances")))
                      for i in page]
            if len(page) < QIDO_PAGE:
                return found

    async def search_instances(self, study_instance_uid: str) -> list[InstanceRef]:
        """QIDO-RS /studies/{uid}/instances: every instance of one study."""
        found: list[InstanceRef] = []
        while True:
            page = await self._search(f"/studies/{study_instance_uid}/instances",
                                      {"limit": str(QIDO_PAGE), "offset": str(len(found))})
            found += [InstanceRef(attribute(i, "SeriesInstanceUID"), attribute(i, "SOPInstanceUID")) for i in page]
            if len(page) < QIDO_PAGE:
                return found

    async def _search(self, path: str, params: Mapping[str, str]) -> list[dict]:
        resp = await self._get(path, params=params, headers={"Accept": "application/dicom+json"})
        if resp.status_code == 204:
            return []
        if resp.status_code != 200:
            raise DicomWebError(f"QIDO-RS {path}: HTTP {resp.status_code} {resp.text[:200]}")
        try:
            answer = resp.json()
        except ValueError as exc:
            raise DicomWebError(f"QIDO-RS {path}: the answer is not JSON") from exc
        if not isinstance(answer, list):
            raise DicomWebError(f"QIDO-RS {path}: expected a JSON array")
        return answer

    async def retrieve_instance(self, study_instance_uid: str, ref: InstanceRef) -> bytes:
        """WADO-RS one instance, as stored when the PACS allows it (Part 10 bytes)."""
        path = f"/studies/{study_instance_uid}/series/{ref.series_instance_uid}/instances/{ref.sop_instance_uid}"
        resp = await self._get(path, headers={"Accept": ACCEPT_AS_STORED if self._as_stored else ACCEPT_DEFAULT})
        if resp.status_code in (400, 406) and self._as_stored:
            self._as_stored = False
            resp = await self._get(path, headers={"Accept": ACCEPT_DEFAULT})
        if resp.status_code != 200:
            raise DicomWebError(f"WADO-RS {path}: HTTP {resp.status_code} {resp.text[:200]}")
        parts = parse_multipart_related(resp.headers.get("content-type", ""), resp.content)
        if len(parts) != 1:
            raise DicomWebError(f"WADO-RS {path}: expected one instance, got {len(parts)}")
        return parts[0]

    async def store_instances(self, instances: Iterable[bytes]) -> dict:
        """STOW-RS /studies; raises unless every instance was stored."""
        content_type, body = build_multipart_related(instances)
        url = f"{self.base_url}/studies"
        try:
            resp = await self._client.post(url, content=body, headers={"Content-Type": content_type,
                                                                       "Accept": "application/dicom+json"})
        except httpx.HTTPError as exc:
            raise DicomWebError(f"POST {url}: {exc.__class__.__name__}: {exc}") from exc
        answer = resp.json() if resp.content else {}
        failed = (answer.get("00081198") or {}).get("Value") if isinstance(answer, dict) else None
        if resp.status_code != 200 or failed:
            raise DicomWebError(f"STOW-RS: HTTP {resp.status_code}, failed instances: {failed or resp.text[:200]}")
        return answer


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None
