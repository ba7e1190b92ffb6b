"""`radcurate up` / `down` / `status`: the whole system on loopback, described by stack.json.

`up` is idempotent: what is already running and healthy is kept, what died is restarted. Every
part keeps its data under the state dir — Postgres in `pg/`, the S3 server's objects in `s3/`, and the
broker's log in the S3 server — so `down` then `up` brings users, votes and releases back, on the
same ports where they are still free; `down(wipe=True)` is the explicit way to start afresh.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

import services
from radcurate.stack import infra, logtrim, postgres, prometheus, seaweed
from radcurate.stack.procs import (
    StackError,
    free_port,
    http_json,
    listening_socket,
    ours,
    process,
    spawn,
    stop,
    stop_all,
    wait_until,
)
from services.common.db import apply_migrations, migration_files

SERVICES = ("extractor", "mapper", "sampler", "consensus", "gateway")
BUCKETS = {"objects": "radcurate-objects", "public": "radcurate-public", "holdout": "radcurate-holdout"}
ALL_BUCKETS = [infra.TANSU_BUCKET, *BUCKETS.values()]


class StackSettings(BaseSettings):
    """Where the stack's parts come from; set these to use an existing Kafka, Postgres or S3."""

    model_config = SettingsConfigDict(env_prefix="RADCURATE_", extra="ignore")

    kafka_bootstrap: str | None = None
    database_url: SecretStr | None = None  # a superuser DSN; roles and schemas are created in it
    s3_endpoint: str | None = None
    s3_access_key: SecretStr = SecretStr("radcurate")
    s3_secret_key: SecretStr | None = None  # of an external S3; the embedded one gets a random key
    # One partition per topic: the stack runs one process per service, so a second partition
    # buys no parallelism, while tansu pays its S3 round trips per partition and request (a produce
    # claims a watermark and writes a batch: 2 PUTs; an offset commit 2 PUTs; a fetch a LIST and a
    # GET per batch), so a relay round or a consumer batch spread over two partitions costs twice.
    # Measured over ingest -> labels (1,000 studies, bench_floor.py): the broker's S3 requests per
    # study 0.83 with 1, 1.29 with 2 (counted by SeaweedFS); S3 server CPU 5.6-5.8 vs 6.8-7.4 ms per
    # study in two pairs at load 14-22 (against main's code, 4.5-5.3 vs 4.8: inside the noise).
    # Ordering is per study key either way; production sizes partitions in deploy/k8s.
    topic_partitions: int = 1
    # tansu's group join takes about half the session timeout: keep it short on loopback.
    kafka_session_timeout_ms: int = 6000
    kafka_heartbeat_interval_ms: int = 1500  # each heartbeat is a group-state write to S3
    # Beside the embedded tansu, delete the log's batches every consumer group has read
    # (logtrim.py): tansu's fetch lists a partition's whole log, so without it the S3 server's and
    # the broker's CPU per event grows with all the events the stack ever carried. 0 keeps them.
    log_trim: bool = True
    log_trim_interval_s: float = logtrim.INTERVAL_S


def stack_file(state_dir: Path) -> Path:
    return state_dir / "stack.json"


def load(state_dir: Path) -> dict[str, Any]:
    path = stack_file(state_dir)
    return json.loads(path.read_text()) if path.exists() else {}


def save(state_dir: Path, state: dict[str, Any]) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = stack_file(state_dir).with_suffix(".tmp")
    # It holds the admin token, the database passwords and the S3 secret: its owner's eyes only.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(state, indent=2))
    tmp.chmod(0o600)
    tmp.replace(stack_file(state_dir))


def up(state_dir: Path, services_to_run: tuple[str, ...] = SERVICES,
       service_env: dict[str, str] | None = None, settings: StackSettings | None = None,
       with_prometheus: bool = False) -> dict[str, Any]:
    """Bring the stack to healthy; returns the stack description (also written to stack.json).

    `with_prometheus` also starts a Prometheus scraping every service (see `prometheus.py`); one
    started earlier keeps running (its targets refreshed) until `down`.

    If any part fails to start, the processes this call started are stopped again, so a failed
    `up` leaves nothing behind that `down` would not know about.
    """
    settings = settings or StackSettings()
    state_dir = state_dir.resolve()
    state = load(state_dir)
    before = {_identity(info) for info in _processes(state)}
    try:
        return _up(state, state_dir, services_to_run, service_env or {}, settings, with_prometheus)
    except BaseException:
        stop_all([info for info in _processes(state) if _identity(info) not in before])
        raise


