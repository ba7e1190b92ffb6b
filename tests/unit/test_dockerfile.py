"""The Dockerfile builds small, non-root, reproducible service images (checked statically:
there is no Docker engine in CI)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"extractor", "mapper", "sampler", "consensus", "gateway"}
COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|cmake|python3-dev|libpq-dev|uv)\b")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) pairs with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            out.append((keyword.upper(), " ".join(args.split())))
    return out


def parse() -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the build stages, with ${ARG} resolved in FROM lines."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, rest in instructions((ROOT / "Dockerfile").read_text()):
        if keyword == "FROM":
            image, _, alias = rest.partition(" AS ")
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
            stages.append(Stage(base=image.strip(), name=alias.strip() or None))
        elif not stages and keyword == "ARG":
            key, _, default = rest.partition("=")
            args[key] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def final() -> Stage:
    return parse()[1][-1]


def test_image_is_multi_stage_on_a_slim_pinned_python_base() -> None:
    _, stages = parse()
    assert len(stages) >= 2
    for stage in stages:
        repo, _, tag = stage.base.rpartition(":")
        assert repo and tag and tag != "latest", f"{stage.base} is not pinned"
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", final().base)


def test_dependencies_come_from_the_lock_file_before_the_source_is_copied() -> None:
    _, stages = parse()
    build = next(s for s in stages if any("uv sync" in a for a in s.all("RUN")))
    steps = [(kw, a) for kw, a in build.instructions if kw in {"RUN", "COPY"}]
    syncs = [i for i, (kw, a) in enumerate(steps) if kw == "RUN" and "uv sync" in a]
    assert len(syncs) == 2
    first, second = (steps[i][1] for i in syncs)
    assert "--frozen" in first and "--no-dev" in first and "--no-install-project" in first
    assert "--frozen" in second and "--no-dev" in second and "--extra" not in second
    copies_between = [a for kw, a in steps[syncs[0] + 1 : syncs[1]] if kw == "COPY"]
    assert any("services" in a for a in copies_between) and any("radcurate" in a for a in copies_between)
    assert not any(kw == "COPY" and ("services" in a or a.startswith(". ")) for kw, a in steps[: syncs[0]])


def test_final_stage_runs_as_uid_10001_without_build_tools() -> None:
    stage = final()
    assert stage.all("USER")[-1].split(":")[0] == "10001"
    for run in stage.all("RUN"):
        assert "apt-get install" not in run and "pip install" not in run, run
        assert not COMPILERS.search(run.replace("useradd", "").replace("groupadd", "")), run
    for copy in stage.all("COPY"):
        assert "--from=uv" not in copy and "/uv" not in copy, "uv stays in the build stage"


def test_final_stage_never_writes_bytecode_on_a_read_only_root() -> None:
    env = " ".join(final().all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "/app/.venv/bin" in env


def test_service_build_arg_selects_the_default_command() -> None:
    stage = final()
    assert "SERVICE" in stage.all("ARG")
    checks = " ".join(stage.all("RUN"))
    assert all(s in checks for s in SERVICES), "an unknown SERVICE fails the build"
    (cmd,) = stage.all("CMD")
    assert "services.${SERVICE}" in cmd and cmd.startswith("[")
    assert "8080" in stage.all("EXPOSE")


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    ignored = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")}
    assert {".git", ".venv", "tests"} <= ignored
    assert not ignored & {"uv.lock", "pyproject.toml", "README.md", "services", "radcurate"}
