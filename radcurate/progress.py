"""Progress of long work (synth, ingest, simulated reads, export, the demo's stages) on stderr.

Three modes: `live` — rich progress bars with counts, rate and ETA, redrawn in place (a terminal);
`plain` — a line when a step starts, about every 10 % (at most one per 15 s) and when it ends, with
rate and ETA (not a terminal, or CI=true: CI logs stay small); `quiet` — nothing (`--quiet`).

Code doing the work asks `current()` for the active reporter, so library functions need no extra
parameter and report nothing unless a command has installed one with `use()`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Literal

Mode = Literal["live", "plain", "quiet"]
PLAIN_STEP = 0.10  # plain mode prints about every tenth of a step...
PLAIN_MIN_SECONDS = 15.0  # ...but not more often than this


def choose_mode(quiet: bool = False, stream=None) -> Mode:
    """quiet if asked; plain when the stream is not a terminal or CI=true; live otherwise."""
    if quiet:
        return "quiet"
    stream = stream or sys.stderr
    if os.environ.get("CI", "").lower() in ("1", "true", "yes") or not stream.isatty():
        return "plain"
    return "live"


def _rate_eta(done: float, total: float | None, elapsed: float, unit: str) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    text = f"{rate:,.1f} {unit}/s"
    if total and rate > 0 and done < total:
        text += f", ETA {_clock((total - done) / rate)}"
    return text


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else f"{seconds // 3600}h{seconds // 60 % 60:02d}"


class Task:
    """One step: `advance(n)` as items finish, or `update(done)` with an absolute count."""

    def __init__(self, reporter: Reporter, name: str, total: int | None, unit: str) -> None:
        self.reporter, self.name, self.total, self.unit = reporter, name, total, unit
        self.done = 0
        self.started = time.monotonic()
        self._last_line_at, self._last_line_done = self.started, 0
        self._id = None

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def update(self, done: int, total: int | None = None) -> None:
        self.done = done
        if total is not None:
            self.total = total
        self.reporter._updated(self)

    def summary(self) -> str:
        elapsed = time.monotonic() - self.started
        count = f"{self.done:,}" + (f"/{self.total:,}" if self.total else "")
        return f"{self.name}: {count} {self.unit} in {elapsed:.1f}s ({_rate_eta(self.done, None, elapsed, self.unit)})"


class Reporter:
    def __init__(self, mode: Mode = "quiet", stream=None) -> None:
        self.mode = mode
        self.stream = stream or sys.stderr
        self._progress = None
        if mode == "live":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=Console(file=self.stream), transient=False)

    @contextlib.contextmanager
    def task(self, name: str, total: int | None = None, unit: str = "items") -> Iterator[Task]:
        """A step with `total` items (None: unknown); its summary line is printed when it ends."""
        t = Task(self, name, total, unit)
        if self._progress is not None:
            if not self._progress.live.is_started:
                self._progress.start()
            t._id = self._progress.add_task(name, total=total, rate="")
        elif self.mode == "plain":
            self._line(f"{name}: started" + (f", {total:,} {unit}" if total else ""))
        try:
            yield t
        finally:
            if self._progress is not None:
                self._progress.update(t._id, completed=t.done, total=t.total or t.done,
                                      rate=f"{_rate_eta(t.done, None, time.monotonic() - t.started, unit)}")
                self._progress.stop_task(t._id)
            elif self.mode == "plain":
                self._line(t.summary())

    def note(self, text: str) -> None:
        """A one-off line (not in quiet mode)."""
        if self._progress is not None:
            self._progress.console.print(text)
        elif self.mode == "plain":
            self._line(text)

    def close(self) -> None:
        if self._progress is not None and self._progress.live.is_started:
            self._progress.stop()

    def _updated(self, t: Task) -> None:
        now = time.monotonic()
        if self._progress is not None:
            self._progress.update(t._id, completed=t.done, total=t.total,
                                  rate=_rate_eta(t.done, None, now - t.started, t.unit))
        elif self.mode == "plain" and t.total:
            step = max(1, int(t.total * PLAIN_STEP))
            if t.done - t._last_line_done >= step and now - t._last_line_at >= PLAIN_MIN_SECONDS:
                t._last_line_at, t._last_line_done = now, t.done
                self._line(f"{t.name}: {t.done:,}/{t.total:,} {t.unit} "
                           f"({_rate_eta(t.done, t.total, now - t.started, t.unit)})")

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


_active = Reporter("quiet")


def current() -> Reporter:
    """The reporter a command installed; a silent one otherwise (library use, tests)."""
    return _active


@contextlib.contextmanager
def use(quiet: bool = False, stream=None) -> Iterator[Reporter]:
    """Install a reporter for the duration of a command (mode chosen by `choose_mode`)."""
    global _active
    previous, _active = _active, Reporter(choose_mode(quiet, stream), stream)
    try:
        yield _active
    finally:
        _active.close()
        _active = previous
