"""`radcurate up` starts each service before its environment exists (radcurate.stack.launch).

That is only the same as `python -m services.<name>` with the environment from the start if
importing a service reads none of its RADCURATE_* settings: checked here for all five, by
importing each in a fresh interpreter whose os.environ records what is read. And a launcher whose
`up` failed (its stdin closed without an environment) must end without starting anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from radcurate.stack.launch import SERVICES
from radcurate.stack.local import SERVICES as STACK_SERVICES
from radcurate.stack.local import _spawn_waiting
from radcurate.stack.procs import port_free, stop

ROOT = Path(__file__).resolve().parents[2]

# Runs in the child: os.environ replaced by a mapping that records every name read, and where
# the whole environment was copied (a copy could carry a RADCURATE_* value into module state).
PROBE = textwrap.dedent("""
    import importlib, json, os, sys, traceback
    from collections.abc import MutableMapping

    class Recording(MutableMapping):
        def __init__(self, inner):
            self.inner, self.names, self.copied_by = inner, set(), []
        def __getitem__(self, name):
            self.names.add(name)
            return self.inner[name]
        def __setitem__(self, name, value):
            self.inner[name] = value
        def __delitem__(self, name):
            del self.inner[name]
        def _copied(self):
            self.copied_by.append([f.filename for f in traceback.extract_stack()[:-2]])
        def __iter__(self):
            self._copied()
            return iter(self.inner)
        def items(self):  # a copy, not a read by name (Mapping's would call __getitem__ per name)
            self._copied()
            return self.inner.items()
        def values(self):
            self._copied()
            return self.inner.values()
        def __len__(self):
            return len(self.inner)
        def copy(self):
            return dict(self.inner)

    recording = os.environ = Recording(os.environ)
    importlib.import_module(f"services.{sys.argv[1]}.app")
    print(json.dumps({"names": sorted(recording.names), "copied_by": recording.copied_by}))
""")


def _env() -> dict[str, str]:
    # A RADCURATE_* variable set for every service, so that reading one by name is seen even
    # where a library would only look when it is present.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADCURATE_")}
    env |= {"PYTHONPATH": str(ROOT), "RADCURATE_PROTOCOLS": "", "RADCURATE_GATEWAY_HTTP_PORT": "1"}
    return env


def test_the_launcher_knows_every_service_the_stack_runs() -> None:
    assert SERVICES == STACK_SERVICES


@pytest.mark.parametrize("service", SERVICES)
def test_importing_a_service_reads_none_of_its_settings(service: str) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, service], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert [n for n in seen["names"] if n.startswith("RADCURATE_")] == []
    # Whole-environment copies at import are allowed only in the standard library (wsgiref's
    # handler defaults); a third-party or project module copying it could keep settings.
    stdlib = sysconfig.get_paths()["stdlib"]
    for stack in seen["copied_by"]:
        copier = next(f for f in reversed(stack) if not f.startswith("<frozen"))
        assert copier.startswith(stdlib), f"{service}: the environment is copied at import by {copier}"


def test_a_launcher_whose_up_gave_up_starts_nothing(tmp_path: Path) -> None:
    """stdin closed without an environment: exit 0, no server, nothing in the log but imports."""
    done = subprocess.run([sys.executable, "-m", "radcurate.stack.launch", "sampler"], cwd=ROOT,
                          env=_env(), input=b"", capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert b"Uvicorn running" not in done.stdout + done.stderr
    assert b"Started server process" not in done.stdout + done.stderr


def test_a_waiting_service_holds_its_port_from_the_moment_it_is_chosen(tmp_path: Path) -> None:
    """The port a service will serve on is bound by `up` and inherited by the process, so nothing
    else on the machine (an outgoing connection's local end, another server) can take it during the
    seconds before the service serves; a service that could not bind would exit while whatever took
    its port answered in its place."""
    state: dict = {"ports": {}}
    info, waiting = _spawn_waiting(state, tmp_path, "sampler")
    try:
        assert state["ports"]["sampler"] == info["port"]
        assert not port_free(info["port"])
        assert "socket:[" in os.readlink(f"/proc/{info['pid']}/fd/{waiting.http_fd}")
    finally:
        os.close(waiting.pipe)  # no environment: the launcher ends without serving
        stop(info)
    assert port_free(info["port"])
    done = subprocess.run([sys.executable, "-m", "radcurate.stack.launch", "radcurate"], cwd=ROOT,
                          env=_env(), input="", capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "usage" in done.stderr


def test_the_launcher_refuses_an_environment_that_is_not_strings() -> None:
    done = subprocess.run([sys.executable, "-m", "radcurate.stack.launch", "mapper"], cwd=ROOT, env=_env(),
                          input=json.dumps({"env": {"RADCURATE_MAPPER_HTTP_PORT": 1}}).encode(),
                          capture_output=True, timeout=120)
    assert done.returncode == 2
    assert b"Started server process" not in done.stdout + done.stderr
