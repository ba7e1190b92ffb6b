"""CPU per event of the funnel consumers' own Python work, without the broker or Postgres.

For the first N reports of the demo's pool (data/demo-13735-0, `make demo` synthesises it), each
as a report-ingested event with one inline instance, this process runs what the extractor and the
mapper do per record: decode the record's bytes as the consumer base does
(`EventConsumer._decode`), `prepare` (mask + rule extraction; the lexicon mapping), `apply_many`
in batches of 500 (the rows each repo builds; `conn.execute` is a stub that sends nothing), and
the outbox rows of the events emitted. Then the decode of the mapper's labels-suggested events,
which the sampler and the gateway's read model each pay. The best of 5 rounds of
`time.process_time()`, so a loaded machine moves it far less than the stack-wide figures of
bench_floor.py, where ~0.03 ms per study is below the noise.

The last line is a digest of the labels-suggested events (ids and times left out): equal digests
on two trees mean the same findings and labels for every report.

Run it on this tree and on another back to back, each from a directory that holds a `data` link
to the demo data (never writing into the other tree), e.g.:
  PYTHONPATH=$PWD .venv/bin/python bench/bench_funnel_handlers.py
Knob: RADCURATE_BENCH_REPORTS (default 2000).
Session 10 (three alternating pairs, load 8-10; main 52082ee -> s10-funnel 92acd18): extractor
276-291 -> 233-273 µs per event, mapper 74-78 -> 55-69, labels-suggested decode 24-25 -> 15-20 (paid
twice: sampler and gateway); about -0.06 ms of CPU per study in all; the digest equal.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from services.common import consumer as consumer_module
from services.common import outbox
from services.common.contracts import DicomObject, Event, ObjectsManifest, Protocol, ReportIngested
from services.extractor.handlers import build_handlers as extractor_handlers
from services.mapper.handlers import build_handlers as mapper_handlers

REPORTS = Path("data") / "demo-13735-0" / "reports.csv"
BATCH = 500  # the consumers' max_batch
ROUNDS = 5


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"[load {one:.2f}/{five:.2f}]"


def report_events(n: int) -> list[ReportIngested]:
    csv.field_size_limit(10**7)
    with open(REPORTS, newline="") as f:
        rows = [row for _, row in zip(range(n), csv.DictReader(f), strict=False)]
    instance = DicomObject(object_key="a" * 64, sha256="a" * 64, sop_instance_uid="1.2.3.4.5.6.7.8.9.10",
                           series_instance_uid="1.2.3.4.5.6.7", modality="CR", pixel_sha256="b" * 64,
                           patient_key="c" * 64)
    return [ReportIngested(study_id=row["study_id"], patient_id=row["patient_id"], study_instance_uid=f"1.2.3.{i}",
                           protocol=Protocol.CXR, report_text=row["report"],
                           objects_manifest=ObjectsManifest(count=1, inline=[instance]))
            for i, row in enumerate(rows)]


class StubConnection:
    """Takes every statement and sends nothing: the repos' row building is measured, not Postgres."""

    async def execute(self, *_args: Any, **_kwargs: Any) -> None:
        return None


def records(topic: str, events: list[Event]) -> list[Any]:
    return [SimpleNamespace(topic=topic, partition=0, offset=i, value=e.model_dump_json().encode())
            for i, e in enumerate(events)]


async def one_hop(consumer: Any, handler: Any, batch: list[Any]) -> list[Event]:
    decoded = [consumer._decode(r) for r in batch]
    prepared = [await handler.prepare(e) for e in decoded]
    emitted: list[Event] = []
    for i in range(0, len(decoded), BATCH):
        emitted += await handler.apply_many(StubConnection(), decoded[i:i + BATCH], prepared[i:i + BATCH])
    await outbox.record(StubConnection(), emitted)  # type: ignore[arg-type]
    return emitted


def best_of(fn: Any) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(ROUNDS):
        started = time.process_time()
        out = fn()
        best = min(best, time.process_time() - started)
    return best, out


def main() -> None:
    n = int(os.environ.get("RADCURATE_BENCH_REPORTS", "2000"))
    resources = SimpleNamespace(settings=SimpleNamespace(backend="rules", service_name="bench"), extra={}, pool=None)
    extractor = extractor_handlers(resources)["report-ingested"]  # type: ignore[arg-type]
    mapper = mapper_handlers(resources)["findings-extracted"]  # type: ignore[arg-type]
    consumer = consumer_module.EventConsumer.__new__(consumer_module.EventConsumer)  # only its _decode
    reports = records("report-ingested", list(report_events(n)))
    seconds, findings = best_of(lambda: asyncio.run(one_hop(consumer, extractor, reports)))
    print(f"extractor, {n:,} report-ingested events: {1e6 * seconds / n:.1f} µs CPU per event {load()}")
    seconds, suggestions = best_of(lambda: asyncio.run(one_hop(consumer, mapper, records("findings-extracted",
                                                                                          findings))))
    print(f"mapper, findings-extracted: {1e6 * seconds / n:.1f} µs CPU per event {load()}")
    labels = records("labels-suggested", suggestions)
    seconds, _ = best_of(lambda: [consumer._decode(r) for r in labels])
    print(f"decode of labels-suggested (the sampler's, the gateway's): {1e6 * seconds / n:.1f} µs CPU per event"
          f" {load()}")
    stable = [e.model_dump_json(exclude={"event_id", "occurred_at", "correlation_id"}) for e in suggestions]
    print(f"digest of the suggestions: {hashlib.sha256(repr(stable).encode()).hexdigest()[:16]}")


if __name__ == "__main__":
    main()
