"""Start a service process before its settings exist: import it now, run it when they arrive.

`radcurate up` starts the five service processes while SeaweedFS, Postgres and the broker are
still coming up. Importing a service (FastAPI, pydantic, psycopg, aiokafka, minio, numpy) costs
~2-3 s of CPU each, ~12 s for all five on a 2-core machine: paid in parallel with the
infrastructure's start-up instead of after it. Each process then blocks on its stdin until `up`
writes the service's environment (database DSN, broker and S3 endpoints, credentials, port) as
one JSON object and closes the pipe; only then are the settings read and the app served, exactly
as `python -m services.<name>` would do with that environment from the start.

This holds because importing a service reads no RADCURATE_* variable (settings are built in its
`__main__`, `services/common/settings.py`); tests/integration/test_stack_launch.py checks it. A
pipe closed without an environment (the `up` that started it failed) ends the process with
status 0 before anything is started.

Run: python -m radcurate.stack.launch <service>   (environment as JSON on stdin)
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import sys

SERVICES = ("extractor", "mapper", "sampler", "consensus", "gateway")


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in SERVICES:
        print(f"usage: python -m radcurate.stack.launch {{{','.join(SERVICES)}}}", file=sys.stderr)
        return 2
    service = argv[0]
    importlib.import_module(f"services.{service}.app")  # the expensive part, done while we wait
    message = sys.stdin.buffer.read()
    if not message.strip():
        return 0  # `up` gave up before the infrastructure was ready: nothing was started
    env = json.loads(message)["env"]
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        print("launch: the environment must map names to strings", file=sys.stderr)
        return 2
    os.environ.update(env)
    sys.argv = [f"services.{service}"]
    runpy.run_module(f"services.{service}", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
