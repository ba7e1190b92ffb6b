"""`radcurate label --in reports.jsonl --out labels.jsonl`: label a report file offline.

One bad line must not sink an archive-sized batch, so each unusable input line is reported as
`line N: <reason>` and skipped while the rest are labelled; a line that is not UTF-8 text is one
too. A byte-order mark (Notepad's and Excel's "UTF-8" files start with one) is read, not a fault.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from services.common.protocols.cxr.extract import extract_findings
from services.common.protocols.cxr.lexicon import map_findings
from services.common.taxonomy import Taxonomy, load_taxonomy

if TYPE_CHECKING:  # imported where used: the offline rules path need not load openai and fastapi
    from services.common.llm import LlmConfig
    from services.extractor.llm import LlmExtractor
    from services.mapper.llm import LlmMapper


class Backend(StrEnum):
    """Which report-understanding backend labels the file."""

    RULES = "rules"
    LLM = "llm"


@dataclass(frozen=True)
class LabelSummary:
    labelled: int
    errors: list[str] = field(default_factory=list)


class BadLine(ValueError):
    """An input line that cannot be labelled; the message is the reason shown to the user."""


LLM_CHUNK = 256  # reports in flight at once: bounds memory; the clients bound the HTTP calls


def label_file(in_path: Path, out_path: Path, backend: str = "rules") -> LabelSummary:
    """Label every `{"id", "report"}` line of `in_path` into `out_path` (JSON lines)."""
    chosen = _backend(backend)
    taxonomy = load_taxonomy()
    configs = _llm_configs() if chosen is Backend.LLM else ()  # a config fault fails before any output
    errors: list[str] = []
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # undecodable bytes become lone surrogates, found per line (_parse_lines): a file saved in a
    # legacy encoding loses those lines, named, not the whole run to one codec error without a line
    with (in_path.open(encoding="utf-8-sig", errors="surrogateescape") as source,
          out_path.open("w", encoding="utf-8") as sink):
        rows = _parse_lines(source, errors)
        if chosen is Backend.LLM:
            labelled = asyncio.run(_label_with_llm(rows, sink, taxonomy, errors, *configs))
        else:
            labelled = _write(sink, (label_report(study_id, report, taxonomy, chosen) for _, study_id, report in rows))
    return LabelSummary(labelled=labelled, errors=errors)


def _parse_lines(source: Iterable[str], errors: list[str]) -> Iterator[tuple[int, str, str]]:
    """(line number, study id, report) per usable line; the others go to `errors`."""
    for number, line in enumerate(source, start=1):
        if not line.strip():
            continue
        try:
            _require_utf8(line)
            study_id, report = parse_line(line)
        except BadLine as exc:
            errors.append(f"line {number}: {exc}")
            continue
        yield number, study_id, report


def _require_utf8(line: str) -> None:
    """BadLine when the line held bytes that are not UTF-8 (read as lone surrogates)."""
    try:
        line.encode("utf-8")
    except UnicodeEncodeError as exc:
        byte = ord(line[exc.start]) - 0xDC00
        raise BadLine(f"not UTF-8 text (byte 0x{byte:02x}); save the file as UTF-8") from None


def _write(sink: TextIO, records: Iterable[dict[str, Any]]) -> int:
    count = 0
    for record in records:
        sink.write(json.dumps(record) + "\n")
        count += 1
    return count


def _backend(name: str) -> Backend:
    try:
        return Backend(name)
    except ValueError:
        known = ", ".join(b.value for b in Backend)
        raise ValueError(f"unknown backend {name!r}; choose one of: {known}") from None


def parse_line(line: str) -> tuple[str, str]:
    """The study id and report text of one input line, or BadLine saying what is wrong."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadLine(f"invalid JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise BadLine("expected a JSON object")
    study_id = row.get("id")
    if isinstance(study_id, bool) or not isinstance(study_id, str | int) or not str(study_id).strip():
        raise BadLine("missing id")
    report = row.get("report")
    if not isinstance(report, str) or not report.strip():
        raise BadLine("empty report")
    return str(study_id), report


def label_report(study_id: str, report: str, taxonomy: Taxonomy, backend: Backend) -> dict[str, Any]:
    """The output record for one report."""
    findings = extract_findings(report, taxonomy)
    suggested, _ = map_findings(findings, taxonomy)
    return {
        "id": study_id,
        "labels": [s.label_id for s in suggested],
        "uncertain": [s.label_id for s in suggested if s.uncertain],
        "findings": [f.model_dump(mode="json") for f in findings],
        "backend": backend.value,
        "taxonomy_version": taxonomy.version,
    }


# --- the llm backend ----------------------------------------------------------------------


def _llm_configs() -> tuple[LlmConfig, LlmConfig]:
    """The extractor's and mapper's LLM settings, read by their own settings classes."""
    from services.common.llm import config_from_settings
    from services.extractor.app import ExtractorLlmSettings
    from services.mapper.app import MapperLlmSettings

    return (config_from_settings("extractor", ExtractorLlmSettings()),
            config_from_settings("mapper", MapperLlmSettings()))


async def _label_with_llm(rows: Iterable[tuple[int, str, str]], sink: TextIO, taxonomy: Taxonomy,
                          errors: list[str], extract_config: LlmConfig, map_config: LlmConfig) -> int:
    """Reports run concurrently a chunk at a time (each client bounds its HTTP concurrency); a
    report the LLM cannot label becomes a `line N: ...` error like a bad input line.
    """
    from services.common.llm import LlmClient
    from services.extractor.llm import LlmExtractor
    from services.mapper.llm import LlmMapper

    extract_client, map_client = LlmClient(extract_config), LlmClient(map_config)
    extractor, mapper = LlmExtractor(extract_client), LlmMapper(map_client, taxonomy)
    labelled = 0
    try:
        for chunk in _chunks(rows, LLM_CHUNK):
            outcomes = await asyncio.gather(
                *(_label_with_models(study_id, report, extractor, mapper, taxonomy) for _, study_id, report in chunk),
                return_exceptions=True,
            )
            for (number, _, _), outcome in zip(chunk, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    errors.append(f"line {number}: {type(outcome).__name__}: {outcome}")
                else:
                    labelled += _write(sink, [outcome])
    finally:
        await extract_client.aclose()
        await map_client.aclose()
    return labelled


async def _label_with_models(study_id: str, report: str, extractor: LlmExtractor, mapper: LlmMapper,
                             taxonomy: Taxonomy) -> dict[str, Any]:
    findings = await extractor.extract(report)
    result = await mapper.map(findings)
    return {
        "id": study_id,
        "labels": [s.label_id for s in result.labels],
        "uncertain": [s.label_id for s in result.labels if s.uncertain],
        "findings": [f.model_dump(mode="json") for f in findings],
        "backend": Backend.LLM.value,
        "taxonomy_version": taxonomy.version,
        "provenance": {"extraction": extractor.provenance.model_dump(), "mapping": mapper.provenance.model_dump()},
    }


def _chunks(rows: Iterable[tuple[int, str, str]], size: int) -> Iterator[list[tuple[int, str, str]]]:
    batch: list[tuple[int, str, str]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
