"""`radcurate down` stops the S3 server (SeaweedFS) without waiting out its filer's 15 s graceful
gRPC stop (the filer waits on metadata subscriptions of its own process: see
`radcurate.stack.seaweed.stop`), and every object the S3 API acknowledged before the stop is
there, byte for byte, when the server comes back on the same data; either start is prompt (the
master is leader at once). And a port taken between its choice and SeaweedFS's own bind (CI saw
it) starts the server again on fresh ports."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import tempfile
import time
from pathlib import Path

from radcurate.stack import infra, seaweed
from radcurate.stack.procs import alive

BUCKET = "stop-test"
FILER_GRACEFUL_WAIT_S = 15.0  # SeaweedFS 4.48's fixed timeout, what the stop no longer waits out


def test_a_stopped_s3_server_comes_back_with_every_acknowledged_object(tmp_path: Path) -> None:
    home, log = tmp_path / "s3", tmp_path / "s3.log"
    info = infra.start_s3(home, log, "stop-key", "stop-secret-0123456789", [BUCKET])
    try:
        assert_prompt_start(log, 0)
        client = infra._client(info["endpoint"], "stop-key", "stop-secret-0123456789")
        digests = {}
        for i in range(60):
            body = os.urandom(200 + 97 * i)
            client.put_object(BUCKET, f"objects/{i}", io.BytesIO(body), len(body))
            digests[f"objects/{i}"] = hashlib.sha256(body).hexdigest()
        started = time.monotonic()
        seaweed.stop(info, log, timeout=2 * FILER_GRACEFUL_WAIT_S)
        took = time.monotonic() - started
        assert not alive(info["pid"])
        # Ended by the filer's own wait showing in the log, not by the fallback timeout nor
        # by the filer giving up on itself.
        assert took < FILER_GRACEFUL_WAIT_S, took
        assert b"graceful stop timed out" not in log.read_bytes()
        # Its glog lines went to the stack's log only, not to files of its own in the temp folder
        # (five per start: a test suite's hundreds of starts filled /tmp with them).
        assert not list(Path(tempfile.gettempdir()).glob(f"weed.*.{info['pid']}")), "glog files in the temp folder"
        seaweed.remove_sockets(info["ports"])

        restarted_at = log.stat().st_size
        info = infra.start_s3(home, log, "stop-key", "stop-secret-0123456789", [BUCKET], info)
        assert_prompt_start(log, restarted_at)
        client = infra._client(info["endpoint"], "stop-key", "stop-secret-0123456789")
        back = {k: hashlib.sha256(client.get_object(BUCKET, k).read()).hexdigest() for k in digests}
        assert back == digests
    finally:
        seaweed.stop(info, log)
        seaweed.remove_sockets(info["ports"])


def assert_prompt_start(log: Path, offset: int) -> None:
    """The start logged from `offset` on made its lone master leader at once, and the volume
    server's first heartbeat was accepted: no random election wait, no refused heartbeat and its
    5 s retry pulse (what made a start take ~7 s instead of ~3; see `seaweed.command`)."""
    with log.open("rb") as f:
        f.seek(offset)
        started = f.read()
    assert b"initializing cluster immediately" in started
    assert b"bootstrap check in" not in started
    assert b"Not current leader" not in started


def test_a_port_taken_after_it_was_chosen_starts_the_server_again_on_fresh_ports(tmp_path: Path, monkeypatch) -> None:
    home, log = tmp_path / "s3", tmp_path / "s3.log"
    choose, chosen = seaweed.choose_ports, []
    with socket.socket() as taken:  # what an outgoing connection's local end would hold
        taken.bind(("127.0.0.1", 0))
        taken.listen()

        def master_grpc_taken_the_first_time(previous, wait=5.0):
            ports = choose(previous, wait)
            if not chosen:
                ports = {**ports, "master_grpc": taken.getsockname()[1]}
            chosen.append(ports)
            return ports

        monkeypatch.setattr(seaweed, "choose_ports", master_grpc_taken_the_first_time)
        info = infra.start_s3(home, log, "race-key", "race-secret-0123456789", [BUCKET])
        try:
            assert len(chosen) == 2 and info["ports"] == chosen[1]
            assert taken.getsockname()[1] not in info["ports"].values()
            assert b"bind: address already in use" in log.read_bytes()
            client = infra._client(info["endpoint"], "race-key", "race-secret-0123456789")
            client.put_object(BUCKET, "after-the-race", io.BytesIO(b"ok"), 2)
            assert client.get_object(BUCKET, "after-the-race").read() == b"ok"
        finally:
            seaweed.stop(info, log)
            seaweed.remove_sockets(info["ports"])


def test_every_bucket_has_its_volumes_once_the_server_is_ready(tmp_path: Path) -> None:
    """Each bucket is a SeaweedFS collection whose volumes are made at its first write, and writes
    arriving meanwhile wait ~1 s to retry (the first release's copies into the public bucket took
    1.0 s instead of 0.15 s): the start writes into every bucket, so none is left to grow later."""
    home, log = tmp_path / "s3", tmp_path / "s3.log"
    buckets = ["first-bucket", "second-bucket", "third-bucket"]
    info = infra.start_s3(home, log, "grow-key", "grow-secret-0123456789", buckets)
    try:
        volumes = {p.name.rsplit("_", 1)[0] for p in (home / "data").glob("*.dat")}
        assert set(buckets) <= volumes, volumes
        client = infra._client(info["endpoint"], "grow-key", "grow-secret-0123456789")
        assert all(not list(client.list_objects(b, recursive=True)) for b in buckets)  # the probes are gone
    finally:
        seaweed.stop(info, log)
        seaweed.remove_sockets(info["ports"])
