"""One Postgres LISTEN connection per process, shared by every waiter on a channel.

A waiter waits for a key (a notification's payload, e.g. a release id) until a condition it reads
holds. Each waiter holding its own LISTEN connection costs Postgres a backend per waiter (100
researchers waiting exhaust `max_connections`); here one connection listens and the waiters are
futures keyed by payload.

Never missing a notification: a waiter registers its future *before* it reads, and reads only
while the LISTEN is up, so a commit after its read notifies a registered future. When the
connection is lost, notifications sent while it is down are lost with it: every waiter is woken
and reads again once the LISTEN is back (its read then comes after the new LISTEN, so whatever was
committed in the gap is in it). Postgres delivers a notification only when the transaction that
sent it commits, so a woken waiter's read sees what was notified.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

T = TypeVar("T")

# Reconnecting after a lost connection: first at once, then backing off to this (a Postgres that
# is down is asked a few times a second at most).
MAX_BACKOFF_S = 2.0


class Listener:
    """LISTEN on `channel` over one connection of its own (opened on the first wait, kept until
    `close`), waking the waiters registered for each notification's payload."""

    def __init__(self, dsn: str, channel: str, *, application_name: str = "radcurate-listener") -> None:
        self._dsn, self._channel, self._application_name = dsn, channel, application_name
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._up = asyncio.Event()  # set while the LISTEN is in place
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # One read in flight per key, shared by the waiters registered before it started (`_read`),
        # with the number it started at; `_seq` numbers registrations and reads in one order.
        self._reads: dict[str, tuple[int, asyncio.Future[Any]]] = {}
        self._seq = 0
        self.reads = 0  # reads made (tests: woken waiters of one key share one)
        self.connects = 0  # LISTEN connections made, the first and every reconnect (tests, logs)

    async def wait(self, key: str, read: Callable[[], Awaitable[T]], done: Callable[[T], bool],
                   seconds: float) -> T:
        """`read()`'s result as soon as `done` holds for it, else as it is after `seconds` (read
        again at the end). Reads again each time `key` is notified or the connection was lost.
        Waiters of one key pass the same read: a read that started after a waiter registered
        answers it as well as its own, so the waiters a notification wakes share one read."""
        deadline = time.monotonic() + seconds
        while True:
            woken, registered = self._register(key)
            try:
                left = deadline - time.monotonic()
                if left > 0:
                    # The LISTEN in place before the read. A Postgres that stays away past the
                    # deadline ends the wait with a read (which fails the same way, if it does).
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._listening(), left)
                value = await self._read(key, read, registered)
                left = deadline - time.monotonic()
                if done(value) or left <= 0 or self._closed:  # closed: nothing would wake it
                    return value
                await asyncio.wait((woken,), timeout=left)
            finally:
                self._unregister(key, woken)

    @property
    def waiting(self) -> int:
        """Waiters registered now (tests, metrics)."""
        return sum(len(s) for s in self._waiters.values())

    async def close(self) -> None:
        """Stop listening and close the connection; waiters still registered are woken (their
        next read answers them; a wait after close reads once, without listening)."""
        self._closed = True
        self._up.set()  # a waiter blocked on the LISTEN reads instead
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._wake_all()

    def _register(self, key: str) -> tuple[asyncio.Future[None], int]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, set()).add(future)
        self._seq += 1
        return future, self._seq

    async def _read(self, key: str, read: Callable[[], Awaitable[T]], registered: int) -> T:
        """`read()`'s result, from the key's read in flight if that started after the waiter
        registered (an earlier one may have missed a commit the waiter was woken for), else from
        a new one that later waiters may join. Shielded: a waiter that goes away (its client
        disconnected) does not cancel the read for the others."""
        current = self._reads.get(key)
        if current is None or current[0] < registered:
            self._seq += 1
            self.reads += 1
            current = (self._seq, asyncio.ensure_future(read()))
            self._reads[key] = current
            current[1].add_done_callback(functools.partial(self._forget_read, key, current))
        return cast(T, await asyncio.shield(current[1]))

    def _forget_read(self, key: str, entry: tuple[int, asyncio.Future[Any]], _: object) -> None:
        if self._reads.get(key) is entry:
            del self._reads[key]
        if not entry[1].cancelled():
            entry[1].exception()  # retrieved: its waiters saw it (no "never retrieved" warning)

    def _unregister(self, key: str, future: asyncio.Future[None]) -> None:
        waiters = self._waiters.get(key)
        if waiters is not None:
            waiters.discard(future)
            if not waiters:
                del self._waiters[key]

    async def _listening(self) -> None:
        if self._closed:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"listen-{self._channel}")
        await self._up.wait()

    def _wake(self, key: str) -> None:
        for future in self._waiters.get(key, ()):
            if not future.done():
                future.set_result(None)

    def _wake_all(self) -> None:
        for key in list(self._waiters):
            self._wake(key)

    async def _run(self) -> None:
        backoff = 0.0
        while not self._closed:
            try:
                # TCP keepalives: a connection lost without a word (a dropped network path, no
                # reset) is noticed within ~60 s, as the listener only reads and nothing else
                # would notice it; meanwhile waiters still end at their own deadlines.
                async with await psycopg.AsyncConnection.connect(
                        self._dsn, autocommit=True, application_name=self._application_name, keepalives=1,
                        keepalives_idle=30, keepalives_interval=10, keepalives_count=3) as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    self.connects += 1
                    self._up.set()
                    backoff = 0.0
                    if self.connects > 1:
                        log.info("listening on %s again (reconnect %d)", self._channel, self.connects - 1)
                    async for note in conn.notifies():
                        self._wake(note.payload)
            except psycopg.Error as exc:
                log.warning("listening on %s: connection lost (%s); reconnecting", self._channel, exc)
            finally:
                # Whatever was notified while no LISTEN stood is lost: everyone reads again, once
                # the LISTEN is back (they wait on _up).
                if not self._closed:
                    self._up.clear()
                self._wake_all()
            if not self._closed:
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF_S, max(0.1, backoff * 2))
