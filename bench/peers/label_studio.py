"""The Label Studio side of `make bench-peers`: a local Label Studio (its own throwaway venv, sqlite,
`label-studio start` as a user would run it) driven through its REST API with httpx.

Nothing here imports Label Studio: it runs as a subprocess from `.bench-peers/venv`, so it never
becomes a project dependency.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

USERNAME = "bench@radcurate.local"
MAX_ATTEMPTS = 20


@dataclass(frozen=True)
class Task:
    """One study as a Label Studio task: its report and the labels RadCurate's rules suggest."""

    study_id: str
    report: str
    suggested: tuple[str, ...]


def labelling_config(label_ids: Sequence[str]) -> str:
    """A CXR multi-label config: the report as text, one multiple-choice control over the taxonomy."""
    choices = "".join(f'<Choice value="{label}"/>' for label in label_ids)
    return ('<View><Text name="report" value="$report"/>'
            f'<Choices name="labels" toName="report" choice="multiple" showInLine="true">{choices}</Choices>'
            '</View>')


def _choices(labels: Sequence[str]) -> list[dict]:
    """A Choices result; a study with nothing suggested gets an empty result (LS rejects empty choices)."""
    if not labels:
        return []
    return [{"from_name": "labels", "to_name": "report", "type": "choices", "value": {"choices": list(labels)}}]


def task_json(task: Task) -> dict:
    """A task with its pre-annotation: the suggested labels as a prediction."""
    return {"data": {"report": task.report, "study_id": task.study_id},
            "predictions": [{"model_version": "radcurate-rules", "result": _choices(task.suggested)}]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LabelStudio:
    """A fresh Label Studio server on loopback with a pre-created user and legacy API token."""

    def __init__(self, executable: Path, data_dir: Path, database: dict[str, str] | None = None) -> None:
        """`database`: Label Studio's PostgreSQL settings (POSTGRE_HOST, _PORT, _NAME, _USER,
        _PASSWORD), the backend its docs advise for more than a trial; None: its default sqlite."""
        self.executable, self.data_dir, self.database = executable, data_dir, database
        self.token = secrets.token_hex(20)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 600) -> float:
        """Start from an empty data dir (migrations included); returns the seconds until it answered."""
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir.mkdir(parents=True)
        db = {"DJANGO_DB": "default", **self.database} if self.database else {"DJANGO_DB": "sqlite"}
        env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir), **db,
               # local and offline: no version check, analytics or Sentry
               "LATEST_VERSION_CHECK": "false", "COLLECT_ANALYTICS": "false", "SENTRY_DSN": "",
               "FRONTEND_SENTRY_DSN": "", "LOG_LEVEL": "WARNING"}
        env.pop("PYTHONPATH", None)  # its own venv, none of RadCurate's code
        log = open(self.data_dir / "server.log", "wb")  # noqa: SIM115 - kept open for the server's life
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(self.executable), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", str(self.data_dir), "--username", USERNAME, "--password", secrets.token_hex(12),
             "--user-token", self.token, "--enable-legacy-api-token"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"label-studio exited {self.proc.returncode}; see {self.data_dir / 'server.log'}")
            try:
                if httpx.get(f"{self.url}/api/projects", headers=self.headers, timeout=2).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            time.sleep(1)
        raise RuntimeError(f"label-studio did not answer within {timeout:.0f}s")

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("label-studio is not started")
        return self.proc.pid

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def create_project(self, label_ids: Sequence[str]) -> int:
        resp = httpx.post(f"{self.url}/api/projects", headers=self.headers, timeout=60,
                          json={"title": "CXR labels", "label_config": labelling_config(label_ids)})
        resp.raise_for_status()
        return int(resp.json()["id"])

    def import_tasks(self, project: int, tasks: Sequence[Task]) -> list[int]:
        """One import request with every task and its prediction (as the SDK's import_tasks sends it);
        returns the new task ids, checked against what the project now holds."""
        resp = httpx.post(f"{self.url}/api/projects/{project}/import", headers=self.headers, timeout=3600,
                          params={"return_task_ids": "true"}, json=[task_json(t) for t in tasks])
        resp.raise_for_status()
        body = resp.json()
        ids = [int(i) for i in body.get("task_ids", [])]
        if body.get("task_count") != len(tasks) or len(ids) != len(tasks):
            raise RuntimeError(f"imported {body.get('task_count')} of {len(tasks)} tasks: {str(body)[:300]}")
        return ids

    async def annotate(self, tasks: Sequence[tuple[int, Task]], clients: int) -> tuple[int, list[float], int]:
        """`clients` concurrent annotators, each taking the next task from a shared queue: read the
        task (GET, like opening it), then submit the suggested labels as its annotation. Returns the
        annotations made, each one's read+submit time and how many submissions failed and were retried."""
        queue: asyncio.Queue[tuple[int, Task]] = asyncio.Queue()
        for item in tasks:
            queue.put_nowait(item)
        latencies: list[float] = []
        failures: list[int] = []
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=self.url, headers=self.headers, limits=limits, timeout=300) as http:
            async def annotator() -> int:
                done = 0
                while not queue.empty():
                    task_id, task = queue.get_nowait()
                    t0 = time.perf_counter()
                    (await http.get(f"/api/tasks/{task_id}")).raise_for_status()
                    for attempt in range(MAX_ATTEMPTS):
                        try:
                            resp = await http.post(f"/api/tasks/{task_id}/annotations",
                                                   json={"result": _choices(task.suggested), "lead_time": 20.0})
                        except httpx.TimeoutException:
                            failures.append(0)  # no answer in time: look, then submit again
                            if await self._annotated(http, task_id):
                                break
                            continue
                        if resp.status_code == 201:
                            break
                        # sqlite under concurrent writers can answer 500 "database is locked", possibly
                        # after the annotation was stored: look before submitting again; counted and
                        # reported. (Label Studio also retries locked writes itself, which is where the
                        # duplicate annotations in its export come from: they appear with no 500 at all.)
                        failures.append(resp.status_code)
                        if resp.status_code < 500 or attempt == MAX_ATTEMPTS - 1:
                            raise RuntimeError(f"annotation of task {task_id}: {resp.status_code} {resp.text[:300]}")
                        await asyncio.sleep(0.5)
                        if await self._annotated(http, task_id):
                            break
                    latencies.append(time.perf_counter() - t0)
                    done += 1
                return done

            counts = await asyncio.gather(*(annotator() for _ in range(clients)))
        return sum(counts), latencies, len(failures)

    @staticmethod
    async def _annotated(http: httpx.AsyncClient, task_id: int) -> bool:
        for _ in range(MAX_ATTEMPTS):
            resp = await http.get(f"/api/tasks/{task_id}")
            if resp.status_code == 200:
                return bool(resp.json().get("annotations"))
            await asyncio.sleep(0.5)
        raise RuntimeError(f"task {task_id}: {resp.status_code} {resp.text[:300]}")

    def export(self, project: int, out: Path) -> int:
        """The JSON export (annotated tasks) downloaded to `out`; returns the annotations it holds."""
        import json

        with httpx.stream("GET", f"{self.url}/api/projects/{project}/export", headers=self.headers,
                          params={"exportType": "JSON"}, timeout=3600) as resp:
            resp.raise_for_status()
            with open(out, "wb") as f:
                for chunk in resp.iter_bytes():
                    f.write(chunk)
        return sum(len(t.get("annotations", [])) for t in json.loads(out.read_bytes()))
