"""Plots: each writes a readable PNG, including the edge cases (one class, undefined metrics, empty grid)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mitotype.evaluate import plots
from mitotype.metrics import calibration, compute_metrics


def _png(path):
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 200 and im.height > 200
        pixels = np.asarray(im.convert("L"))
    assert pixels.std() > 5  # something was drawn, not a blank canvas
    return pixels


@pytest.fixture(scope="module")
def predictions():
    rng = np.random.default_rng(0)
    labels = (rng.random(300) < 0.3).astype(int)
    probs = np.clip(0.3 * labels + rng.uniform(0, 0.7, 300), 0, 1)
    domains = np.array(["scanner A", "scanner B", "only normal"])[rng.integers(0, 2, 300)]
    domains[:20] = "only normal"
    labels[:20] = 0
    return labels, probs, domains


def test_every_evaluation_plot(tmp_path, predictions):
    labels, probs, domains = predictions
    m = compute_metrics(labels, probs, 0.5, domains=domains, n_boot=100)
    assert m["per_domain"]["only normal"]["balanced_accuracy"] is None
    plots.roc_plot(labels, probs, 0.5, tmp_path / "roc.png", auroc=m["auroc"])
    plots.confusion_plot(m["confusion"], tmp_path / "cm.png")
    plots.domain_plot(m, tmp_path / "dom.png")  # an undefined domain is written as text, not a crash
    plots.reliability_plot(calibration(labels, probs), tmp_path / "rel.png")
    for name in ("roc", "cm", "dom", "rel"):
        _png(tmp_path / f"{name}.png")
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_roc_with_one_class(tmp_path):
    plots.roc_plot(np.zeros(10, int), np.linspace(0, 1, 10), 0.5, tmp_path / "roc.png")
    _png(tmp_path / "roc.png")


def test_experiment_plot_with_missing_cells(tmp_path):
    rows = [
        {"test_set": "published", "config": "stl", "mean": 0.75, "sd": 0.01, "values": [0.74, 0.76],
         "delta": None, "delta_ci_low": None, "delta_ci_high": None},
        {"test_set": "published", "config": "mtl", "mean": 0.76, "sd": None, "values": [0.76, None],
         "delta": 0.01, "delta_ci_low": -0.02, "delta_ci_high": 0.04},
        {"test_set": "lodo:TUPAC16", "config": "stl", "mean": None, "sd": None, "values": [],
         "delta": None, "delta_ci_low": None, "delta_ci_high": None},
    ]
    plots.experiment_plot(rows, tmp_path / "exp.png", reference="stl")
    _png(tmp_path / "exp.png")
    plots.experiment_plot([], tmp_path / "empty.png")
    assert (tmp_path / "empty.png").is_file()
