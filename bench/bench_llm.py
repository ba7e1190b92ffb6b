"""Throughput of the extractor's LLM backend against a fake server with fixed latency.

With C calls in flight and L seconds per call, the ceiling is C / L reports per second; the
client layer (semaphore, retries, cache, validation) should get within 5% of it, i.e. its own
overhead must stay small next to a real model's latency. The fake server runs in a child
process so its CPU work does not compete with the client for one interpreter; its own CPU per
request is printed too, so a slow server is not mistaken for a slow client.

    .venv/bin/python -m bench.bench_llm --reports 2000 --concurrency 32 128 --latency 0.2
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import time

from services.common.llm import LlmClient, LlmConfig, MemoryLlmCache
from services.extractor.llm import LlmExtractor
from tests.support.fake_openai import FakeOpenAI

TARGET_RATIO = 0.95


def serve(latency: float, ports: multiprocessing.Queue, stop: multiprocessing.Event) -> None:
    """The fake server's process: report the port, serve until told to stop, then report its
    CPU seconds and the requests it served."""
    with FakeOpenAI(latency=latency) as server:
        ports.put(server.port)
        cpu_started = time.process_time()
        stop.wait()
        ports.put((time.process_time() - cpu_started, server.request_count))


def reports(n: int) -> list[str]:
    """Distinct reports (so nothing is served from the cache), realistic enough for the rules."""
    return [f"Study {i}. Small left pleural effusion. Possible right lower lobe pneumonia. No pneumothorax."
            for i in range(n)]


async def run(base_url: str, n: int, concurrency: int) -> tuple[float, float]:
    """(wall seconds, client CPU seconds) for `n` extractions at `concurrency`."""
    config = LlmConfig(service="bench", model="gpt-4o", base_url=base_url, api_key="bench",
                       concurrency=concurrency, timeout_s=30)
    client = LlmClient(config, MemoryLlmCache())
    extractor = LlmExtractor(client)
    # Connection set-up is not throughput: open all C connections before the clock starts.
    await asyncio.gather(*(extractor.extract(f"Warm-up {i}: cardiomegaly.") for i in range(concurrency)))
    started, cpu_started = time.perf_counter(), time.process_time()
    results = await asyncio.gather(*(extractor.extract(r) for r in reports(n)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    await client.aclose()
    assert all(len(findings) == 2 for findings in results)
    return elapsed, cpu


def measure(n: int, concurrency: int, latency: float) -> float:
    """Run `n` extractions at `concurrency` against a fresh server; print and return the ratio."""
    ports: multiprocessing.Queue = multiprocessing.Queue()
    stop = multiprocessing.Event()
    child = multiprocessing.Process(target=serve, args=(latency, ports, stop), daemon=True)
    child.start()
    try:
        base_url = f"http://127.0.0.1:{ports.get(timeout=60)}/v1"
        elapsed, cpu = asyncio.run(run(base_url, n, concurrency))
    finally:
        stop.set()
        server_cpu, served = ports.get(timeout=30)
        child.join(timeout=10)
    throughput = n / elapsed
    ceiling = concurrency / latency
    ratio = throughput / ceiling
    # The client's own CPU per call bounds throughput at 1/cpu on one core: on a busy machine
    # this, not the semaphore, is what keeps the ratio under 1.
    per_call = cpu / n
    print(f"C={concurrency}: reports={n} latency={latency}s elapsed={elapsed:.2f}s throughput={throughput:.1f}/s"
          f" ceiling C/L={ceiling:.1f}/s ratio={ratio:.3f} (target >= {TARGET_RATIO})"
          f" {'PASS' if ratio >= TARGET_RATIO else 'BELOW TARGET'}")
    print(f"  client CPU {per_call * 1000:.2f} ms/call (one-core bound {1 / per_call:.0f}/s);"
          f" server CPU {server_cpu / max(served, 1) * 1000:.2f} ms/request;"
          f" load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()
    for concurrency in args.concurrency:
        measure(args.reports, concurrency, args.latency)


if __name__ == "__main__":
    main()
