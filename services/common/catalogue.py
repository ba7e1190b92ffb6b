"""The event catalogue: every topic, the event it carries, who produces and who consumes it.

This is the one source for the topic list. The local stack creates its topics from it, the
Strimzi `KafkaTopic` manifests and the AsyncAPI document are generated from it
(`python -m services.common.catalogue --write`), and unit tests check it against the code: each
service's consumer subscribes to exactly the topics listed for it here, and each event class is
constructed only by the service named as its producer. A generated file that is stale fails CI.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

from services.common import contracts as c

SERVICES = ("gateway", "extractor", "mapper", "sampler", "consensus")
Kind = Literal["event", "command"]


@dataclass(frozen=True)
class Channel:
    """One topic: the event it carries, its one producer, and the services that consume it."""

    event: type[c.Event]
    kind: Kind
    producer: str
    consumers: tuple[str, ...]
    description: str

    @property
    def topic(self) -> str:
        return self.event.topic.value

    @property
    def dlq(self) -> str:
        return self.event.topic.dlq


CATALOGUE: tuple[Channel, ...] = (
    Channel(c.ReportIngested, "event", "gateway", ("extractor",),
            "A study's DICOM objects and report are stored; carries ids, the report and its instance manifest:"
            " a short instance list inline, a longer one by key (manifests/<study_id>/<sha256>.json); never"
            " pixels."),
    Channel(c.FindingsExtracted, "event", "extractor", ("mapper",),
            "Abnormal findings read from the report, with backend, model and prompt version."),
    Channel(c.LabelsSuggested, "event", "mapper", ("gateway", "sampler"),
            "Findings mapped to the protocol's taxonomy: the AI-suggested labels of one study."),
    Channel(c.SamplingRequested, "command", "gateway", ("sampler",),
            "Draw a review sample from the candidate pool and assign readers."),
    Channel(c.ReviewAssigned, "event", "sampler", ("gateway", "consensus"),
            "A sampled study and the readers who will read it."),
    Channel(c.SamplingCompleted, "event", "sampler", ("gateway",),
            "A sampling run's outcome: quotas met or not, counts."),
    Channel(c.ReviewReoffered, "event", "sampler", ("gateway", "consensus"),
            "An unvoted read moved to another reader (lease expired or curator's move)."),
    Channel(c.ReassignmentRequested, "command", "gateway", ("sampler",),
            "Move an open read to another reader."),
    Channel(c.VoteCast, "event", "gateway", ("sampler", "consensus"),
            "A reader's judgement of one study."),
    Channel(c.ConsensusReached, "event", "consensus", ("gateway",),
            "A study's decision under the protocol's consensus rule."),
    Channel(c.AdjudicationRequested, "command", "gateway", ("consensus",),
            "A curator's ruling on a decided study."),
    Channel(c.StudyAdjudicated, "event", "consensus", ("gateway",),
            "The ruling recorded beside the rule's decision."),
    Channel(c.SelectionRequested, "command", "gateway", ("consensus",),
            "Choose the benchmark from accepted studies and release it."),
    Channel(c.BenchmarkReleased, "event", "consensus", ("gateway",),
            "A release's public manifest is written; the holdout stays inside consensus."),
    Channel(c.ReportRequested, "command", "gateway", ("consensus",),
            "Compute an agreement report."),
    Channel(c.ReportReady, "event", "consensus", ("gateway",),
            "An agreement report is ready."),
    Channel(c.EvaluationRequested, "command", "gateway", ("consensus",),
            "Score a submitted prediction file against a release's holdout."),
    Channel(c.EvaluationCompleted, "event", "consensus", ("gateway",),
            "An evaluation's aggregate result (never per-study holdout labels)."),
)

# Production sizing of the generated KafkaTopic manifests. Events are keyed by study_id, so the
# partition count bounds a consumer group's parallelism; dead letters keep 30 days so an operator
# has time to replay them.
PARTITIONS, DLQ_PARTITIONS = 6, 1
RETENTION_MS, DLQ_RETENTION_MS = 7 * 24 * 3600 * 1000, 30 * 24 * 3600 * 1000


class DeadLetter(BaseModel):
    """What the consumer base writes to `<topic>.dlq` when an event cannot be processed."""

    model_config = ConfigDict(extra="allow")

    event_id: str
    original_event_id: str
    original_topic: str
    partition: int
    offset: int
    service: str
    error: str
    traceback: str = ""
    attempts: int
    failed_at: datetime
    payload: str


def topics(with_dlq: bool = True) -> tuple[str, ...]:
    """Every topic name (and its dead-letter topic) in catalogue order."""
    names = tuple(ch.topic for ch in CATALOGUE)
    return names + tuple(ch.dlq for ch in CATALOGUE) if with_dlq else names


def consumed_by(service: str) -> set[str]:
    return {ch.topic for ch in CATALOGUE if service in ch.consumers}


def produced_by(service: str) -> set[type[c.Event]]:
    return {ch.event for ch in CATALOGUE if ch.producer == service}


# --- generated documents ------------------------------------------------------------------


def kafka_topics() -> list[dict[str, Any]]:
    """Strimzi `KafkaTopic` resources for every topic and its dead-letter topic."""
    docs = []
    for ch in CATALOGUE:
        for name, partitions, retention in ((ch.topic, PARTITIONS, RETENTION_MS),
                                            (ch.dlq, DLQ_PARTITIONS, DLQ_RETENTION_MS)):
            docs.append({
                "apiVersion": "kafka.strimzi.io/v1beta2",
                "kind": "KafkaTopic",
                "metadata": {"name": name, "labels": {"strimzi.io/cluster": "radcurate",
                                                      "app.kubernetes.io/part-of": "radcurate"}},
                "spec": {"topicName": name, "partitions": partitions, "replicas": 1,
                         "config": {"cleanup.policy": "delete", "retention.ms": retention}},
            })
    return docs


def kafka_topics_yaml() -> str:
    header = ("# GENERATED by `python -m services.common.catalogue --write` from services/common/catalogue.py.\n"
              "# Do not edit: change the catalogue and regenerate (a unit test fails when this is stale).\n"
              "# Every topic and its dead-letter topic. Events are keyed by study_id, so partitions bound the\n"
              "# parallelism of a consumer group (KEDA never scales a consumer past the partition count).\n"
              "# Main topics keep 7 days; dead letters keep 30 days so an operator has time to replay them.\n")
    return header + str(yaml.safe_dump_all(kafka_topics(), sort_keys=False))


def _schemas() -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Literal["validation"]]] = [(ch.event, "validation") for ch in CATALOGUE]
    models.append((DeadLetter, "validation"))
    _, schema = models_json_schema(models, ref_template="#/components/schemas/{model}")
    defs: dict[str, Any] = schema["$defs"]
    return defs


def _message(name: str, title: str, summary: str) -> dict[str, Any]:
    return {"name": name, "title": title, "summary": summary, "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{name}"},
            "bindings": {"kafka": {"key": {"type": "string", "description": "study_id: one study's events stay "
                                           "ordered on one partition"}}}}


def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3 document: channels, messages with JSON Schemas, who sends and receives."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {"DeadLetter": _message("DeadLetter", "Dead letter", DeadLetter.__doc__ or "")}
    for ch in CATALOGUE:
        name = ch.event.__name__
        messages[name] = _message(name, f"{name} ({ch.kind})", ch.description)
        channels[ch.topic] = {
            "address": ch.topic, "description": ch.description,
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "bindings": {"kafka": {"partitions": PARTITIONS, "topicConfiguration": {"retention.ms": RETENTION_MS}}},
        }
        channels[ch.dlq] = {
            "address": ch.dlq, "description": f"Dead letters of {ch.topic}: events its consumers could not process.",
            "messages": {"DeadLetter": {"$ref": "#/components/messages/DeadLetter"}},
            "bindings": {"kafka": {"partitions": DLQ_PARTITIONS,
                                   "topicConfiguration": {"retention.ms": DLQ_RETENTION_MS}}},
        }
        ref = {"$ref": f"#/channels/{ch.topic}"}
        msg = [{"$ref": f"#/channels/{ch.topic}/messages/{name}"}]
        operations[f"{ch.producer}.send.{ch.topic}"] = {"action": "send", "channel": ref, "messages": msg}
        for consumer in ch.consumers:
            operations[f"{consumer}.receive.{ch.topic}"] = {"action": "receive", "channel": ref, "messages": msg}
            operations[f"{consumer}.send.{ch.dlq}"] = {
                "action": "send", "channel": {"$ref": f"#/channels/{ch.dlq}"},
                "messages": [{"$ref": f"#/channels/{ch.dlq}/messages/DeadLetter"}]}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "RadCurate events", "version": "1.0.0",
                 "description": "Every Kafka topic of RadCurate: the event it carries (JSON, keyed by study_id), "
                                "the service that produces it and the services that consume it. Each topic has "
                                "a `<topic>.dlq` dead-letter topic. Generated from services/common/catalogue.py."},
        "defaultContentType": "application/json",
        "servers": {"production": {"host": "radcurate-kafka-bootstrap:9092", "protocol": "kafka",
                                   "description": "The Strimzi cluster of deploy/k8s/components/strimzi-kafka."}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": _schemas()},
    }


def asyncapi_json() -> str:
    return json.dumps(asyncapi(), indent=2, sort_keys=False) + "\n"


ROOT = Path(__file__).resolve().parents[2]
GENERATED: dict[Path, Any] = {
    ROOT / "deploy/k8s/components/strimzi-kafka/topics.yaml": kafka_topics_yaml,
    ROOT / "docs/asyncapi.json": asyncapi_json,
}


def stale() -> list[Path]:
    """Generated files whose content differs from what the catalogue generates now."""
    return [p for p, make in GENERATED.items() if not p.exists() or p.read_text() != make()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="regenerate the files (default: check them)")
    args = parser.parse_args(argv)
    if args.write:
        for path, make in GENERATED.items():
            path.write_text(make())
            print(f"wrote {path.relative_to(ROOT)}")
        return 0
    out_of_date = stale()
    for path in out_of_date:
        print(f"stale: {path.relative_to(ROOT)} (run: python -m services.common.catalogue --write)", file=sys.stderr)
    return 1 if out_of_date else 0


if __name__ == "__main__":
    sys.exit(main())
