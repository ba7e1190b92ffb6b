"""Each service reads its own settings class through `Resources[<its settings>]`, so a misspelt
setting is a type error, not a silent `getattr` default (issue 13 §2).

The modules below are not (yet) under `make types` as a whole, so this runs mypy on them and
keeps only the errors about settings attributes; a deliberately misspelt read proves the check
sees through both the generic `Resources` and the gateway's `Res` dependency alias."""

from __future__ import annotations

import re
from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[2]
READERS = [
    "services/gateway/app.py", "services/gateway/deps.py", "services/gateway/api/routes/users.py",
    "services/gateway/api/routes/studies.py", "services/gateway/api/routes/pacs_imports.py",
    "services/consensus/app.py", "services/consensus/handlers.py", "services/sampler/handlers.py",
    "services/extractor/handlers.py", "services/mapper/handlers.py",
]
TYPOS = '''
from services.common.runtime import Resources
from services.consensus.app import ConsensusSettings
from services.gateway.deps import Res


def consensus(res: Resources[ConsensusSettings]) -> float:
    return res.settings.gauge_refresh_secnds


def gateway_route(res: Res) -> int:
    return res.settings.presigned_url_secnds
'''
UNKNOWN_SETTING = re.compile(r'^(?P<file>\S+?):\d+: error: "(?P<cls>\w*Settings)" has no attribute "(?P<name>\w+)"',
                             re.MULTILINE)


def test_settings_reads_are_type_checked_and_a_typo_is_caught(tmp_path, monkeypatch):
    typos = tmp_path / "settings_typos.py"
    typos.write_text(TYPOS)
    monkeypatch.chdir(ROOT)
    out, err, _ = api.run([*READERS, str(typos), "--no-error-summary", "--show-absolute-path"])
    unknown = {(Path(m["file"]).name, m["cls"], m["name"]) for m in UNKNOWN_SETTING.finditer(out)}
    assert not err
    assert unknown == {("settings_typos.py", "ConsensusSettings", "gauge_refresh_secnds"),
                       ("settings_typos.py", "GatewaySettings", "presigned_url_secnds")}
