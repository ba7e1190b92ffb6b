"""The Prometheus metrics every service shares. One definition here, labels bounded.

Names follow Prometheus conventions: units in names, `_total` on counters, and never a study id
or event id as a label value (cardinality must not grow with the data).
"""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import Counter, Gauge, Histogram


@functools.cache
def child(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, looked up once per label values. prometheus_client's `labels()`
    checks and joins the values and takes a lock on every call (~7 us for a counter, ~8 for a
    histogram, against ~1 and ~3 for the child's inc/observe), which the hot paths paid on every
    request and every consumed or published event. The label values are bounded (module
    docstring), and prometheus_client keeps each child for good anyway, so the cache adds none."""
    return metric.labels(*labels)

EVENTS_CONSUMED = Counter(
    "radcurate_events_consumed_total",
    "Events taken from a topic, by outcome (applied, duplicate, dead_lettered, retried).",
    ["service", "topic", "outcome"],
)
EVENTS_PUBLISHED = Counter(
    "radcurate_events_published_total", "Events the outbox relay delivered to Kafka.", ["service", "topic"]
)
EVENT_PROCESSING = Histogram(
    "radcurate_event_processing_seconds",
    "Time to apply one event, including its transaction.",
    ["service", "topic"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CONSUMER_LAG = Gauge(
    "radcurate_consumer_lag_messages", "Messages behind the log end, summed over partitions.", ["service", "topic"]
)
OUTBOX_BACKLOG = Gauge("radcurate_outbox_backlog_events", "Outbox events not yet published.", ["service"])
OUTBOX_OLDEST_AGE = Gauge(
    "radcurate_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox event.", ["service"]
)
DLQ_EVENTS = Counter("radcurate_dlq_events_total", "Events sent to a dead-letter topic.", ["service", "topic"])
CONSUMER_BACKOFFS = Counter(
    "radcurate_consumer_backoffs_total",
    "Times a partition was paused because a dependency failed transiently (the event waits, it is not dead-lettered).",
    ["service", "topic"],
)
CONSUMER_PAUSED = Gauge(
    "radcurate_consumer_paused_partitions", "Partitions paused, waiting for a dependency to answer.",
    ["service", "topic"]
)
CONSUMER_BATCH_FALLBACKS = Counter(
    "radcurate_consumer_batch_fallbacks_total",
    "Batches whose one-transaction attempt failed and that were applied again record by record.",
    ["service", "topic"],
)
CONSUMER_RESTARTS = Counter(
    "radcurate_consumer_restarts_total", "Times the consume loop failed and restarted its Kafka client.", ["service"]
)
OUTBOX_PARKED = Counter(
    "radcurate_outbox_parked_total", "Outbox rows the broker refused for good, set aside with their error.",
    ["service", "topic"],
)
OUTBOX_PARKED_EVENTS = Gauge("radcurate_outbox_parked_events", "Outbox rows currently parked.", ["service"])

LLM_REQUESTS = Counter(
    "radcurate_llm_requests_total", "LLM calls by outcome (ok, error, cache_hit).",
    ["service", "backend", "model", "outcome"]
)
LLM_LATENCY = Histogram(
    "radcurate_llm_request_seconds",
    "LLM request latency.",
    ["service", "backend", "model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80),
)
LLM_TOKENS = Counter("radcurate_llm_tokens_total", "LLM tokens used.", ["service", "backend", "model", "kind"])

HTTP_REQUESTS = Counter(
    "radcurate_http_requests_total", "HTTP requests served.", ["service", "method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "radcurate_http_request_seconds",
    "HTTP request latency.",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

VOTES = Counter("radcurate_votes_total", "Votes cast, by verdict.", ["verdict"])
# No reader label: /metrics must not name readers (per-reader figures are in the curator API).
READS = Counter("radcurate_reads_total", "Reads completed, all readers together.")
STUDIES = Gauge("radcurate_studies", "Studies per curation state.", ["state"])
FLEISS_KAPPA = Gauge("radcurate_fleiss_kappa", "Fleiss' kappa per label over decided studies.", ["label"])
SAMPLING_RUN = Histogram("radcurate_sampling_run_seconds", "Duration of a sampling run.")
SELECTION_RUN = Histogram("radcurate_selection_run_seconds", "Duration of a selection and release run.")
