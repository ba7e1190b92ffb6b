"""The gateway's SQL lives in services/gateway/repo; routes keep the HTTP concerns only.

A string constant in a route module that reads like a SQL statement fails this test, naming the
module and line, so a new query goes to the repository module of its area instead.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "services" / "gateway"
ROUTES = sorted((ROOT / "api" / "routes").glob("*.py"))
# Other gateway modules whose SQL has moved too.
MOVED = [ROOT / n for n in ("access.py", "auth.py", "app.py", "handlers.py", "ingest.py", "pacs_imports.py")]
SQL = re.compile(r"\b(SELECT\s|INSERT\s+INTO\b|UPDATE\s+\w+\s+SET\b|DELETE\s+FROM\b)")


def sql_literals(source: str) -> list[tuple[int, str]]:
    """(line, text) of every string constant (f-string parts included) that looks like SQL."""
    return [(node.lineno, node.value) for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value)]


def test_the_check_sees_sql_in_plain_and_f_strings() -> None:
    source = 'a = "SELECT * FROM t"\nb = f"UPDATE t SET x = {1}"\nc = "delete from t"\nd = "Select the release"\n'
    assert [line for line, _ in sql_literals(source)] == [1, 2]


@pytest.mark.parametrize("path", ROUTES + MOVED,
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_sql_outside_the_repository(path: Path) -> None:
    found = sql_literals(path.read_text())
    assert not found, f"{path.relative_to(ROOT)} has SQL; move it to services/gateway/repo: {found}"
