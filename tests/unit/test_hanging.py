"""The hanging protocol: frontal left, lateral right, from ViewPosition or SeriesDescription."""

from services.gateway.hanging import hang, view_of


def test_the_view_comes_from_view_position_else_from_the_series_description():
    assert view_of("LL", "") == "lateral"
    assert view_of(None, "CHEST LAT") == "lateral"
    assert view_of("PA", "CHEST PA") == "frontal"
    assert view_of(None, "XR CHEST AP PORTABLE") == "frontal"
    assert view_of(None, "SCOUT") is None


def test_frontal_hangs_left_and_lateral_right_whatever_the_stored_order():
    objects = [{"series_description": "CHEST LL"}, {"series_description": "CHEST PA"}]
    views = hang(objects, "/api/v1/studies/S/image")
    assert [(v.view, v.instance) for v in views] == [("frontal", 1), ("lateral", 0)]
    assert views[1].image_url == "/api/v1/studies/S/image?instance=0"


def test_a_study_without_both_views_is_not_hung():
    assert hang([{"series_description": "CHEST PA"}], "/x") == []
    assert hang([{"series_description": "CHEST PA"}, {"series_description": "CHEST AP"}], "/x") == []
