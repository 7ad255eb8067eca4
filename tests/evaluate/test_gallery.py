"""The evaluation report's error gallery, calibration sentence and per-domain axis."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mitotype.evaluate import gallery
from mitotype.evaluate.plots import _spread_limits
from mitotype.evaluate.report import calibration_words


def test_ranked_errors_most_wrong_first():
    labels = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    probs = np.array([0.9, 0.6, 0.1, 0.05, 0.4, 0.8, 0.99, 0.5])
    ranked = gallery.ranked_errors(labels, probs, threshold=0.5)
    assert list(ranked["false positives"]) == [6, 0, 1]  # normal called atypical, highest P first
    assert list(ranked["false negatives"]) == [3, 4]  # atypical called normal, lowest P first (0.5 is called)
    assert list(gallery.ranked_errors(labels, probs, 0.5, limit=1)["false positives"]) == [6]


def test_evaluate_writes_the_gallery_with_predicted_masks(tmp_path, amibr_root):
    """The shipped (multi-task) model on 40 real test crops: errors.png exists, is linked in the report,
    and the outline comes from its segmentation head."""
    from mitotype.data.images import load_images
    from mitotype.data.spec import load_figures
    from mitotype.evaluate.run import evaluate
    from mitotype.models.modelfile import load_model

    figures = load_figures(f"amibr:{amibr_root}:split=test")
    rng = np.random.default_rng(3)
    pick = [figures[i] for i in rng.choice(len(figures), 40, replace=False)]
    evaluate(["default"], "amibr:subset", tmp_path, figures=pick, n_boot=20, device="cpu")
    report = (tmp_path / "report.md").read_text()
    assert "](errors.png)" in report and "**Calibration:**" in report
    assert "`default` (`" in report and "default.pt`)" in report  # names the shipped file, not "model"
    image = np.asarray(Image.open(tmp_path / "errors.png").convert("RGB"))
    assert image.shape[0] > 300 and image.std() > 20
    masks = gallery.predicted_masks(load_model("default"), load_images(pick[:4], 128))
    assert masks.shape == (4, 128, 128) and 0.01 < (masks > 0.5).mean() < 0.6  # a figure, not the crop


@pytest.mark.parametrize("observed, expected", [
    ([0.03, 0.52, 0.55], "over-confident"),
    ([0.03, 0.9, 0.95], "under-confident"),
    ([0.04, 0.66, 0.74], "matches the observed atypical rate"),
])
def test_calibration_words(observed, expected):
    cal = {"mean_predicted": [0.03, 0.65, 0.75], "observed": observed, "count": [300, 40, 40]}
    assert expected in calibration_words(cal)


def test_calibration_words_ignore_small_bins():
    cal = {"mean_predicted": [0.05, 0.95], "observed": [0.05, 0.2], "count": [300, 5]}
    assert "within" in calibration_words(cal)


def test_domain_axis_shows_the_spread():
    rows = [("a", {"balanced_accuracy": 0.70, "ci95": {"balanced_accuracy": [0.64, 0.80]}}),
            ("b", {"balanced_accuracy": 0.82, "ci95": {"balanced_accuracy": [0.76, 0.87]}})]
    lo, hi = _spread_limits(rows, "balanced_accuracy")
    assert 0.55 < lo < 0.64 and 0.87 < hi < 0.95
    assert _spread_limits([("a", {"balanced_accuracy": None})], "balanced_accuracy") == (0.0, 1.0)
