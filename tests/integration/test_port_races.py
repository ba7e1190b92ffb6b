"""tansu, Postgres and Prometheus bind their port themselves, a moment after it was seen free: a port taken
meanwhile (the local end of some outgoing connection, another server) made them exit, and the
holder answered in their place. Each now starts again on a fresh port (`procs.retrying_port_races`,
the mechanism SeaweedFS's start uses too: tests/integration/test_s3_stop.py). Each test holds the
first chosen port open, as the race would."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient

from radcurate.stack import infra, postgres, prometheus
from radcurate.stack.procs import alive, http_ok, listening, stop


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port held open by this test, as a connection's local end or another server would."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def taken_the_first_time(module, monkeypatch, port: int, chooser: str = "reuse_port") -> list[int]:
    """Make `module`'s port choice return `port` the first time (as if it had been taken right
    after it was seen free), then choose as before; returns every port chosen."""
    choose, chosen = getattr(module, chooser), []

    def choice(*previous):
        chosen.append(port if not chosen else choose(*previous))
        return chosen[-1]

    monkeypatch.setattr(module, chooser, choice)
    return chosen


async def topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


def test_a_broker_port_taken_after_it_was_chosen_starts_tansu_again_on_a_fresh_port(
        tmp_path: Path, monkeypatch, taken_port: int) -> None:
    log = tmp_path / "kafka.log"
    chosen = taken_the_first_time(infra, monkeypatch, taken_port)
    kafka = infra.start_kafka_on("memory://tansu/", log)
    try:
        assert len(chosen) == 2 and kafka["port"] == chosen[1] != taken_port
        assert b"AddrInUse" in log.read_bytes()  # the first tansu did exit on the taken port
        assert alive(kafka["pid"]) and listening(kafka["pid"], kafka["port"])
        assert isinstance(asyncio.run(topics(kafka["bootstrap"])), list)  # tansu itself answers
    finally:
        stop(kafka, timeout=5)


def test_a_postgres_port_taken_after_it_was_chosen_starts_postgres_again_on_a_fresh_port(
        tmp_path: Path, monkeypatch, taken_port: int) -> None:
    log = tmp_path / "postgres.log"
    chosen = taken_the_first_time(postgres, monkeypatch, taken_port)
    info = postgres.start(tmp_path / "pg" / "data", log)
    try:
        assert len(chosen) == 2 and info["port"] == chosen[1] != taken_port
        assert b"Address already in use" in log.read_bytes()
        with psycopg.connect(info["admin_dsn"]) as conn:
            assert conn.execute("SELECT current_setting('port')::int").fetchone() == (info["port"],)
    finally:
        stop(info, timeout=10)



@pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs the prometheus binary (make setup)")
def test_a_prometheus_port_taken_after_it_was_chosen_starts_prometheus_again_on_a_fresh_port(
        tmp_path: Path, monkeypatch, taken_port: int) -> None:
    home = tmp_path / "prometheus"
    home.mkdir()
    config_file = home / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(prometheus.config({})))
    chosen = taken_the_first_time(prometheus, monkeypatch, taken_port, chooser="free_port")
    info = prometheus._start(home, config_file)
    try:
        assert len(chosen) == 2 and info["port"] == chosen[1] != taken_port
        assert b"address already in use" in (tmp_path / "logs" / "prometheus.log").read_bytes()
        assert http_ok(f"{info['url']}/-/ready")
    finally:
        stop(info, timeout=10)