def _processes(state: dict) -> list[dict]:
    """The entries of every process stack.json names."""
    parts = [state.get(p) or {} for p in ("s3", "postgres", "kafka", "prometheus", "logtrim")]
    parts += list((state.get("services") or {}).values())
    return [info for info in parts if info.get("pid")]


def _identity(info: dict) -> tuple:
    return info.get("pid"), info.get("started")


def _up(state: dict, state_dir: Path, services_to_run: tuple[str, ...], service_env: dict[str, str],
        settings: StackSettings, with_prometheus: bool = False) -> dict[str, Any]:
    state["state_dir"] = str(state_dir)
    # The service processes start first and import themselves while the infrastructure comes up
    # (radcurate.stack.launch); each gets its environment once everything it connects to is ready.
    pipes: dict[str, _Waiting] = {}
    try:
        for svc in _early_services(state, services_to_run, service_env):
            state.setdefault("services", {})[svc], pipes[svc] = _spawn_waiting(state, state_dir, svc)
        save(state_dir, state)
        _ensure_infrastructure(state, state_dir, settings)
        _ensure_logtrim(state, state_dir, settings)
        state.setdefault("admin_token", "rc_admin_" + secrets.token_urlsafe(24))
        # The project's de-identification secret (services.common.deid): made once, kept for the
        # stack's lifetime so that the same UID is always replaced by the same UID.
        state.setdefault("deid_secret", secrets.token_urlsafe(32))
        save(state_dir, state)
        _ensure_services(state, state_dir, services_to_run, service_env, settings, pipes)
    finally:
        for waiting in pipes.values():  # not yet released (a failed start): the process ends at EOF
            with contextlib.suppress(OSError):
                os.close(waiting.pipe)
    gw = state["services"].get("gateway")
    state["gateway_url"] = gw["url"] if gw else None
    save(state_dir, state)
    if with_prometheus or ours(state.get("prometheus")):
        state["prometheus"] = prometheus.ensure(state, state_dir)
    else:
        state.pop("prometheus", None)
    save(state_dir, state)
    return state


