"""Simulated radiologists: a panel of readers who vote through the gateway's HTTP API.

Each reader looks at a study's hidden truth through their own imperfect eyes, then compares what
they saw with the AI-suggested labels: identical => agree_all, one label off => agree_mostly with
the correction, more => disagree. Nothing here knows the funnel's published figures: the share of
accepted studies emerges from the reports, the extractor, the sampler and these readers.

The reader model (`ReaderModel`, every part a parameter with its default's source or reasoning):
- skill heterogeneity: a reader's sensitivity and specificity differ per reader and per label;
- automation bias: a reader whose own look disagrees with an AI-suggested label goes along with
  the AI with some probability, more often on subtle findings;
- correlated errors: on a hard case every reader is misled by the same image, so errors are
  correlated across the study's readers (more strongly on subtle findings);
- time per read grows with the number of findings and with subtle ones.
It is pure given a reader's random stream, so `radcurate plan` runs the same model offline.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from statistics import NormalDist

from radcurate import progress
from radcurate.client import Gateway, GatewayError, ReaderClient
from radcurate.simulate_lumbar import LumbarTruth, grade_study, lumbar_truth

SECONDS_PER_READ = (25.0, 0.5)  # lognormal: median seconds, sigma (lumbar reads take 4x)
# Absent findings that are hard to exclude on a radiograph: an AI suggestion of one of these is
# "subtle" when wrong (readers cannot easily prove it is not there). Devices never are.
HARD_TO_EXCLUDE = frozenset({"atelectasis", "consolidation", "pulmonary_edema", "lung_nodule_mass",
                             "interstitial_lung_disease", "mediastinal_hilar_abnormality", "emphysema"})
LUMBAR_MISS_AT_AVERAGE_SKILL = 0.06  # a lumbar grade slips one step this often for an average reader
_NORMAL = NormalDist()


@dataclass(frozen=True)
class ReaderModel:
    """How simulated radiologists read. Defaults, with their source or reasoning:

    sensitivity / subtle_sensitivity (0.90 / 0.55): per-pathology sensitivities of board-certified
      radiologists against a consensus reference on chest radiographs spread from about 0.5 to 0.9
      (Rajpurkar et al., CheXNeXt, PLoS Med 2018); conspicuous findings sit at the top of that
      range, subtle ones (small pneumothorax, faint nodule) near the bottom.
    false_positive_rate (0.01): per absent label per read, i.e. 99 % per-label specificity, the
      order of the radiologists' specificities in the same study, on a 12-label checklist.
    reader_sd (0.5) and label_sd (0.3): logit-scale spread of a reader's overall skill and of
      their skill on one label; 0.5 moves an average 0.90 sensitivity to 0.85-0.94 for one reader
      in three, the spread seen between CheXNeXt's nine radiologists.
    automation_bias / automation_bias_subtle (0.30 / 0.55): the chance a reader keeps an
      AI-suggested label their own look would reject. Dratsch et al. (Radiology 2023) found
      readers' accuracy falling from about 80 % to 20-45 % when the AI's suggestion was wrong;
      we take a milder effect for a label checklist, stronger where a finding is hard to exclude.
    unsuggested_factor (0.90): sensitivity is multiplied by this for a true finding the AI did not
      suggest (anchoring / satisfaction of search: readers verify a list more than they search).
    correlation / hard_correlation (0.2 / 0.6): correlation of readers' latent errors on the same
      study and label (Gaussian copula, marginals unchanged). A subtle finding is hard for everyone:
      that is what makes a case hard, and why three readers can agree and all be wrong.
    seconds_median (25), seconds_per_label (0.25), seconds_subtle (0.5), seconds_sigma (0.5),
      speed_sd (0.25): a normal CXR takes an experienced reader about half a minute; each further
      finding a quarter more, a subtle one half more; lognormal per read, and per reader speed.
    """

    sensitivity: float = 0.90
    subtle_sensitivity: float = 0.55
    false_positive_rate: float = 0.01
    reader_sd: float = 0.5
    label_sd: float = 0.3
    automation_bias: float = 0.30
    automation_bias_subtle: float = 0.55
    unsuggested_factor: float = 0.90
    correlation: float = 0.2
    hard_correlation: float = 0.6
    seconds_median: float = 25.0
    seconds_per_label: float = 0.25
    seconds_subtle: float = 0.5
    seconds_sigma: float = 0.5
    speed_sd: float = 0.25

    def __post_init__(self) -> None:
        probabilities = ("sensitivity", "subtle_sensitivity", "false_positive_rate", "automation_bias",
                         "automation_bias_subtle", "unsuggested_factor", "correlation", "hard_correlation")
        for name in probabilities:
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


DEFAULT_MODEL = ReaderModel()


@dataclass(frozen=True)
class Truth:
    labels: frozenset[str]
    subtle: frozenset[str]
    study_id: str = ""  # the key of the errors all of a study's readers share


def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


@lru_cache(maxsize=1 << 16)
def shared_latent(panel_seed: int, study_id: str, label: str) -> float:
    """The standard-normal error every reader of this study shares for this label (a hard image):
    a hash of the three, so any reader, in any process and order, draws the same value."""
    digest = hashlib.blake2b(f"{panel_seed}|{study_id}|{label}".encode(), digest_size=8).digest()
    uniform = (int.from_bytes(digest, "big") + 0.5) / 2**64
    return _NORMAL.inv_cdf(uniform)


@dataclass
class SimReader:
    user_id: str
    token: str
    miss_rate: float  # a lumbar grade slips one step at this rate; set from `ability` by `make_reader`
    rng: random.Random
    model: ReaderModel = DEFAULT_MODEL
    ability: float = 0.0  # logit-scale: + raises sensitivity and specificity on every label
    speed: float = 1.0  # multiplies the time per read
    panel_seed: int = 0
    label_ability: dict[str, float] = field(default_factory=dict)  # drawn once per label, lazily

    def _label_ability(self, label: str) -> float:
        if label not in self.label_ability:
            draw = random.Random(f"{self.panel_seed}|{self.user_id}|{label}").gauss(0.0, 1.0)
            self.label_ability[label] = self.model.label_sd * draw
        return self.label_ability[label]

    def sensitivity(self, label: str, subtle: bool) -> float:
        base = self.model.subtle_sensitivity if subtle else self.model.sensitivity
        return _sigmoid(_logit(base) + self.ability + self._label_ability(label))

    def false_positive_rate(self, label: str) -> float:
        return _sigmoid(_logit(self.model.false_positive_rate) - self.ability - self._label_ability(label))

    def perceive(self, truth: Truth, label_ids: Iterable[str], suggested: Iterable[str] = ()) -> set[str]:
        """The labels this reader ends up standing behind for the study."""
        m, suggested = self.model, frozenset(suggested)
        seen = set()
        for label in label_ids:
            present = label in truth.labels
            subtle = label in truth.subtle if present else label in HARD_TO_EXCLUDE
            rho = m.hard_correlation if subtle else m.correlation
            z = math.sqrt(rho) * shared_latent(self.panel_seed, truth.study_id, label) \
                + math.sqrt(1 - rho) * self.rng.gauss(0.0, 1.0)
            if present:
                p_see = self.sensitivity(label, subtle) * (1.0 if label in suggested else m.unsuggested_factor)
                own = z < _NORMAL.inv_cdf(min(max(p_see, 1e-12), 1 - 1e-12))
            else:
                own = z > _NORMAL.inv_cdf(1 - min(max(self.false_positive_rate(label), 1e-12), 1 - 1e-12))
            if label in suggested and not own:
                own = self.rng.random() < (m.automation_bias_subtle if subtle else m.automation_bias)
            if own:
                seen.add(label)
        return seen

    def seconds(self, truth: Truth, suggested: Iterable[str]) -> float:
        """Time for one read: more findings and subtle ones take longer."""
        m = self.model
        findings = max(len(truth.labels), len(frozenset(suggested)))
        median = m.seconds_median * self.speed * (1 + m.seconds_per_label * findings) \
            * (1 + m.seconds_subtle * bool(truth.subtle))
        return median * self.rng.lognormvariate(0.0, m.seconds_sigma)

    def judge(self, suggested: set[str], truth: Truth, label_ids: Sequence[str]) -> dict:
        seen = self.perceive(truth, label_ids, suggested)
        added, removed = sorted(seen - suggested), sorted(suggested - seen)
        wrong = len(added) + len(removed)
        verdict = "agree_all" if wrong == 0 else "agree_mostly" if wrong == 1 else "disagree"
        return {"verdict": verdict, "added_labels": added, "removed_labels": removed,
                "seconds_spent": round(self.seconds(truth, suggested), 1), "comment": ""}


def make_reader(user_id: str, token: str, rng: random.Random, model: ReaderModel = DEFAULT_MODEL,
                panel_seed: int = 0) -> SimReader:
    """A reader with their own skill and speed, drawn from the model's spread."""
    ability = rng.gauss(0.0, model.reader_sd)
    speed = math.exp(rng.gauss(0.0, model.speed_sd))
    return SimReader(user_id, token, miss_rate_for(ability), random.Random(rng.random()), model, ability, speed,
                     panel_seed)


