"""Curation protocols as plug-ins: the interface a protocol implements, and the registry.

A protocol is everything that differs between, say, verifying CXR labels and grading lumbar
stenosis: its taxonomy, how a report is read and mapped, how a sample is stratified, what a reader
submits and how it is checked, what the review page shows, the consensus rule, agreement figures,
the release layout and the metric. Each lives in one package (`cxr/`, `lumbar/`) that subclasses
`CurationProtocol` and calls `register`. The five services never name a protocol: they look the
event's `protocol` up here and call its hooks. An unknown name raises `UnknownProtocol` — there is
no fallback protocol, so a typo or a missing plug-in is a dead letter, never a silent CXR read.

Built-in protocols are imported on first use; further plug-ins are named (as importable modules
that call `register`) in the `RADCURATE_PROTOCOLS` environment variable, comma-separated, so every
service process loads the same set. See docs/adding-a-protocol.md.
"""

from __future__ import annotations

import importlib
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # the plug-ins import these; the registry itself must not (contracts imports it)
    from services.common.contracts import (
        CellConsensus,
        Finding,
        Judgement,
        LabelsSuggested,
        ModelProvenance,
        SamplingPlan,
        SelectionPlan,
        SuggestedLabel,
    )
    from services.common.protocols.kit.decision import Decision
    from services.common.protocols.kit.release import ReleaseFiles
    from services.common.protocols.kit.rule_config import RuleConfig
    from services.common.protocols.kit.sampling import SampleResult
    from services.common.protocols.kit.submission import Metric, SubmissionFormat
    from services.common.taxonomy import Taxonomy

PLUGINS_ENV = "RADCURATE_PROTOCOLS"
# What an HTTP caller who names no protocol gets (the API's documented default; events never default).
DEFAULT_PROTOCOL = "cxr-label-verification"
BUILTIN: dict[str, str] = {
    "cxr-label-verification": "services.common.protocols.cxr",
    "lumbar-grading": "services.common.protocols.lumbar",
}


class UnknownProtocol(ValueError):
    """No registered protocol has this name."""


class JudgementRejected(ValueError):
    """A reader's submission the protocol refuses; `detail` is safe to show, `extra` goes into the problem."""

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail, self.extra = detail, extra


class NeedsConfirmation(Exception):
    """A submission that would lose information: shown back to the reader until confirmed."""

    def __init__(self, detail: str, confirmations: list[dict[str, Any]], type_: str) -> None:
        super().__init__(detail)
        self.detail, self.confirmations, self.type_ = detail, confirmations, type_


class SubmissionRejected(ValueError):
    """A prediction file the metric cannot score; the message is safe to show the submitter."""


@dataclass(frozen=True)
class MappingResult:
    """Labels (taxonomy order), the findings no label cites, the reasoning, and rejected ids."""

    labels: list[SuggestedLabel]
    unmapped: list[Finding]
    reasoning: str | None = None
    rejected: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ComposedRelease:
    """A release laid out: its files, the studies in each split, and the holdout ground truth
    (study id -> what the metric scores against), which never leaves the consensus service."""

    files: ReleaseFiles
    released: Sequence[Any]
    holdout: Sequence[Any]
    truth: Mapping[str, object]


@dataclass(frozen=True)
class ReviewContext:
    """What the gateway knows about one assignment when a reader submits a judgement."""

    study_id: str
    suggested: Sequence[Mapping[str, Any]]
    unmapped: Sequence[Mapping[str, Any]]
    confirm: bool
    instances: Callable[[], Awaitable[set[tuple[str, int]]]]  # (series uid, instance number), on demand
    comment: str = ""  # the reader's stated reason, which some verdicts require


class Extractor(ABC):
    """Reads one report into findings (outside any transaction: it may be slow)."""

    provenance: ModelProvenance

    @abstractmethod
    async def extract(self, report: str) -> list[Finding]: ...


class Mapper(ABC):
    """Maps one study's findings onto the protocol's taxonomy."""

    provenance: ModelProvenance

    @abstractmethod
    async def map(self, findings: list[Finding]) -> MappingResult: ...


