"""The demo's per-step CPU figures (radcurate/cpu_clock.py), read from /proc for real processes."""

from __future__ import annotations

import subprocess
import sys
import time

from radcurate.cpu_clock import CLIENT, StepClock, describe, spent, stack_cpu

BURN = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\ntime.sleep(30)"


def test_each_step_gets_the_cpu_its_processes_spent_in_it():
    busy = subprocess.Popen([sys.executable, "-c", BURN])
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        state = {"services": {"busy": {"pid": busy.pid}, "idle": {"pid": idle.pid}}}
        timings: dict[str, float] = {}
        clock = StepClock(state, timings)
        while stack_cpu(state)["busy"] < 0.4:  # the child burns 0.4 s of CPU, then sleeps
            time.sleep(0.05)
        clock.lap("burn", 1.5)
        end = time.process_time() + 0.2
        while time.process_time() < end:  # this process's own share: the 'client'
            pass
        clock.lap("client work", 0.2)
    finally:
        busy.kill()
        idle.kill()
    assert timings == {"burn": 1.5, "client work": 0.2}
    assert clock.cpu["burn"]["busy"] >= 0.3
    assert clock.cpu["burn"]["idle"] < 0.1
    assert clock.cpu["client work"]["busy"] < 0.1
    assert clock.cpu["client work"][CLIENT] >= 0.15
    lines = clock.lines()
    assert lines[0].split()[0] == "burn" and "busy" in lines[0] and "s CPU" in lines[0]


def test_a_restarted_process_counts_from_zero():
    assert spent({"gateway": 5.0, "s3": 1.0}, {"gateway": 0.5, "s3": 1.5}) == {"gateway": 0.5, "s3": 0.5}


def test_describe_lists_the_busiest_first_and_leaves_out_the_idle():
    assert describe({"s3": 1.25, "gateway": 3.0, "mapper": 0.01}) == "4.3 s CPU: gateway 3.0, s3 1.2"
    assert describe({}) == "0.0 s CPU"


def test_a_process_that_is_gone_reads_zero():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert stack_cpu({"services": {"gone": {"pid": gone.pid}}})["gone"] == 0.0