def _ensure_infrastructure(state: dict, state_dir: Path, settings: StackSettings) -> None:
    """S3 server, then broker and topics; meanwhile, in a thread, Postgres, roles and migrations.

    The two chains share nothing: Postgres does not wait for SeaweedFS's master election and
    volume registration (~3 s), nor the broker for initdb. The thread writes only the keys
    "postgres", "passwords" and "dsns"; stack.json is saved once both chains are done.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="postgres") as pool:
        database = pool.submit(_ensure_database, state, state_dir, settings)
        try:
            state["s3"] = _ensure_s3(state, state_dir, settings)
            state["buckets"] = BUCKETS
            if state["s3"].get("external"):
                infra.make_buckets(state["s3"]["endpoint"], state["s3"]["access_key"], state["s3"]["secret_key"],
                                   ALL_BUCKETS)
            state["kafka"] = _ensure_kafka(state, state_dir, settings)
            infra.create_topics(state["kafka"]["bootstrap"], settings.topic_partitions)
        finally:
            wait([database])  # what it started is in `state` before the caller's clean-up reads it
            save(state_dir, state)
        database.result()


def _ensure_logtrim(state: dict, state_dir: Path, settings: StackSettings) -> None:
    """The log trimmer (logtrim.py) beside the embedded broker on the embedded S3 server; none
    with an external Kafka or S3 (a real Kafka keeps an indexed log and its own retention)."""
    s3, kafka, running = state["s3"], state["kafka"], state.pop("logtrim", None)
    if ours(running):
        if running.get("s3") == s3["endpoint"] and settings.log_trim:
            state["logtrim"] = running
            return
        stop(running, timeout=5)  # the S3 server came back on another port, or trimming was turned off
    if not settings.log_trim or s3.get("external") or kafka.get("external"):
        return
    env = {"RADCURATE_LOGTRIM_S3_ENDPOINT": s3["endpoint"], "RADCURATE_LOGTRIM_S3_ACCESS_KEY": s3["access_key"],
           "RADCURATE_LOGTRIM_S3_SECRET_KEY": s3["secret_key"], "RADCURATE_LOGTRIM_BUCKET": infra.TANSU_BUCKET,
           "RADCURATE_LOGTRIM_INTERVAL_S": str(settings.log_trim_interval_s)}
    pid = spawn([sys.executable, "-m", "radcurate.stack.logtrim"], state_dir / "logs" / "logtrim.log", env=env)
    state["logtrim"] = {**process(pid), "s3": s3["endpoint"]}
    save(state_dir, state)


def _ensure_database(state: dict, state_dir: Path, settings: StackSettings) -> None:
    state["postgres"] = _ensure_postgres(state, state_dir, settings)
    state.setdefault("passwords", {})
    state["dsns"] = postgres.bootstrap(state["postgres"]["admin_dsn"], list(SERVICES), state["passwords"])
    for svc in SERVICES:
        apply_migrations(state["dsns"][svc], migration_files(Path(services.__file__).parent / svc))


def _ensure_s3(state: dict, state_dir: Path, settings: StackSettings) -> dict:
    if settings.s3_endpoint:
        if settings.s3_secret_key is None:
            raise StackError("RADCURATE_S3_ENDPOINT needs RADCURATE_S3_SECRET_KEY (and _ACCESS_KEY)")
        return {"external": True, "endpoint": settings.s3_endpoint,
                "access_key": settings.s3_access_key.get_secret_value(),
                "secret_key": settings.s3_secret_key.get_secret_value()}
    previous = state.get("s3") or {}
    if previous.get("external"):
        previous = {}
    if ours(previous):
        return previous
    # The credentials of the data under s3/ stay with it: a random secret, made on first start.
    secret = previous.get("secret_key") or secrets.token_urlsafe(24)
    return infra.start_s3(state_dir / "s3", state_dir / "logs" / "s3.log",
                          settings.s3_access_key.get_secret_value(), secret, ALL_BUCKETS, previous)


def _ensure_postgres(state: dict, state_dir: Path, settings: StackSettings) -> dict:
    if settings.database_url:
        return {"external": True, "admin_dsn": settings.database_url.get_secret_value()}
    if ours(state.get("postgres")):
        return state["postgres"]
    previous = state.get("postgres") or {}
    if previous.get("external"):
        previous = {}
    # The superuser's password stays with the data under pg/, as the S3 secret stays with s3/.
    return postgres.start(state_dir / "pg" / "data", state_dir / "logs" / "postgres.log",
                          previous.get("port"), previous.get("admin_password"))


def _ensure_kafka(state: dict, state_dir: Path, settings: StackSettings) -> dict:
    if settings.kafka_bootstrap:
        return {"external": True, "bootstrap": settings.kafka_bootstrap}
    if ours(state.get("kafka")):
        return state["kafka"]
    previous = state.get("kafka") or {}
    return infra.start_kafka(state["s3"], state_dir / "logs" / "kafka.log",
                             None if previous.get("external") else previous.get("port"))


def service_environment(state: dict, svc: str, port: int, settings: StackSettings,
                        http_fd: int | None = None) -> dict[str, str]:
    """The RADCURATE_<SERVICE>_* variables a service process is started with; `http_fd`, the
    listening socket it inherits on `port` (`procs.listening_socket`)."""
    p = f"RADCURATE_{svc.upper()}_"
    env = {
        "SERVICE_NAME": svc,
        "DATABASE_URL": state["dsns"][svc],
        "KAFKA_BOOTSTRAP": state["kafka"]["bootstrap"],
        "S3_ENDPOINT": state["s3"]["endpoint"],
        "S3_ACCESS_KEY": state["s3"]["access_key"],
        "S3_SECRET_KEY": state["s3"]["secret_key"],
        "HTTP_PORT": str(port),
        **({"HTTP_FD": str(http_fd)} if http_fd is not None else {}),
        "KAFKA_SESSION_TIMEOUT_MS": str(settings.kafka_session_timeout_ms),
        "KAFKA_HEARTBEAT_INTERVAL_MS": str(settings.kafka_heartbeat_interval_ms),
        "OUTBOX_POLL_SECONDS": "0.2",
        "OUTBOX_LINGER_SECONDS": "0.1",
        # tansu looks for a waiting fetch's data only at fixed points of the wait: a short wait
        # while events flow, the long one when idle (services/common/fetch_pacing.py).
        "KAFKA_FETCH_ACTIVE_WAIT_MS": "100",
    }
    if svc == "gateway":
        env["ADMIN_TOKEN"] = state["admin_token"]
        # Votes come one at a time from many readers, and every relay round is a produce request:
        # S3 writes in the broker, then a fetch, a batch and an offset commit in each consumer.
        # Half a second gathers ~50 votes a round at 100 votes/s (bench_gateway_load.py) for at
        # most 0.4 s more between a vote and its decision while votes keep coming (the relay sends
        # once no vote came for its quiet gap, 0.05 s); the page never waits on that.
        env["OUTBOX_LINGER_SECONDS"] = "0.5"
    out = {p + k: v for k, v in env.items()}
    if svc == "gateway" and state.get("deid_secret"):
        out["RADCURATE_DEID_SECRET"] = state["deid_secret"]  # shared by every ingest path, not per service
    return out


def spawn_service(state: dict, state_dir: Path, svc: str, settings: StackSettings,
                  extra_env: dict[str, str] | None = None) -> dict:
    """Start one service process (without waiting for it), on its previous port if still free."""
    ports = state.setdefault("ports", {})
    log_path = state_dir / "logs" / f"{svc}.log"
    with listening_socket(ports.get(svc)) as sock:
        port = ports[svc] = sock.getsockname()[1]
        env = {**service_environment(state, svc, port, settings, sock.fileno()), **(extra_env or {})}
        pid = spawn([sys.executable, "-m", f"services.{svc}"], log_path, env=env, pass_fds=[sock.fileno()])
    return {**process(pid), "port": port, "url": f"http://127.0.0.1:{port}", "log": str(log_path)}


def wait_healthy(svc: str, info: dict, timeout: float = 90) -> None:
    wait_until(lambda: healthy(svc, info), f"service {svc}", timeout, info["pid"], Path(info["log"]))


def healthy(svc: str, info: dict) -> bool:
    """/healthz at the service's URL answers 2xx *as `svc`*: any other server on that port (all
    five services, and SeaweedFS, answer /healthz with 200) does not pass for it."""
    body = http_json(f"{info['url']}/healthz")
    return body is not None and body.get("service") == svc


def start_service(state: dict, state_dir: Path, svc: str, settings: StackSettings,
                  extra_env: dict[str, str] | None = None) -> dict:
    """Start one service process and wait until its /healthz answers 200."""
    info = spawn_service(state, state_dir, svc, settings, extra_env)
    wait_healthy(svc, info)
    return info


def _early_services(state: dict, wanted: tuple[str, ...], extra_env: dict[str, str]) -> list[str]:
    """The services to start ahead of the infrastructure: those not running at all. A running one
    is checked for health once the infrastructure is back (`_ensure_services`), as before. An extra
    variable outside RADCURATE_* (PYTHONPATH, a coverage hook) may act at interpreter start, so
    with one the services start the plain way, after the infrastructure."""
    if not all(name.startswith("RADCURATE_") for name in extra_env):
        return []
    running = state.get("services") or {}
    return [svc for svc in wanted if not ours(running.get(svc))]


def _spawn_waiting(state: dict, state_dir: Path, svc: str) -> tuple[dict, _Waiting]:
    """Start `svc` under radcurate.stack.launch (it imports itself, then waits for its environment
    on stdin); returns its stack.json entry and the write end of its stdin."""
    ports = state.setdefault("ports", {})
    log_path = state_dir / "logs" / f"{svc}.log"
    read_end, write_end = os.pipe()
    try:
        with listening_socket(ports.get(svc)) as sock:
            port = ports[svc] = sock.getsockname()[1]
            pid = spawn([sys.executable, "-m", "radcurate.stack.launch", svc], log_path, stdin=read_end,
                        pass_fds=[sock.fileno()])
            waiting = _Waiting(write_end, sock.fileno())  # the number the process inherited it under
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    return {**process(pid), "port": port, "url": f"http://127.0.0.1:{port}", "log": str(log_path)}, waiting


@dataclass(frozen=True)
class _Waiting:
    """A service process started ahead of its settings: the write end of its stdin, and the
    descriptor number of the listening socket it inherited."""

    pipe: int
    http_fd: int


def _release(state: dict, svc: str, settings: StackSettings, extra_env: dict[str, str], waiting: _Waiting) -> None:
    """Hand a waiting service its environment; it starts serving from there."""
    port = state["services"][svc]["port"]
    env = {**service_environment(state, svc, port, settings, waiting.http_fd), **extra_env}
    message = json.dumps({"env": env}).encode()
    try:
        # A few kB, below the pipe's buffer: the write does not wait for the reader. A process
        # that died while importing is reported by wait_healthy, with its log.
        with contextlib.suppress(BrokenPipeError):
            os.write(waiting.pipe, message)
    finally:
        os.close(waiting.pipe)


def _ensure_services(state: dict, state_dir: Path, wanted: tuple[str, ...], extra_env: dict[str, str],
                     settings: StackSettings, waiting: dict[str, _Waiting] | None = None) -> None:
    running = state.setdefault("services", {})
    waiting = waiting if waiting is not None else {}
    for svc in wanted:
        if svc in waiting:
            _release(state, svc, settings, extra_env, waiting.pop(svc))
            continue
        info = running.get(svc)
        if ours(info) and healthy(svc, info):
            continue
        if info:
            stop(info)
        running[svc] = spawn_service(state, state_dir, svc, settings, extra_env)
        save(state_dir, state)
    # Started together, waited for together: each one's consumer-group join overlaps the others'.
    for svc in wanted:
        wait_healthy(svc, running[svc])


def health(state: dict) -> dict[str, str]:
    """Each part's health in one word."""
    report: dict[str, str] = {}
    for part in ("s3", "postgres", "kafka"):
        info = state.get(part) or {}
        report[part] = "external" if info.get("external") else ("up" if ours(info) else "down")
    for svc, info in (state.get("services") or {}).items():
        if not ours(info):
            report[svc] = "down"
        else:
            report[svc] = "healthy" if healthy(svc, info) else "unhealthy"
    if state.get("prometheus"):
        report["prometheus"] = prometheus.health(state["prometheus"])
    if state.get("logtrim"):
        report["logtrim"] = "up" if ours(state["logtrim"]) else "down"
    return report