def miss_rate_for(ability: float) -> float:
    """The lumbar slip rate of a reader of this ability (the average reader slips 6 % of grades)."""
    return _sigmoid(_logit(LUMBAR_MISS_AT_AVERAGE_SKILL) - ability)


def ability_for(miss_rate: float) -> float:
    """Inverse of `miss_rate_for`: rebuilds a saved reader's skill."""
    return _logit(LUMBAR_MISS_AT_AVERAGE_SKILL) - _logit(miss_rate)


def load_truth(path: Path) -> dict[str, Truth | LumbarTruth]:
    """The hidden truth per study: labels (CXR) or grades and points (lumbar, rows with `grades`)."""
    truth: dict[str, Truth | LumbarTruth] = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                truth[row["study_id"]] = lumbar_truth(row) if "grades" in row else \
                    Truth(frozenset(row["labels"]), frozenset(row.get("subtle", [])), row["study_id"])
    return truth


async def register_panel(admin: Gateway, n_readers: int, seed: int, prefix: str = "reader",
                         model: ReaderModel = DEFAULT_MODEL) -> list[SimReader]:
    """Create the panel's reviewer accounts; each simulated reader gets its own skill."""
    rng = random.Random(seed)
    readers = []
    for i in range(1, n_readers + 1):
        user_id = f"{prefix}-{i:02d}"
        token = await admin.create_user(user_id, "reviewer", f"Simulated radiologist {i}")
        readers.append(make_reader(user_id, token, rng, model, panel_seed=seed))
    return readers


