"""Progress of long work: live bars on a terminal, a few plain lines in CI logs, nothing with --quiet."""

from __future__ import annotations

import io

import pytest
from typer.testing import CliRunner

from radcurate import progress
from radcurate.cli import app


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_mode_follows_the_flag_the_terminal_and_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert progress.choose_mode(stream=Terminal()) == "live"
    assert progress.choose_mode(stream=io.StringIO()) == "plain"
    assert progress.choose_mode(quiet=True, stream=Terminal()) == "quiet"
    monkeypatch.setenv("CI", "true")
    assert progress.choose_mode(stream=Terminal()) == "plain"


def test_plain_mode_prints_a_line_about_every_tenth_with_rate_and_eta(monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_MIN_SECONDS", 0.0)
    out = io.StringIO()
    reporter = progress.Reporter("plain", out)
    with reporter.task("ingest", total=100, unit="studies") as task:
        for _ in range(100):
            task.advance()
    lines = out.getvalue().splitlines()
    assert lines[0] == "ingest: started, 100 studies"
    assert len(lines) == 12  # start, 10 % ... 100 %, summary
    assert lines[1].startswith("ingest: 10/100 studies (") and "studies/s, ETA " in lines[1]
    assert lines[-1].startswith("ingest: 100/100 studies in ") and "studies/s)" in lines[-1]


def test_plain_mode_throttles_lines_in_time(monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_MIN_SECONDS", 3600.0)
    out = io.StringIO()
    with progress.Reporter("plain", out).task("export", total=1000, unit="files") as task:
        task.update(1000)
    assert len(out.getvalue().splitlines()) == 2  # started, summary


def test_quiet_mode_prints_nothing_and_library_use_is_silent(capsys):
    out = io.StringIO()
    with progress.Reporter("quiet", out).task("synth", total=3) as task:
        task.advance(3)
    with progress.current().task("no command installed a reporter", total=2) as task:
        task.advance(2)
    assert out.getvalue() == "" and capsys.readouterr().err == ""


def test_live_mode_draws_a_bar_with_counts_and_rate():
    out = Terminal()
    reporter = progress.Reporter("live", out)
    with reporter.task("synth DICOM", total=4, unit="studies") as task:
        task.advance(4)
    reporter.close()
    assert "synth DICOM" in out.getvalue() and "4/4" in out.getvalue() and "studies/s" in out.getvalue()


@pytest.mark.parametrize("quiet", [False, True])
def test_synth_reports_progress_unless_quiet(tmp_path, quiet):
    result = CliRunner().invoke(app, ["synth", "--studies", "3", "--out", str(tmp_path), *(["-q"] if quiet else [])])
    assert result.exit_code == 0, result.output
    assert "wrote 3 studies" in result.stdout
    assert ("synth DICOM: 3/3 studies in" in result.stderr) is not quiet
    assert (result.stderr == "") is quiet
