"""QuPath GeoJSON: point detections with coloured classifications and deterministic UUIDs."""

from __future__ import annotations

import json
import uuid

import pytest

from mitotype.errors import MitotypeError
from mitotype.predict.geojson import feature_collection, figure_id, write_geojson

ROWS = [
    {"source": "s.svs", "index": 0, "x": 100.0, "y": 200.5, "p_atypical": 0.91, "class": "atypical"},
    {"source": "s.svs", "index": 1, "x": 300.0, "y": 50.0, "p_atypical": 0.12, "class": "normal"},
]


def test_feature_collection_is_what_qupath_reads(tmp_path):
    write_geojson(tmp_path / "f.geojson", ROWS, "/data/slides/s.svs")
    data = json.loads((tmp_path / "f.geojson").read_text())
    assert data["type"] == "FeatureCollection" and len(data["features"]) == 2
    first, second = data["features"]
    assert first["type"] == "Feature"
    assert first["geometry"] == {"type": "Point", "coordinates": [100.0, 200.5]}
    props = first["properties"]
    assert props["objectType"] == "detection"
    assert props["classification"]["name"] == "Atypical"
    assert len(props["classification"]["color"]) == 3  # QuPath fails on a classification without colour
    assert props["measurements"] == {"p_atypical": 0.91}
    assert second["properties"]["classification"]["name"] == "Normal"
    assert first["properties"]["classification"]["color"] != second["properties"]["classification"]["color"]
    assert uuid.UUID(first["id"]).version == 5


def test_ids_are_deterministic_and_distinct():
    a = feature_collection(ROWS, "/x/s.svs")
    b = feature_collection(ROWS, "/elsewhere/s.svs")  # same slide name, other folder: same ids
    assert [f["id"] for f in a["features"]] == [f["id"] for f in b["features"]]
    assert a["features"][0]["id"] != a["features"][1]["id"]
    assert figure_id("s.svs", 1, 2) != figure_id("t.svs", 1, 2)
    assert figure_id("s.svs", 1, 2) == figure_id("s.svs", 1.0, 2.0)


def test_rows_without_positions_are_refused():
    with pytest.raises(MitotypeError, match="x, y"):
        feature_collection([{"source": "a.png", "index": 0, "x": None, "y": None, "p_atypical": 0.5,
                             "class": "normal"}], "a.png")
