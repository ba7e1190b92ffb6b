"""`radcurate report --truth truth.jsonl`: a simulated benchmark's label error against its truth.

Simulation only: the truth file exists because the archive is synthetic. The holdout's labels
are secret and the gateway never serves them, so this reads the consensus service's own tables
(read only) on the local stack, as the operator who owns that stack: the latest release (or the
one named), its studies' labels, their counted votes and suggestions. A fourth read of every
benchmark study is simulated with the default reader model, seeded by study.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from radcurate.simulate import Truth, load_truth, make_reader
from radcurate.truth_audit import audit, audited_studies
from services.common.contracts import Verdict
from services.common.taxonomy import load_taxonomy


@dataclass(frozen=True)
class ReleaseForAudit:
    release_id: str
    benchmark: dict[str, dict[str, frozenset[str]]]  # split -> study id -> labels
    verdicts: dict[str, list[Verdict]]
    suggested: dict[str, frozenset[str]]


def load_release(dsn: str, protocol: str, release_id: str | None = None) -> ReleaseForAudit:
    """The release (the latest of the protocol unless named) with what the audit needs."""
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        if release_id is None:
            row = conn.execute("SELECT release_id, released FROM releases WHERE protocol = %s"
                               " ORDER BY created_at DESC, release_id DESC LIMIT 1", (protocol,)).fetchone()
        else:
            row = conn.execute("SELECT release_id, released FROM releases WHERE release_id = %s AND protocol = %s",
                               (release_id, protocol)).fetchone()
        if row is None:
            raise LookupError(f"no release {release_id!r} of {protocol}" if release_id
                              else f"no release of {protocol} yet")
        released_ids = list(row["released"])
        released = {r["study_id"]: frozenset(r["labels"]) for r in conn.execute(
            "SELECT study_id, labels FROM effective_decisions WHERE study_id = ANY(%s)", (released_ids,))}
        holdout = {r["study_id"]: frozenset(r["labels"]) for r in conn.execute(
            "SELECT study_id, labels FROM holdout_truth WHERE release_id = %s", (row["release_id"],))}
        ids = [*released, *holdout]
        verdicts: dict[str, list[Verdict]] = {}
        # Votes keep their judgement whole (consensus migration 004); older rows have the flat column.
        for r in conn.execute("SELECT study_id, coalesce(judgement->>'verdict', verdict) AS verdict FROM votes"
                              " WHERE counted AND study_id = ANY(%s)"
                              " ORDER BY study_id, cast_at, vote_id", (ids,)):
            verdicts.setdefault(r["study_id"], []).append(Verdict(r["verdict"]))
        suggested = {r["study_id"]: frozenset(r["suggested"]) for r in conn.execute(
            "SELECT study_id, suggested FROM assignments WHERE study_id = ANY(%s)", (ids,))}
    return ReleaseForAudit(row["release_id"], {"released": released, "holdout": holdout}, verdicts, suggested)


def cxr_truth(path: Path) -> dict[str, Truth]:
    """The CXR truth file; a lumbar one is refused (its audit is grades, not labels)."""
    truth = load_truth(path)
    if any(not isinstance(t, Truth) for t in truth.values()):
        raise ValueError(f"{path} holds lumbar grades; the truth audit covers CXR labels only")
    return truth  # type: ignore[return-value]


def truth_audit(release: ReleaseForAudit, truth: Mapping[str, Truth], seed: int = 0) -> dict:
    """The audit of one release, with a simulated fourth read per benchmark study."""
    label_ids = load_taxonomy("cxr").label_ids

    def fourth_objects(study_id: str) -> bool:
        reader = make_reader(f"fourth-{study_id}", "", random.Random(f"{seed}|fourth|{study_id}"), panel_seed=seed)
        vote = reader.judge(set(release.suggested.get(study_id, ())), truth[study_id], label_ids)
        return vote["verdict"] != Verdict.AGREE_ALL.value

    studies = audited_studies(release.benchmark, {sid: t.labels for sid, t in truth.items()}, release.verdicts,
                              fourth_objects)
    return {"release_id": release.release_id, **audit(studies, label_ids)}
