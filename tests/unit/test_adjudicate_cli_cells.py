"""`radcurate adjudicate --cell` reads a grid protocol's disputed cell, or exits 2 naming the problem."""

from __future__ import annotations

import pytest
import typer

from radcurate.api_cmd import _cell


def test_a_cell_with_and_without_its_point():
    assert _cell("spinal_canal_stenosis_l4_l5=Severe") == {"cell_id": "spinal_canal_stenosis_l4_l5", "grade": "Severe"}
    assert _cell("spinal_canal_stenosis_l4_l5=Normal/Mild@1.2.3,7,30.5,41") == {
        "cell_id": "spinal_canal_stenosis_l4_l5", "grade": "Normal/Mild",
        "point": {"series_instance_uid": "1.2.3", "instance_number": 7, "x": 30.5, "y": 41.0}}


@pytest.mark.parametrize("text", ["spinal_canal_stenosis_l4_l5", "=Severe", "c=Severe@1.2.3,seven,1,2",
                                  "c=Severe@1.2.3,7,1", "c=Severe@1.2.3,7,1,2,3"])
def test_a_malformed_cell_exits_2(text, capsys):
    with pytest.raises(typer.Exit) as err:
        _cell(text)
    assert err.value.exit_code == 2 and "--cell" in capsys.readouterr().err
