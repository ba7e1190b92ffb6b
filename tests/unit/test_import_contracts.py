"""The boundaries in pyproject.toml's import-linter contracts hold, and a break of each fails them.

The services talk through events, so one importing another's module is a bug even when it works;
protocol plug-ins live in services/common and must not reach into a service; services never
import the CLI. `make check` runs the same contracts on the real tree.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", "--config", str(root / "pyproject.toml")],
                          cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)


def status_of(contract: str, report: str) -> str:
    """KEPT or BROKEN: the first status after the contract's name (lint-imports wraps long lines)."""
    found = re.search(re.escape(contract) + r".*? (KEPT|BROKEN)\b", " ".join(report.split()))
    assert found, report
    return found.group(1)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the packages and the contracts, to break on purpose."""
    skip = shutil.ignore_patterns("__pycache__", "static", "*.sql", "*.md", "*.yaml")
    for package in ("services", "radcurate"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=skip)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_repository_keeps_its_import_contracts():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "source", "contract"), [
    ("services/extractor/peek.py", "from services.consensus import repo\n",
     "A service imports only itself and services.common"),
    ("services/consensus/cli_helper.py", "import radcurate.client\n",
     "services never import radcurate (the CLI)"),
    ("services/common/protocols/cxr/shortcut.py", "from services.gateway import problems\n",
     "Protocol plug-ins and services.common import no service"),
    ("services/common/protocols/lumbar/borrow.py", "from services.common.protocols.cxr import scoring\n",
     "Protocol packages are independent of each other"),
    ("radcurate/peek.py", "from services.consensus import repo\n",
     "The CLI never reaches into a service's tables or handlers"),
    ("radcurate/bulk_peek.py", "from services.gateway.ingest import ingest_study\n",
     "The CLI never reaches into a service's tables or handlers"),
])
def test_a_deliberate_boundary_violation_breaks_its_contract(tree: Path, module: str, source: str, contract: str):
    clean = lint_imports(tree)  # the copy is as clean as the repository
    assert clean.returncode == 0 and status_of(contract, clean.stdout) == "KEPT", clean.stdout
    (tree / module).write_text(source)
    result = lint_imports(tree)
    assert result.returncode != 0
    assert status_of(contract, result.stdout) == "BROKEN", result.stdout
    assert "1 broken" in result.stdout, result.stdout  # that contract, and only that one
