"""Issue 11 item 4: never a live process with a dead consumer. A service whose consume loop
cannot recover ends with a non-zero status, so its supervisor (`radcurate up`, Kubernetes)
restarts it — instead of answering HTTP while no event is consumed any more."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from radcurate.stack.procs import free_port
from services.common.runtime import EXIT_TASK_DIED

pytestmark = pytest.mark.integration

# A real service process (the shared runtime, a real broker and database) whose Kafka client
# fails on every poll: the loop restarts it a few times, then gives up.
SERVICE = """
import sys
from services.common import consumer, runtime
from services.common.consumer import Handler
from services.common.settings import ServiceSettings

async def broken_poll(self):
    raise RuntimeError("the fetcher is gone for good")

consumer.EventConsumer._poll_once = broken_poll
consumer.EventConsumer._backoff = lambda self, attempt: 0.05
settings = ServiceSettings(service_name="dying", database_url=sys.argv[1], kafka_bootstrap=sys.argv[2],
                           http_port=int(sys.argv[3]), kafka_session_timeout_ms=2000, kafka_heartbeat_interval_ms=300)

async def apply(conn, event, prepared):
    return None

runtime.serve(runtime.create_app(settings, lambda res: {sys.argv[4]: Handler(apply=apply)}), settings)
"""


def test_a_service_whose_consumer_cannot_recover_exits_non_zero(infra, fresh_schema, fresh_topic, tmp_path: Path):
    script = tmp_path / "dying_service.py"
    script.write_text(SERVICE)
    port = free_port()
    log = tmp_path / "service.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, str(script), fresh_schema, infra["kafka"]["bootstrap"], str(port),
                                 fresh_topic], stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        returncode = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        alive = _answers(f"http://127.0.0.1:{port}/healthz")
        proc.kill()
        proc.wait()
        pytest.fail(f"the process lives on with a dead consumer (HTTP answering: {alive})")
    text = log.read_text()
    assert returncode == EXIT_TASK_DIED, text[-3000:]
    assert "consumer task ended" in text and "the fetcher is gone for good" in text


def _answers(url: str) -> bool:
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            time.sleep(0.2)
    return False
