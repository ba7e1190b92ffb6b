"""Starting, probing and stopping the stack's child processes.

A process is named in stack.json by its pid and its start stamp (`process`): a pid alone may,
after a reboot or a long time, belong to another process, so nothing is signalled unless both
still match (`ours`) — a stale stack.json must never stop an unrelated process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


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


def listening_socket(previous: int | None) -> socket.socket:
    """A listening TCP socket on loopback, for a server process to inherit (`spawn(pass_fds=)`):
    on `previous` while it is free, else on a fresh port.

    Handing a server its socket, not a port number to bind, leaves no moment in which the port
    is free: a port picked with `free_port` and bound by the server seconds later (a service binds
    only after importing itself and starting its consumer) can meanwhile become the local end of
    any outgoing connection on the machine, or another server's port. The server then cannot bind
    and exits, and whatever holds the port may answer in its place."""
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if previous and ports_free([previous]):
            try:
                sock.bind(("127.0.0.1", previous))
            except OSError:  # taken since the check: a fresh one
                sock.close()
                return listening_socket(None)
        else:
            sock.bind(("127.0.0.1", 0))
        sock.listen(2048)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def spawn(argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None,
          user: str | None = None, cwd: Path | None = None, stdin: int | None = None,
          pass_fds: Sequence[int] = ()) -> int:
    """Start a detached process (own session, so `down` can stop its whole group); returns the pid.

    `stdin` is a file descriptor for the process to read (e.g. a pipe's read end), else /dev/null;
    `pass_fds` are inherited under the same numbers (e.g. a `listening_socket`)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL if stdin is None else stdin,
            env={**os.environ, **(env or {})}, start_new_session=True, user=user, cwd=cwd,
            pass_fds=tuple(pass_fds),
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


def start_stamp(pid: int) -> str | None:
    """When process `pid` started: this boot's id and the process's start time in clock ticks
    since boot (/proc/<pid>/stat, field 22). With the pid it names one process for good: a pid
    is reused, a (boot, pid, start time) never. None when the process does not exist."""
    try:
        boot = BOOT_ID.read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name, in parentheses, may hold spaces
    return f"{boot}:{fields[19]}"


def process(pid: int) -> dict[str, Any]:
    """The stack.json entry of a process just spawned: its pid and start stamp."""
    return {"pid": pid, "started": start_stamp(pid)}


def ours(info: Mapping[str, Any] | None) -> bool:
    """Whether the process an entry names is still running and is the one that was started. An
    entry without a start stamp (a stack.json from before stamps) cannot be proven ours: no."""
    if not info or not info.get("pid") or not info.get("started"):
        return False
    return alive(info["pid"]) and start_stamp(info["pid"]) == str(info["started"])


def stop(info: Mapping[str, Any] | None, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Send `sig` (SIGTERM) to the process group of an entry, then SIGKILL what is left after
    `timeout`; only while the entry is `ours`."""
    stop_all([info], timeout, sig)


def stop_all(infos: Sequence[Mapping[str, Any] | None], timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Stop several process groups at once: their shutdowns overlap instead of adding up. Each
    is checked to be `ours` before every signal, the SIGKILL after the wait included."""
    live = [info for info in infos if info is not None and ours(info)]
    for info in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(info["pid"], sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(ours(info) for info in live):
        time.sleep(0.05)
    for info in live:
        if ours(info):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(info["pid"], signal.SIGKILL)


# How many times a server is started on fresh ports after one of its ports was taken between
# their choice and its own bind (`retrying_port_races`).
PORT_RACE_TRIES = 3
# What each server logs when its bind fails: SeaweedFS (Go) "bind: address already in use",
# Postgres "could not bind IPv4 address ...: Address already in use", tansu (Rust) "AddrInUse,
# message: \"Address in use\"".
_PORT_TAKEN = re.compile(rb"address (already )?in use|AddrInUse", re.IGNORECASE)


def retrying_port_races(attempt: Callable[[bool], T], log_path: Path, tries: int = PORT_RACE_TRIES) -> T:
    """Start a server that binds its own ports with `attempt(fresh)`, again on fresh ports while
    it fails because a port was taken; returns what the successful attempt returns.

    A server given a port number (not a socket to inherit, as the services get with
    `listening_socket`) binds it a moment after the port was seen free: meanwhile it may become
    the local end of any outgoing connection on the machine, or another server's port (CI saw
    it). The server then exits. `attempt(fresh)` starts the server, waits until it is ready and,
    if it is not, stops what it started and raises StackError; `fresh` is False the first time
    (the previous ports may be reused: clients keep their endpoints) and True after a port was
    taken. The server's log (`log_path`, appended to by every attempt) since the attempt says
    whether a port was taken; any other failure, or the last of `tries`, is raised as it is.
    """
    for number in range(1, tries + 1):
        offset = log_path.stat().st_size if log_path.exists() else 0
        try:
            return attempt(number > 1)
        except StackError:
            if number == tries or not port_taken_since(log_path, offset):
                raise
    raise AssertionError("unreachable")


def port_taken_since(log_path: Path, offset: int) -> bool:
    """Whether the server's log since `offset` says one of its ports was already in use."""
    try:
        with log_path.open("rb") as f:
            f.seek(offset)
            return _PORT_TAKEN.search(f.read()) is not None
    except OSError:
        return False


def listening(pid: int, port: int) -> bool:
    """Whether process `pid` itself listens on TCP `port`: whoever else holds the port (the cause
    of a failed bind) answers a connection just as well, so `port_open` alone would take it for
    the server. Read from /proc (the listening socket's inode among the process's descriptors);
    where /proc cannot say (another system, a process of another user), `port_open`.

    /proc/net/tcp lists every socket on the machine (~45 ms to read with a thousand of them on a
    loaded machine), so it is read only once something answers on the port."""
    if not port_open(port):
        return False
    if not Path("/proc/net/tcp").exists():
        return True
    inodes = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not inodes:
        return False
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except PermissionError:
        return True
    except FileNotFoundError:  # the process is gone
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
    return False


def _listening_inodes(port: int) -> set[str]:
    """The inodes of the sockets listening on TCP `port` (IPv4 and IPv6), from /proc/net."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as f:
            next(f, None)  # the header
            for line in f:
                if f":{port:04X} " not in line:
                    continue
                fields = line.split()
                # local_address is HEXIP:HEXPORT; state 0A is LISTEN
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return inodes


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


def http_json(url: str) -> dict | None:
    """The JSON object a 2xx answer at `url` carries; None for anything else (no answer, an error
    status, a body that is not a JSON object)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            body = json.loads(resp.read()) if 200 <= resp.status < 300 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


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