def down(state_dir: Path, wipe: bool = False) -> list[str]:
    """Stop exactly the processes stack.json names; returns what was stopped.

    The data stays (Postgres cluster, S3 objects and with them the broker's log, credentials,
    ports) for the next `up`; `wipe=True` then deletes the whole state dir.
    """
    state_dir = state_dir.resolve()
    state = load(state_dir)
    stopped = _stop_all(state, state_dir)
    if wipe:
        _wipe(state_dir)
        return stopped
    if state:
        state["services"] = {}
        state.pop("prometheus", None)
        state.pop("logtrim", None)
        for part in ("s3", "postgres", "kafka"):
            if state.get(part) and not state[part].get("external"):
                state[part].update(pid=None, started=None)
        save(state_dir, state)
    return stopped


def _wipe(state_dir: Path) -> None:
    """Delete the state dir, refusing one that is not a stack's (no stack.json, foreign files)."""
    if not state_dir.exists():
        return
    ours = {"stack.json", "stack.tmp", "pg", "s3", "logs", "prometheus"}
    foreign = sorted(p.name for p in state_dir.iterdir() if p.name not in ours)
    if foreign and not stack_file(state_dir).exists():
        raise StackError(f"not wiping {state_dir}: no stack.json, and it holds {', '.join(foreign[:5])}")
    shutil.rmtree(state_dir)


