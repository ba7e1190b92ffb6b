"""A service imports at start only what the path it takes needs: openai (~0.8 s of CPU) only
where an LLM backend is configured, pydicom (~0.6 s) only in the gateway, whose ingest reads
DICOM (consensus imports it on its first release check, the protocols when they write a dataset
card). Checked in a fresh interpreter, as a service process starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LLM_CLIENT = {"openai", "httpx2", "aiohttp"}


def loaded_after(*imports: str) -> list[set[str]]:
    """Top-level modules loaded after each import in turn, in one fresh interpreter on this checkout.
    After each, every registered protocol is looked up too, as every service's handlers do at start."""
    code = ("import importlib, json, sys\nseen = []\n"
            f"for name in {list(imports)!r}:\n"
            "    importlib.import_module(name)\n"
            "    from services.common import protocols\n"
            "    for protocol in protocols.names():\n"
            "        protocols.get(protocol).taxonomy()\n"
            "    seen.append(sorted({m.split('.')[0] for m in sys.modules}))\n"
            "print(json.dumps(seen))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         check=True, capture_output=True, text=True).stdout
    return [set(names) for names in json.loads(out)]


def test_services_start_without_the_llm_client_or_pydicom() -> None:
    """Imported in turn: the four consumers first (none of these libraries), then the gateway (pydicom)."""
    seen = loaded_after("services.extractor.app", "services.mapper.app", "services.sampler.app",
                        "services.consensus.app", "services.gateway.app")
    consumers, with_gateway = seen[3], seen[4]
    unused = LLM_CLIENT | {"pydicom", "httpx"}  # httpx: only the gateway's DICOMweb client uses it
    assert not consumers & unused, sorted(consumers & unused)
    assert not with_gateway & LLM_CLIENT, sorted(with_gateway & LLM_CLIENT)


def test_the_llm_backends_still_bring_their_client() -> None:
    """Where the LLM is the backend its modules import openai: the check above can fail. (Which of
    openai's HTTP stacks come with it depends on what is installed: aiohttp only where some other
    package brought it, so only openai itself is required here.)"""
    (after,) = loaded_after("services.extractor.llm")
    assert "openai" in after
