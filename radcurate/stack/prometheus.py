"""A real Prometheus for the local stack (`radcurate up --with-prometheus`).

It scrapes every service's /metrics (static targets from stack.json, one job per service, every
second) and evaluates the same alert rules as production (`deploy/prometheus/rules.yml`), so a
rule can be tried against live metrics before it ships. The binary is the Debian `prometheus`
package's (`apt-get install prometheus`); its TSDB lives in `<state_dir>/prometheus/data`.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import Any

import yaml

from radcurate.stack.procs import (
    StackError,
    free_port,
    http_ok,
    listening,
    ours,
    process,
    retrying_port_races,
    spawn,
    stop,
    wait_until,
)

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yml"
SCRAPE_INTERVAL = "1s"  # loopback and a handful of targets: cheap, and tests need not wait long


def binary() -> str:
    exe = shutil.which("prometheus")
    if exe is None:
        raise StackError("--with-prometheus needs the prometheus binary on PATH"
                         " (Debian/Ubuntu: apt-get install prometheus; `make setup` does it)")
    return exe


def config(state: dict[str, Any], rules: Path = RULES) -> dict[str, Any]:
    """The Prometheus configuration: one scrape job per running service, the alert rules."""
    jobs = [
        {"job_name": svc, "metrics_path": "/metrics",
         "static_configs": [{"targets": [f"127.0.0.1:{info['port']}"]}]}
        for svc, info in sorted((state.get("services") or {}).items())
    ]
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL,
                   "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(rules)] if rules.exists() else [],
        "scrape_configs": jobs,
    }


def ensure(state: dict[str, Any], state_dir: Path) -> dict[str, Any]:
    """Start Prometheus, or keep the running one and reload it if the targets changed."""
    home = state_dir / "prometheus"
    home.mkdir(parents=True, exist_ok=True)
    config_file = home / "prometheus.yml"
    text = yaml.safe_dump(config(state), sort_keys=False)
    changed = not config_file.exists() or config_file.read_text() != text
    if changed:
        config_file.write_text(text)
    info = state.get("prometheus") or {}
    if ours(info) and http_ok(f"{info['url']}/-/ready"):
        if changed:  # a restarted service listens on a new port
            os.kill(info["pid"], signal.SIGHUP)
        return info
    stop(info)
    return _start(home, config_file)


def _start(home: Path, config_file: Path) -> dict[str, Any]:
    """Start Prometheus on a fresh port; again on another if that one was taken before its own
    bind (`retrying_port_races`)."""
    log_path = home.parent / "logs" / "prometheus.log"

    def attempt(fresh: bool) -> dict[str, Any]:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        pid = spawn([binary(), f"--config.file={config_file}", f"--storage.tsdb.path={home / 'data'}",
                     f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=2d",
                     "--web.enable-lifecycle"], log_path)
        info = {**process(pid), "port": port, "url": url, "config": str(config_file), "log": str(log_path)}
        try:
            wait_until(lambda: listening(pid, port) and http_ok(f"{url}/-/ready"), "prometheus", 60, pid, log_path)
        except BaseException:
            stop(info)  # not yet in stack.json: nobody else would stop it
            raise
        return info

    return retrying_port_races(attempt, log_path)


def health(info: dict[str, Any]) -> str:
    if not ours(info):
        return "down"
    return "healthy" if http_ok(f"{info['url']}/-/ready") else "unhealthy"