async def read_worklist(api: Gateway, reader: SimReader, truth: dict[str, Truth],
                        on_vote: Callable[[], None] | None = None) -> int:
    """Vote on every open assignment of one reader, through the gateway's HTTP API on the
    reader's own kept-alive connection; returns the number of votes cast."""
    me = api.reader(reader.token)
    votes = 0
    try:
        a = await me.next_assignment()
        while a is not None:
            if a.get("protocol") == LUMBAR:
                body = await grade(me, reader, a, truth[a["study_id"]])
            else:
                suggested = {s["label_id"] for s in a["suggested"]}
                body = reader.judge(suggested, truth[a["study_id"]], a["label_ids"])
            # The vote's answer carries the next read (one request per study, not two); when it
            # cannot (`next_assignment` absent), the reader asks for it as before.
            voted = await cast_vote(me, a["assignment_id"], body, with_next=True)
            votes += 1
            if on_vote:
                on_vote()
            a = voted["next_assignment"] if "next_assignment" in voted else await me.next_assignment()
    finally:
        await me.aclose()
    return votes


LUMBAR = "lumbar-grading"


async def grade(me: Gateway | ReaderClient, reader: SimReader, a: dict, truth: LumbarTruth) -> dict:
    """A lumbar read: every cell graded (a grade slips one step at the reader's `miss_rate`), a
    point near each true one, on the series the gateway lists for the study."""
    series = (await me.request("GET", a["series_url"])).json()
    seconds = reader.rng.lognormvariate(0, SECONDS_PER_READ[1]) * 4 * SECONDS_PER_READ[0] * reader.speed
    return {"grades": grade_study(truth, series, reader.miss_rate, reader.rng), "seconds_spent": round(seconds, 1),
            "comment": ""}


CONFIRMATION_TYPE = "https://radcurate.dev/problems/confirmation-required"


async def cast_vote(me: Gateway | ReaderClient, assignment_id: str, body: dict, *, with_next: bool = False) -> dict:
    """Vote; when the gateway asks to confirm an omission, the simulated reader stands by what it
    saw (it judged from the truth, as a radiologist judges from the image) and confirms.
    `with_next`: the answer carries the reader's next assignment (`Gateway.vote`)."""
    key = str(uuid.uuid4())
    try:
        return await me.vote(assignment_id, body, idempotency_key=key, with_next=with_next)
    except GatewayError as exc:
        if exc.status != 409 or exc.problem.get("type") != CONFIRMATION_TYPE:
            raise
    return await me.vote(assignment_id, {**body, "confirm": True}, idempotency_key=key, with_next=with_next)


async def run_panel(api: Gateway, readers: list[SimReader], truth: dict[str, Truth]) -> int:
    """All readers read at once, each through their own worklist (`api` a curator's, for the
    progress total: the panel's open reads)."""
    with progress.current().task("simulated reads", total=await _open_reads(api, readers), unit="votes") as task:
        counts = await asyncio.gather(*(read_worklist(api, r, truth, task.advance) for r in readers))
    return sum(counts)


async def _open_reads(api: Gateway, readers: list[SimReader]) -> int | None:
    ids = {r.user_id for r in readers}
    try:
        return sum(r["open"] for r in (await api.progress())["readers"] if r["reader_id"] in ids)
    except GatewayError:
        return None  # not a curator's client: progress without a total
