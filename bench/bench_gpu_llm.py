"""GPU throughput of the LLM path's model shape, measured: the input to the GPU count in deploy/README.md.

The prod overlay serves Phi-4 (14.7 B parameters) with vLLM. No model weights can be fetched here, but a
transformer's speed does not depend on its weights' values: the same shapes do the same arithmetic. So this
builds Phi-4's architecture (Phi3ForCausalLM: 40 layers, hidden 5120, 40 query / 10 key-value heads, MLP
17920, vocabulary 100352) with random BF16 weights on the GPU and times, with plain Hugging Face
transformers (no vLLM, no paged attention, no CUDA graphs unless said):

- prefill: whole prompts of the LLM path's mean call length, no prefix caching (every system-prompt token
  computed again: an upper bound on prefill cost), and the report's own tokens after a cached system
  prompt (what vLLM's prefix caching leaves to compute);
- decode: generated tokens per second at batch 64 / 128 / 256 on prompts of that length, eager with a
  dynamic cache, then at batch 256 with a static cache (transformers may compile it);

then the GPU-hours for 1M reports from the token counts of bench/bench_report_tokens.py (cl100k_base, exact:
1,105 prompt + 74 completion tokens per report over two calls). vLLM batches more tightly, reuses the system
prompts' KV (prefix caching) and replays CUDA graphs, so these figures are a floor on its throughput and the
GPU count they give is a ceiling.

Needs a CUDA GPU, torch and transformers (not project dependencies: run it with the GPU machine's Python).
Run: python3 bench/bench_gpu_llm.py [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

# The LLM path's calls, per report (bench/bench_report_tokens.py on 3,080 Open-i reports, cl100k_base).
EXTRACT_PROMPT, EXTRACT_COMPLETION = 424, 43
MAP_PROMPT, MAP_COMPLETION = 681, 31
CALL_PROMPT = (EXTRACT_PROMPT + MAP_PROMPT) // 2  # 552: one mean call
CALL_COMPLETION = (EXTRACT_COMPLETION + MAP_COMPLETION + 1) // 2  # 37
SYSTEM_PROMPTS = 939  # of the 1,105 prompt tokens: the two system prompts, the same for every report
CALL_SYSTEM = SYSTEM_PROMPTS // 2  # 469: the part of a mean call a prefix cache holds
CALL_NEW = CALL_PROMPT - CALL_SYSTEM  # 83: the report's own tokens in a mean call
REPORTS = 1_000_000


def phi4_config() -> Any:
    from transformers import Phi3Config

    # microsoft/phi-4's config.json, the serving-relevant fields.
    return Phi3Config(vocab_size=100352, hidden_size=5120, intermediate_size=17920, num_hidden_layers=40,
                      num_attention_heads=40, num_key_value_heads=10, max_position_embeddings=16384,
                      tie_word_embeddings=False, pad_token_id=0, bos_token_id=None, eos_token_id=None)


def build(torch: Any) -> Any:
    from transformers import AutoModelForCausalLM

    config = phi4_config()
    with torch.device("cuda"):  # weights made on the GPU: no 59 GB of CPU initialisation
        try:
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        except TypeError:  # older transformers
            model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16)
    return model.eval()


def timed(torch: Any, fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up, the GPU drained around each."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def prompts(torch: Any, batch: int, length: int) -> Any:
    return torch.randint(1000, 100000, (batch, length), device="cuda")


def prefill_rate(torch: Any, model: Any, batch: int) -> float:
    ids = prompts(torch, batch, CALL_PROMPT)

    def forward() -> Any:
        return model(input_ids=ids, use_cache=False, logits_to_keep=1)

    return batch * CALL_PROMPT / timed(torch, forward, 3)


def cached_prefill_rate(torch: Any, model: Any, batch: int) -> float | None:
    """New prompt tokens per second when the system prompt's keys and values are already cached (what
    vLLM's prefix caching does): the prefix is computed once, copied to every row, and only the report's
    own tokens are prefilled, attending to it. None when this transformers has no batch_repeat_interleave."""
    import copy

    prefix = model(input_ids=prompts(torch, 1, CALL_SYSTEM), use_cache=True).past_key_values
    if not hasattr(prefix, "batch_repeat_interleave"):
        return None
    prefix.batch_repeat_interleave(batch)
    new = prompts(torch, batch, CALL_NEW)
    times = []
    for attempt in range(4):
        cache = copy.deepcopy(prefix)  # the forward appends to it: a fresh copy each time, not timed
        torch.cuda.synchronize()
        start = time.perf_counter()
        model(input_ids=new, past_key_values=cache, use_cache=True, logits_to_keep=1)
        torch.cuda.synchronize()
        if attempt:  # the first is the warm-up
            times.append(time.perf_counter() - start)
        del cache
    return batch * CALL_NEW / statistics.median(times)


def decode_rate(torch: Any, model: Any, batch: int, **generate: Any) -> tuple[float, float]:
    """Generated tokens per second at `batch` after the prompt (generate for 1 token subtracted), and the
    seconds of one whole batch of calls."""
    ids = prompts(torch, batch, CALL_PROMPT)
    mask = torch.ones_like(ids)

    def run(tokens: int) -> Callable[[], Any]:
        return lambda: model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=tokens,
                                      min_new_tokens=tokens, do_sample=False, pad_token_id=0, **generate)

    one = timed(torch, run(1), 2)
    whole = timed(torch, run(CALL_COMPLETION), 2)
    return batch * (CALL_COMPLETION - 1) / (whole - one), whole


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--budget", type=float, default=330.0, help="seconds; later stages are skipped past it")
    parser.add_argument("--eager-only", action="store_true", help="skip the static-cache decode (a compile)")
    args = parser.parse_args()
    try:
        import torch
        import transformers
    except ImportError as missing:
        print(f"skipped: {missing.name} is not installed (run with the GPU machine's Python)")
        return 0
    if not torch.cuda.is_available():
        print("skipped: no CUDA GPU")
        return 0
    began = time.perf_counter()
    figures: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                               "transformers": transformers.__version__, "call_prompt": CALL_PROMPT,
                               "call_completion": CALL_COMPLETION}
    print(f"{figures['gpu']}, torch {torch.__version__}, transformers {transformers.__version__}", flush=True)
    model = build(torch)
    parameters = sum(p.numel() for p in model.parameters())
    figures["parameters"] = parameters
    print(f"Phi-4 shape, random BF16 weights: {parameters / 1e9:.2f} B parameters, "
          f"{torch.cuda.memory_allocated() / 2**30:.1f} GiB, built in {time.perf_counter() - began:.0f} s", flush=True)

    with torch.inference_mode():
        for batch in (4, 16, 64):
            rate = prefill_rate(torch, model, batch)
            figures[f"prefill_tok_s_b{batch}"] = rate
            print(f"  prefill, {batch} prompts × {CALL_PROMPT} tokens: {rate:,.0f} tokens/s", flush=True)
        for batch in (64, 256):
            try:
                cached = cached_prefill_rate(torch, model, batch)
            except Exception as error:  # reported; the other stages still run
                print(f"  cached prefill b{batch}: failed: {type(error).__name__}: {error}"[:300], flush=True)
                break
            if cached is None:
                print("  cached prefill: skipped (no batch_repeat_interleave in this transformers)")
                break
            figures[f"cached_prefill_tok_s_b{batch}"] = cached
            print(f"  prefill with the system prompt cached, {batch} calls × {CALL_NEW} new tokens after "
                  f"{CALL_SYSTEM}: {cached:,.0f} new tokens/s", flush=True)
            torch.cuda.empty_cache()
        # The static cache may be compiled once per batch size (minutes): batch 256 only.
        for label, generate, batches in (("eager", {}, (64, 128, 256)),
                                         ("static", {"cache_implementation": "static"},
                                          () if args.eager_only else (256,))):
            for batch in batches:
                if time.perf_counter() - began > args.budget:
                    print(f"  decode {label} b{batch}: skipped, past the {args.budget:.0f} s budget")
                    continue
                try:
                    rate, whole = decode_rate(torch, model, batch, **generate)
                except Exception as error:  # a stage that fails is reported, the figures before it kept
                    print(f"  decode {label} b{batch}: failed: {type(error).__name__}: {error}"[:300], flush=True)
                    break
                figures[f"decode_{label}_tok_s_b{batch}"] = rate
                print(f"  decode ({label} cache), batch {batch}: {rate:,.0f} generated tokens/s "
                      f"({batch} calls of {CALL_PROMPT} + {CALL_COMPLETION} tokens in {whole:.2f} s)", flush=True)
                torch.cuda.empty_cache()

    prefill = max(v for k, v in figures.items() if k.startswith("prefill"))
    cached = max((v for k, v in figures.items() if k.startswith("cached_prefill")), default=None)
    decodes = {k: v for k, v in figures.items() if k.startswith("decode")}
    if decodes:
        best = max(decodes, key=decodes.__getitem__)
        per_report = (2 * CALL_PROMPT) / prefill + (2 * CALL_COMPLETION) / decodes[best]
        hours = REPORTS * per_report / 3600
        figures.update(best_decode=best, gpu_seconds_per_report=per_report, gpu_hours_1m_reports=hours)
        print(f"one report (2 calls, {2 * CALL_PROMPT} prompt + {2 * CALL_COMPLETION} completion tokens, no "
              f"prefix caching): {per_report * 1000:.1f} ms of GPU → 1M reports ≈ {hours:.1f} GPU-hours "
              f"(prefill {prefill:,.0f} tok/s, decode {decodes[best]:,.0f} tok/s at {best})")
        if cached:
            with_prefix = (2 * CALL_NEW) / cached + (2 * CALL_COMPLETION) / decodes[best]
            figures.update(gpu_seconds_per_report_prefix_cached=with_prefix,
                           gpu_hours_1m_reports_prefix_cached=REPORTS * with_prefix / 3600)
            print(f"  with the system prompts cached ({2 * CALL_NEW} new prompt tokens per report): "
                  f"{with_prefix * 1000:.1f} ms → 1M reports ≈ {REPORTS * with_prefix / 3600:.1f} GPU-hours")
        for thinking in (400, 1000):
            reasoning = REPORTS * (per_report + 2 * thinking / decodes[best]) / 3600
            figures[f"gpu_hours_1m_reports_thinking{thinking}"] = reasoning
            print(f"  with {thinking} reasoning tokens per call (Phi-4-reasoning): ≈ {reasoning:.0f} GPU-hours")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
