"""A real PACS for tests: Orthanc (Debian packages) with its DICOMweb and GDCM plug-ins, started as
a plain process with a temporary JSON config.

Orthanc 1.10 binds its HTTP server to every interface whatever the config says, so it may only run
where loopback is the only interface: inside a network namespace of its own (`unshare -n`, see
tests/integration/test_pacs_ingest.py). `start_orthanc` refuses to start anywhere else.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ORTHANC = "Orthanc"
PLUGINS = Path("/usr/share/orthanc/plugins")
DICOMWEB_PLUGIN = PLUGINS / "libOrthancDicomWeb.so"
GDCM_PLUGIN = PLUGINS / "libOrthancGdcm.so"  # without it Orthanc cannot transcode JPEG 2000


@dataclass
class RunningOrthanc:
    process: subprocess.Popen
    http_url: str
    log: Path

    @property
    def dicomweb_url(self) -> str:
        return f"{self.http_url}/dicom-web"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def missing_prerequisites() -> str | None:
    """Why Orthanc cannot be started here, or None."""
    if shutil.which(ORTHANC) is None:
        return "Orthanc is not installed (make setup installs orthanc, orthanc-dicomweb, orthanc-gdcm)"
    for plugin in (DICOMWEB_PLUGIN, GDCM_PLUGIN):
        if not plugin.exists():
            return f"{plugin} is missing (make setup installs orthanc-dicomweb and orthanc-gdcm)"
    return None


def non_loopback_interfaces() -> list[str]:
    """The network interfaces of this process's namespace other than loopback (/proc/self/net/dev
    follows the namespace; /sys/class/net shows the one sysfs was mounted in)."""
    lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    return sorted(name for line in lines if (name := line.split(":", 1)[0].strip()) != "lo")


def start_orthanc(workdir: Path, port: int = 8042, timeout: float = 60) -> RunningOrthanc:
    """Start Orthanc with its DICOMweb and GDCM plug-ins; DIMSE off (nothing listens on 4242)."""
    others = non_loopback_interfaces()
    if others:
        raise RuntimeError(f"refusing to start Orthanc: it would listen on {', '.join(others)} too;"
                           " run it inside `unshare -n` where loopback is the only interface")
    if reason := missing_prerequisites():
        raise RuntimeError(reason)
    storage = workdir / "orthanc-db"
    storage.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "RadCurateTestPACS", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
        "HttpPort": port, "RemoteAccessAllowed": False, "DicomServerEnabled": False, "WebDavEnabled": False,
        "HttpDescribeErrors": True, "Plugins": [str(DICOMWEB_PLUGIN), str(GDCM_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
    }
    config_path = workdir / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    log = workdir / "orthanc.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([ORTHANC, str(config_path)], stdout=out, stderr=subprocess.STDOUT)
    running = RunningOrthanc(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{running.dicomweb_url}/studies", timeout=2).status_code == 200:
                return running
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    running.stop()
    raise RuntimeError(f"Orthanc did not answer within {timeout:.0f}s: {log.read_text()[-2000:]}")
