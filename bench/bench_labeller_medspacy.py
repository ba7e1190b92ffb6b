"""The offline labeller against medspaCy (ConText + sectionizer on a blank spaCy pipeline), on real reports.

Why this exists: issue 10 asks to prefer a maintained clinical NLP library over a home-made NegEx
unless the home-made one measures better on real reports. This script measures both the same way
`make eval-labels` does: the Open-i development set (NegBio gold, `$RADCURATE_OPENI_DIR` or
`../shared/data/openi-dev/`), the six labels whose definitions line up, and reports per CPU-second.

medspaCy is not a project dependency (it pins spaCy 3.7 and therefore numpy < 2, below this
project's lock), so run it from a separate virtual environment:

    uv venv /tmp/medspacy && uv pip install --python /tmp/medspacy/bin/python medspacy==1.3.1 'numpy<2' pyyaml pydantic
    PYTHONPATH=$PWD /tmp/medspacy/bin/python bench/bench_labeller_medspacy.py

medspaCy gets the taxonomy's own specific synonym phrases as target rules (loose descriptors are
left out, as are phrases with a "..." gap: target rules have no gap syntax) and its default ConText
rules; it needs no downloaded model. Its hedged mentions are scored both ways (counted, not counted), as
ConText does not grade hedges.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from radcurate.eval_labels import (
    OPENI_COLUMNS,
    OPENI_STATED_CONFIDENCE,
    evaluate,
    load_openi,
    openi_dir,
)
from radcurate.eval_labels import predict as rules_predict
from services.common.taxonomy import Taxonomy, load_taxonomy

# medspaCy section categories that describe the request, not the image
SKIPPED_SECTIONS = frozenset({
    "indication", "history_of_present_illness", "past_medical_history", "reason_for_examination",
    "comparison", "technique",
})


def medspacy_predictor(taxonomy: Taxonomy, count_uncertain: bool) -> Callable[..., tuple[set[str], set[str]]]:
    from loguru import logger  # PyRuSH logs every token at DEBUG

    logger.remove()
    import medspacy
    from medspacy.ner import TargetRule

    nlp = medspacy.load(medspacy_enable=["medspacy_target_matcher", "medspacy_context", "medspacy_sectionizer"])
    nlp.add_pipe("sentencizer", first=True)  # spaCy's rule splitter: PyRuSH is 8x slower here
    nlp.get_pipe("medspacy_target_matcher").add(
        [TargetRule(phrase, label.id) for label in taxonomy.labels for phrase in label.synonyms
         if "..." not in phrase]
    )

    def predict(report: str, _taxonomy: Taxonomy, _min_confidence: float = 0.0) -> tuple[set[str], set[str]]:
        labels: set[str] = set()
        for ent in nlp(report).ents:
            if (ent._.section_category or "").lower() in SKIPPED_SECTIONS:
                continue
            if ent._.is_negated or ent._.is_historical or ent._.is_hypothetical or ent._.is_family:
                continue
            if ent._.is_uncertain and not count_uncertain:
                continue
            excluded = taxonomy.get(ent.label_).exclusion_pattern
            if excluded is not None and excluded.search(ent.sent.text):
                continue
            labels.add(ent.label_)
        return labels, set()

    return predict


def per_cpu_second(predict: Callable[..., object], rows: list[dict], taxonomy: Taxonomy) -> float:
    started = time.process_time()
    for row in rows:
        predict(row["report"], taxonomy)
    return len(rows) / (time.process_time() - started)


def main() -> int:
    import radcurate.eval_labels as eval_labels

    folder = openi_dir()
    if not (folder / "reports.csv").is_file():
        print(f"Open-i set not found at {folder}: set $RADCURATE_OPENI_DIR")
        return 1
    taxonomy = load_taxonomy()
    rows = load_openi(Path(folder))
    contenders = {
        "rules (this project)": (rules_predict, OPENI_STATED_CONFIDENCE),
        "medspaCy, hedged not counted": (medspacy_predictor(taxonomy, count_uncertain=False), 0.0),
        "medspaCy, hedged counted": (medspacy_predictor(taxonomy, count_uncertain=True), 0.0),
    }
    print(f"{'backend':32} {'macro F1':>8} {'even':>6} {'odd':>6}"
          f"  per-label F1 ({', '.join(OPENI_COLUMNS)})  reports/CPU-s")
    for name, (predict, floor) in contenders.items():
        eval_labels.predict = predict  # evaluate() calls the module's predict
        scores = [evaluate(subset, taxonomy, OPENI_COLUMNS, floor) for subset in (
            rows, [r for r in rows if r["uid"] % 2 == 0], [r for r in rows if r["uid"] % 2 == 1])]
        per_label = " ".join(f"{s['f1']:.2f}" for s in scores[0]["per_label"].values())
        speed = per_cpu_second(predict, rows, taxonomy)
        print(f"{name:32} {scores[0]['macro_f1']:8.3f} {scores[1]['macro_f1']:6.3f} {scores[2]['macro_f1']:6.3f}"
              f"  {per_label}  {speed:,.0f}")
    eval_labels.predict = rules_predict
    return 0


if __name__ == "__main__":
    sys.exit(main())