_STOP_TIMEOUT = {"kafka": 20.0, "postgres": 30.0}


def _stop_all(state: dict, state_dir: Path) -> list[str]:
    services_ = {svc: info for svc, info in (state.get("services") or {}).items() if ours(info)}
    for extra in ("prometheus", "logtrim"):
        if ours(state.get(extra)):
            services_[extra] = state[extra]
    stop_all(list(services_.values()))
    stopped = list(services_)
    for part in ("kafka", "postgres", "s3"):
        info = state.get(part) or {}
        if not info.get("external") and ours(info):
            if part == "s3":  # SeaweedFS's filer would wait 15 s on itself (see seaweed.stop)
                seaweed.stop(info, state_dir / "logs" / "s3.log")
                seaweed.remove_sockets(info.get("ports") or {})
            else:
                # Postgres: SIGINT is its "fast" shutdown (a clean checkpoint without waiting for
                # clients to disconnect); SIGTERM would wait for every open session.
                stop(info, timeout=_STOP_TIMEOUT[part], sig=signal.SIGINT if part == "postgres" else signal.SIGTERM)
            stopped.append(part)
    return stopped


def require_running(state_dir: Path) -> dict:
    state = load(state_dir.resolve())
    if not state or not state.get("services"):
        raise StackError(f"no running stack in {state_dir}: run `radcurate up` first")
    return state


__all__ = ["SERVICES", "StackError", "StackSettings", "down", "health", "load", "up", "free_port"]