class CurationProtocol(ABC):
    """The hooks one protocol provides, grouped by the service that calls them."""

    name: ClassVar[str]  # the wire name, e.g. "cxr-label-verification"
    short_name: ClassVar[str]  # for people and file names, e.g. "cxr"
    judgement: ClassVar[type[Judgement]]  # what a reader submits (a `contracts.Judgement` subclass)
    rules: ClassVar[frozenset[str]]  # the consensus rule names this protocol implements
    rule_parameters: ClassVar[frozenset[str]] = frozenset()  # the rules-file parameters its rules read
    # Whether the services' LLM backends (extractor and mapper prompts) apply to this protocol;
    # otherwise its offline extractor and mapper always run.
    llm_backends: ClassVar[bool] = False

    # --- taxonomy ------------------------------------------------------------------------
    @abstractmethod
    def taxonomy(self) -> Taxonomy: ...

    # --- extractor and mapper ------------------------------------------------------------
    @abstractmethod
    def extractor(self) -> Extractor:
        """The offline extractor (the LLM one, where `llm_backends`, is the extractor service's)."""

    @abstractmethod
    def mapper(self) -> Mapper:
        """The offline mapper (the LLM one, where `llm_backends`, is the mapper service's)."""

    # --- sampler -------------------------------------------------------------------------
    @abstractmethod
    def draw_sample(self, pool: Sequence[LabelsSuggested], plan: SamplingPlan) -> SampleResult:
        """Pick the studies worth a reader's time from the unsampled pool, with a reason each."""

    # --- gateway: the review page and the reader's judgement ------------------------------
    @abstractmethod
    def review_view(self, suggested: Sequence[Mapping[str, Any]], study_url: str) -> dict[str, Any]:
        """The protocol's part of an assignment as the page gets it: `label_ids` (what a vote may
        name) and whatever the protocol's widget needs (e.g. `grading`, `grades`, `series_url`)."""

    @abstractmethod
    async def read_judgement(self, fields: Mapping[str, Any],
                             context: ReviewContext) -> tuple[Judgement, list[dict[str, Any]]]:
        """The judgement from a vote request's fields, checked against the assignment; and the
        omission warnings the reader confirmed. Raises `JudgementRejected` (422) or
        `NeedsConfirmation` (409)."""

    def vote_outcome(self, judgement: Judgement) -> str:
        """A bounded label for the votes counter (e.g. the verdict)."""
        return "judged"

    metric: ClassVar[Metric]  # how a release of this protocol is scored, as evaluators read it

    @abstractmethod
    def submission_format(self) -> SubmissionFormat:
        """What a prediction file for a release of this protocol must hold: key and value columns,
        one row per holdout study (or per study x cell), the range of each value."""

    def submission_columns(self) -> list[str]:
        """The header a prediction file for a release of this protocol must have."""
        return self.submission_format().header

    # --- consensus -----------------------------------------------------------------------
    @abstractmethod
    def decide(self, study_id: str, votes: Sequence[Mapping[str, Any]], assignment: Mapping[str, Any],
               rule: RuleConfig) -> tuple[Decision, list[CellConsensus]]:
        """The study's decision from its counted votes (rows: vote_id, reader_id and the judgement's
        fields); the second item is per-cell consensus for grid protocols, else empty."""

    @abstractmethod
    def agreement_report(self, studies: Sequence[Mapping[str, Any]],
                         votes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Inter-reader agreement over decided studies: aggregates only, never a study's labels."""

    # Whether `card_agreement` reads the studies' provenance and instance lists (repo.report_rows's
    # largest columns); a protocol whose card figures need neither sets it False.
    card_agreement_reads_provenance: bool = True

    def card_agreement(self, studies: Sequence[Mapping[str, Any]],
                       votes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The agreement figures a release's dataset card carries (`compose_release`'s `agreement`):
        a release waits for them once the last study is decided. By default the whole
        `agreement_report`; a protocol whose card carries less computes only that, with the same
        values as the report's."""
        return self.agreement_report(studies, votes)

    def label_kappas(self, studies: Sequence[Mapping[str, Any]],
                     votes: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
        """Per-label agreement for the live gauge (none by default)."""
        return {}

    def benchmark_labels(self) -> Sequence[str] | None:
        """The labels a release's selection plan may bound (`SelectionPlan.label_bounds`), or None
        when they are not a fixed list (the selection then names any bound it cannot meet)."""
        return None

    def adjudication_labels(self) -> Sequence[str]:
        """The labels a curator's adjudication may set."""
        return self.taxonomy().label_ids

    def adjudicate(self, accepted: bool, labels: Sequence[str], cells: Sequence[Mapping[str, Any]],
                   decided_cells: Sequence[Mapping[str, Any]] | None,
                   instances: set[tuple[str, int]] | None = None) -> tuple[list[str], list[dict[str, Any]] | None]:
        """A curator's ruling as it enters the benchmark: the labels, and for grid protocols the
        cells (the rule's `decided_cells` with the curator's ones in place; None when the caller,
        e.g. the gateway, does not know them yet). `instances` (when known) are the study's, for
        points. Raises `JudgementRejected`. By default: labels of `adjudication_labels`, no cells."""
        if cells:
            raise JudgementRejected("this protocol's adjudication sets `labels`, not `cells`")
        unknown = sorted(set(labels) - set(self.adjudication_labels()))
        if unknown:
            raise JudgementRejected(f"unknown label(s): {', '.join(unknown)}", unknown_labels=unknown)
        return (sorted(set(labels)) if accepted else []), None

    def review_flags(self, accepted: bool, votes: Sequence[Mapping[str, Any]]) -> list[str]:
        """Flags for curator review a decided study raises beyond adjudication (e.g. a reader's
        corrections on an accepted study), each `"<kind>: <detail>"`. None by default."""
        return []

    def release_copies(self, release_id: str, rows: Sequence[Mapping[str, Any]],
                       plan: SelectionPlan) -> list[tuple[str, str, str]] | None:
        """The DICOM copies (bucket kind, source key, destination key) a release of `rows` under
        `plan` makes, known from the selection alone, so that checking and copying the objects
        can run beside the agreement report; None when the protocol cannot say before composing.
        Must be what `compose_release` then lays out in `files.copies`."""
        return None

    @abstractmethod
    def compose_release(self, release_id: str, rows: Sequence[Mapping[str, Any]], plan: SelectionPlan,
                        funnel: Mapping[str, int], rule: RuleConfig, agreement: Mapping[str, Any]) -> ComposedRelease:
        """Select and split accepted studies and lay out every file of the release."""

    @abstractmethod
    def score_submission(self, text: str, release: Mapping[str, Any], truth: Mapping[str, object],
                         n_bootstrap: int) -> dict[str, Any]:
        """The metric (with `metric_version`) of a prediction file against the holdout truth.
        Raises `SubmissionRejected` with a message that reveals no truth."""


_registry: dict[str, CurationProtocol] = {}
_lock = threading.RLock()
_env_loaded = False


def register(protocol: CurationProtocol) -> CurationProtocol:
    """Add a protocol (its package calls this on import). A second, different one with the same
    name is an error: two plug-ins must never fight over what a name means."""
    with _lock:
        existing = _registry.get(protocol.name)
        if existing is not None and type(existing) is not type(protocol):
            raise ValueError(f"protocol {protocol.name!r} is already registered by {type(existing).__name__}")
        _registry[protocol.name] = protocol
    return protocol


def unregister(name: str) -> None:
    """Remove a protocol (tests register throw-away protocols and take them out again)."""
    with _lock:
        _registry.pop(name, None)


def _load_env_plugins() -> None:
    global _env_loaded
    if _env_loaded:  # every event's validation asks; only the first pays for the lock
        return
    with _lock:
        if _env_loaded:
            return
        _env_loaded = True
        for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
            importlib.import_module(module)


def get(name: str) -> CurationProtocol:
    """The registered protocol called `name`; `UnknownProtocol` if there is none."""
    _load_env_plugins()
    with _lock:
        if name not in _registry and name in BUILTIN:
            importlib.import_module(BUILTIN[name])
        if name in _registry:
            return _registry[name]
    raise UnknownProtocol(f"unknown protocol {name!r}; known: {', '.join(names())}")


def is_known(name: str) -> bool:
    """Whether `name` is a protocol's wire name (without importing any plug-in)."""
    _load_env_plugins()
    return name in BUILTIN or name in _registry


def names() -> list[str]:
    """Every protocol's wire name: the built-in ones and those registered."""
    _load_env_plugins()
    with _lock:
        return sorted({*BUILTIN, *_registry})


__all__ = [
    "BUILTIN", "DEFAULT_PROTOCOL", "PLUGINS_ENV", "ComposedRelease", "CurationProtocol", "Extractor",
    "JudgementRejected", "Mapper", "MappingResult", "NeedsConfirmation", "ReviewContext",
    "SubmissionRejected", "UnknownProtocol", "get", "is_known", "names", "register", "unregister",
]
