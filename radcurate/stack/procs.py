"""Starting, probing and stopping the stack's child processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class StackError(RuntimeError):
    """The stack could not be brought to the requested state; the message says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    """Whether a server could listen on `port` now (TIME_WAIT connections do not count, as for
    servers that set SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def ports_free(ports: Sequence[int], wait: float = 5.0) -> bool:
    """Whether all `ports` are free, waiting up to `wait` s: a process just stopped may hold its
    listening sockets a moment after it stops answering."""
    deadline = time.monotonic() + wait
    while not all(port_free(p) for p in ports):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def reuse_port(previous: int | None) -> int:
    """`previous` while it is free (clients configured with it reconnect), else a fresh port."""
    return previous if previous and ports_free([previous]) else free_port()


def spawn(argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None,
          user: str | None = None, cwd: Path | None = None) -> int:
    """Start a detached process (own session, so `down` can stop its whole group); returns the pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, start_new_session=True, user=user, cwd=cwd,
        )
    return proc.pid


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie counts as dead: reap it if it is our child, else read its state.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def stop(pid: int | None, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Send `sig` (SIGTERM) to the process group, then SIGKILL what is left after `timeout`."""
    stop_all([pid], timeout, sig)


def stop_all(pids: Sequence[int | None], timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Stop several process groups at once: their shutdowns overlap instead of adding up."""
    live = [p for p in pids if alive(p)]
    for pid in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in live):
        time.sleep(0.05)
    for pid in live:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError):
        return False


def wait_until(check: Callable[[], bool], what: str, timeout: float, pid: int | None = None,
               log_path: Path | None = None) -> None:
    """Poll `check`; fail with the tail of the process log if it dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if pid is not None and not alive(pid):
            raise StackError(f"{what} exited during start-up{_tail(log_path)}")
        time.sleep(0.1)
    raise StackError(f"{what} not ready after {timeout:.0f}s{_tail(log_path)}")


def _tail(log_path: Path | None, lines: int = 15) -> str:
    if log_path is None or not log_path.exists():
        return ""
    text = log_path.read_text(errors="replace").splitlines()[-lines:]
    return f"; last lines of {log_path}:\n  " + "\n  ".join(text)
