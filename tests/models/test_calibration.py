"""Temperature scaling and class-conditional conformal prediction sets."""

from __future__ import annotations

import numpy as np
import pytest

from mitotype.errors import MitotypeError
from mitotype.models import calibration as C


def overconfident(n=4000, seed=0):
    """True P(atypical) from a logistic model; the 'model' reports logits three times too large."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-1.0, 1.5, n)
    y = (rng.uniform(size=n) < C.sigmoid(z)).astype(int)
    return y, C.sigmoid(3.0 * z)


def test_temperature_repairs_an_overconfident_model():
    y, p = overconfident()
    t = C.fit_temperature(y, p)
    assert t == pytest.approx(3.0, rel=0.1)
    assert C.log_loss(y, C.sigmoid(C.logit(p) / t)) < C.log_loss(y, p) - 0.05
    with pytest.raises(MitotypeError, match="both classes"):
        C.fit_temperature(np.zeros(5), np.full(5, 0.3))


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2])
def test_conformal_sets_reach_their_coverage_per_class(alpha):
    """Exchangeable synthetic scores, atypical rare (20%): each class covered at >= 1 - alpha (mean over
    repetitions; the guarantee is marginal over calibration sets)."""
    covered = {"normal": [], "atypical": []}
    for seed in range(40):
        y, p = overconfident(n=1200, seed=seed)
        cal, test = slice(0, 600), slice(600, None)
        sets = C.prediction_sets(p[test], C.conformal_scores(y[cal], p[cal]), alpha)
        cov = C.coverage(y[test], sets)
        covered["normal"].append(cov["normal"])
        covered["atypical"].append(cov["atypical"])
    for name, values in covered.items():
        assert np.mean(values) >= 1 - alpha - 0.01, name
        assert np.mean(values) <= 1 - alpha + 0.06, name  # not trivially 'both' everywhere


def test_prediction_set_rules():
    scores = {"normal": [0.1, 0.2, 0.3, 0.4], "atypical": [0.1, 0.2, 0.3, 0.4]}
    # alpha 0.4: k = ceil(5 * 0.6) = 3 -> q = 0.3 for both classes
    assert C.quantile(scores["normal"], 0.4) == 0.3
    assert C.prediction_sets([0.1, 0.9, 0.5, 0.69], scores, 0.4) == ["normal", "atypical", "none", "none"]
    assert C.prediction_sets([0.3, 0.7], scores, 0.4) == ["normal", "atypical"]
    assert C.quantile(scores["normal"], 0.01) == float("inf")  # too few scores: always in the set
    assert C.prediction_sets([0.5], scores, 0.01) == ["both"]
    with pytest.raises(MitotypeError, match="error level"):
        C.quantile([0.1], 1.5)


def test_calibrate_bakes_the_temperature_into_the_model_file(tmp_path, amibr_root):
    """On the shipped model and 60 real test crops: the written file reports sigmoid(logit(p) / T),
    keeps the ranking and every decision, and carries the conformal reference."""
    from mitotype.cli import main
    from mitotype.data.images import load_images
    from mitotype.data.spec import load_figures
    from mitotype.models.inference import predict_proba
    from mitotype.models.modelfile import load_model

    figures = load_figures(f"amibr:{amibr_root}:split=test")[::14]
    import pandas as pd

    pd.DataFrame({"path": [f.path for f in figures], "label": [f.label for f in figures]}).to_csv(
        tmp_path / "cal.csv", index=False)
    out = tmp_path / "calibrated.pt"
    assert main(["calibrate", "--model", "default", "--data", f"manifest:{tmp_path / 'cal.csv'}",
                 "--out", str(out)]) == 0
    before, after = load_model("default"), load_model(out)
    t = after.meta["calibration"]["temperature"]
    assert t != pytest.approx(1.0, abs=1e-3)
    images = load_images(figures, 128)
    p0, p1 = predict_proba([before], images), predict_proba([after], images)
    np.testing.assert_allclose(p1, C.sigmoid(C.logit(p0) / t), atol=1e-5)
    assert ((p0 >= before.threshold) == (p1 >= after.threshold)).all()
    scores = after.meta["conformal"]["scores"]
    assert len(scores["atypical"]) == sum(f.label for f in figures)
    with pytest.raises(SystemExit) as refused:
        main(["calibrate", "--model", str(out), "--data", "manifest:nope.csv", "--out", str(tmp_path / "x.pt"),
              "--alpha", "2"])
    assert refused.value.code == 2
    assert main(["calibrate", "--model", str(out), "--data", "manifest:nope.csv", "--out",
                 str(tmp_path / "x.pt")]) == 2  # missing data: a clear error, no file written
    assert not (tmp_path / "x.pt").exists()
