"""`score_lumbar_files`: the competition metric over files, with clear errors."""

import json
import math

import pytest

from radcurate.lumbar.score_cmd import RESULT_KEYS, ScoreInputError, main, score_lumbar_files
from services.common.protocols.lumbar.competition import TRAIN_COLUMNS
from services.common.protocols.lumbar.grid import CONDITIONS, LEVELS
from services.common.protocols.lumbar.scoring import row_id


def _truth(tmp_path, rows):
    path = tmp_path / "train.csv"
    lines = [",".join(TRAIN_COLUMNS)] + [",".join([sid, *grades]) for sid, grades in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _submission(tmp_path, studies, proba=(1 / 3, 1 / 3, 1 / 3), skip=()):
    path = tmp_path / "submission.csv"
    lines = ["row_id,normal_mild,moderate,severe"]
    for sid in studies:
        for c in CONDITIONS:
            for lv in LEVELS:
                if row_id(sid, c, lv) not in skip:
                    lines.append(f"{row_id(sid, c, lv)},{proba[0]},{proba[1]},{proba[2]}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_uniform_predictions_score_log_three_on_every_term(tmp_path):
    truth = _truth(tmp_path, [("1", ["Normal/Mild"] * 24 + ["Severe"]), ("2", ["Moderate"] * 25)])
    result = score_lumbar_files(truth, _submission(tmp_path, ["1", "2"]))
    assert tuple(result) == RESULT_KEYS
    for key in ("spinal", "foraminal", "subarticular"):
        assert result[key] == pytest.approx(math.log(3))
    # no study has a severe spinal level: every study's label is 0, predicted 1/3
    assert result["any_severe_spinal"] == pytest.approx(-math.log(2 / 3))
    assert result["score"] == pytest.approx((3 * math.log(3) - math.log(2 / 3)) / 4)


def test_a_missing_row_is_a_clear_error_naming_the_file(tmp_path):
    truth = _truth(tmp_path, [("1", ["Normal/Mild"] * 25)])
    submission = _submission(tmp_path, ["1"], skip={row_id("1", CONDITIONS[0], LEVELS[0])})
    with pytest.raises(ScoreInputError, match="submission .*missing rows"):
        score_lumbar_files(truth, submission)


def test_malformed_truth_and_missing_files_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("study_id,foo\n1,2\n")
    with pytest.raises(ScoreInputError, match="truth .*missing columns"):
        score_lumbar_files(bad, bad)
    with pytest.raises(ScoreInputError, match="does not exist"):
        score_lumbar_files(tmp_path / "nope.csv", bad)


def test_the_command_prints_json_or_an_error(tmp_path, capsys):
    truth = _truth(tmp_path, [("1", ["Normal/Mild"] * 20 + ["Moderate"] * 5)])
    assert main(["--truth", str(truth), "--pred", str(_submission(tmp_path, ["1"]))]) == 0
    assert set(json.loads(capsys.readouterr().out)) == set(RESULT_KEYS)
    negative = _submission(tmp_path, ["1"], proba=(-1, 0, 1))
    assert main(["--truth", str(truth), "--pred", str(negative)]) == 2
    assert "negative values" in capsys.readouterr().err
