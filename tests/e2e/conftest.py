"""End-to-end fixtures: the whole system — broker, Postgres, S3 server and the five services as
separate OS processes — started exactly as `radcurate up` starts it."""

from __future__ import annotations

import asyncio
import inspect
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from radcurate.client import Gateway
from radcurate.stack import local
from tests.conftest import schema_dsn

CHROMIUM = "/usr/bin/chromium"
# Headless Debian Chromium as root on a closed network: no sandbox, no background connections.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
async def browser():
    """A real headless Chromium driven by playwright (its own browser downloads are not used)."""
    if not shutil.which(CHROMIUM):
        pytest.skip("Debian chromium is not installed (make setup installs it)")
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        await b.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    state_dir = tmp_path_factory.mktemp("stack")
    state = local.up(state_dir)
    yield state
    local.down(state_dir)


def query(state: dict, schema: str, sql: str, params: tuple = ()) -> list[tuple]:
    """Read a service's own tables (as the superuser: tests may look where services may not)."""
    with psycopg.connect(schema_dsn(state["postgres"]["admin_dsn"], schema)) as conn:
        return conn.execute(sql, params).fetchall()


def scalar(state: dict, schema: str, sql: str, params: tuple = ()) -> int:
    return query(state, schema, sql, params)[0][0]


async def eventually(check, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def print_log_tails(state_dir: Path, lines: int = 60) -> None:
    """Print the end of every log of a stack (pytest shows it under the failed test's captured
    output): a stack test that times out otherwise says only which wait ran out, and its state
    dir, logs included, is gone by the time anyone looks."""
    for log in sorted((state_dir / "logs").glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        print(f"----- {log.name} (last {len(tail)} lines) -----", *tail, sep="\n")


async def at_least(api: Gateway, key: str, value: int, protocol: str | None = None) -> bool:
    """Whether the funnel's `key` count (of `protocol`'s studies; all, by default) reached `value`."""
    return (await api.progress(protocol))["funnel"][key] >= value


async def sign_in_reader(page, stack: dict, token: str, grace_ms: int | None = None) -> None:
    """Open the reviewer page and sign in with `token`, until the page is ready. `grace_ms`
    shortens the undo grace period before the first vote (None: the page's own)."""
    await page.goto(stack["gateway_url"] + "/")
    if grace_ms is not None:
        await page.evaluate(f"window.__rc.graceMs = {grace_ms}")
    await page.get_by_label("Your access token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await wait_for_js(page, "window.__rc && window.__rc.ready")


async def wait_for_js(page, expression: str, timeout: float = 30) -> None:
    """Poll a JavaScript expression until it is truthy. Not `page.wait_for_function`: that builds
    its predicate with eval inside the page, which the gateway's Content-Security-Policy (rightly)
    forbids; `page.evaluate` runs through the DevTools protocol, outside the page's CSP."""
    deadline = time.monotonic() + timeout
    while not await page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def admin(stack):
    """The admin's API client on the module's stack."""
    api = Gateway(stack["gateway_url"], stack["admin_token"])
    yield api
    await api.aclose()


async def sample_for_new_panel(admin: Gateway, readers: list[str], n: int) -> dict[str, str]:
    """Create `readers` as reviewers, wait until every ingested study has suggestions, and ask for
    a sample of `n` studies read by all of them (three readers a study); their tokens."""
    tokens = {r: await admin.create_user(r, "reviewer") for r in readers}

    async def suggested() -> bool:
        f = (await admin.progress())["funnel"]
        return f["suggested"] >= f["ingested"]

    await eventually(suggested, "suggestions")
    await admin.request_sampling({"n": n, "readers_per_study": len(readers), "seed": 0}, panel=readers)
    return tokens
