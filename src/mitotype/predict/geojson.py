"""Figures as QuPath-importable GeoJSON detections.

One ``Feature`` per figure: a ``Point`` at its level-0 pixel position (origin top-left) or, with
``square=SIDE``, the ``Polygon`` of the crop the model saw (SIDE level-0 pixels, centred there; the centre
is kept in the measurements ``x``/``y``), so that reviewers see the field of view. ``objectType``
``detection``, a classification ``Atypical``/``Normal`` *with* a colour (QuPath refuses a classification
without one) and ``p_atypical`` as a measurement. Ids are ``uuid5`` of slide name and position, so the
same figure gets the same id on every run and machine (QuPath ignores ids that are not UUIDs).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mitotype.errors import MitotypeError
from mitotype.io import write_json

# A fixed namespace for this package's ids (derived once from its name; never change it).
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://pypi.org/project/mitotype/")
CLASSES = {"atypical": ("Atypical", [220, 40, 40]), "normal": ("Normal", [40, 170, 70])}


def figure_id(slide: str, x: float, y: float) -> str:
    """Deterministic UUID for the figure at ``(x, y)`` of ``slide`` (its file name, not its full path)."""
    return str(uuid.uuid5(NAMESPACE, f"{Path(slide).name}:{float(x):g}:{float(y):g}"))


def square(x: float, y: float, side: float) -> dict[str, Any]:
    """A closed, counter-clockwise (in y-down pixel space: top-left, bottom-left, ...) square polygon."""
    h = side / 2
    ring = [[x - h, y - h], [x - h, y + h], [x + h, y + h], [x + h, y - h], [x - h, y - h]]
    return {"type": "Polygon", "coordinates": [ring]}


def to_feature(row: Mapping[str, Any], slide: str, square_side: float | None = None) -> dict[str, Any]:
    """One prediction row (``x``, ``y``, ``p_atypical``, ``class``) as a QuPath detection: a point, or the
    crop's square when ``square_side`` (level-0 pixels) is given."""
    try:
        x, y = float(row["x"]), float(row["y"])
        p = float(row["p_atypical"])
        name, color = CLASSES[str(row["class"])]
    except (KeyError, TypeError, ValueError) as exc:
        raise MitotypeError(f"GeoJSON needs x, y, p_atypical and class per figure; got {dict(row)} ({exc})") from None
    measurements = {"p_atypical": p}
    if square_side is None:
        geometry = {"type": "Point", "coordinates": [x, y]}
    else:
        geometry = square(x, y, float(square_side))
        measurements.update(x=x, y=y)
    return {
        "type": "Feature",
        "id": figure_id(slide, x, y),
        "geometry": geometry,
        "properties": {
            "objectType": "detection",
            "classification": {"name": name, "color": color},
            "measurements": measurements,
        },
    }


def feature_collection(rows: Iterable[Mapping[str, Any]], slide: str, square_side: float | None = None
                       ) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": [to_feature(row, slide, square_side) for row in rows]}


def write_geojson(path: str | Path, rows: Iterable[Mapping[str, Any]], slide: str,
                  square_side: float | None = None) -> None:
    """Write the figures of one slide atomically; every row needs a position (slide predictions)."""
    write_json(path, feature_collection(rows, slide, square_side))
