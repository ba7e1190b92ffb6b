"""CPU of the CXR dataset card's agreement figures (`CurationProtocol.card_agreement`), the part of
a release computed after the last decision (issue 15 §2, the release chain), and a digest of its
output so two trees can be compared for identical results.

Synthetic decided studies, 3 readers each out of a panel of 17, ~1.4 studies per patient, the
CXR taxonomy's labels; the same seed gives the same rows on every tree.

Run (this tree):  PYTHONPATH=$PWD .venv/bin/python bench/bench_card_agreement.py [--studies 1000]
Compare in back-to-back pairs against main (same command from main's worktree).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import os
import pstats
import random
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the consensus service runs it (services/consensus)

from services.common.protocols.cxr import PROTOCOL


def rows(n: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    labels = list(PROTOCOL.taxonomy().label_ids)
    studies, votes = [], []
    for i in range(n):
        sid = f"S{i:05d}"
        suggested = sorted(rng.sample(labels, rng.choice([0, 0, 1, 1, 1, 2, 2, 3])))
        studies.append({"study_id": sid, "patient_id": f"P{int(i / 1.4):05d}", "suggested": suggested,
                        "accepted": rng.random() < 0.7, "labels": suggested, "difficulty": "easy"})
        for r in rng.sample(range(17), 3):
            removed = [x for x in suggested if rng.random() < 0.15]
            added = [x for x in labels if x not in suggested and rng.random() < 0.03]
            verdict = "agree_all" if not (added or removed) else rng.choice(["agree_mostly", "disagree"])
            votes.append({"study_id": sid, "reader_id": f"R{r}", "verdict": verdict, "added_labels": added,
                          "removed_labels": removed, "seconds_spent": rng.uniform(5, 60)})
    return studies, votes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    studies, votes = rows(args.studies)
    card = PROTOCOL.card_agreement(studies, votes)  # warm: imports, first-call costs
    digest = hashlib.sha256(json.dumps(card, indent=2, sort_keys=True).encode()).hexdigest()[:16]
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(PROTOCOL.card_agreement, studies, votes)
        pstats.Stats(profile).sort_stats("tottime").print_stats(15)
    cpu = []
    for _ in range(args.repeat):
        t0 = time.process_time()
        PROTOCOL.card_agreement(studies, votes)
        cpu.append(time.process_time() - t0)
    cpu.sort()
    print(f"studies={args.studies} card_agreement CPU ms: min {1e3 * cpu[0]:.1f} median "
          f"{1e3 * cpu[len(cpu) // 2]:.1f}  digest {digest}  load {'/'.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
