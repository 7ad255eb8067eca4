"""The track-2 metrics against scikit-learn on the same predictions, and the bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from mitotype.errors import MitotypeError
from mitotype.metrics import (
    METRICS,
    bootstrap_weights,
    calibration,
    compute_metrics,
    weighted_metrics,
)


def _predictions(n=600, seed=0, ties=False):
    """Labelled figures on 40 slides in 3 domains, with informative, imperfect probabilities."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.25).astype(int)
    probs = np.clip(0.3 * labels + rng.normal(0.35, 0.18, n), 0, 1)
    if ties:
        probs = np.round(probs, 1)  # many tied scores
    groups = np.array([f"slide{g}" for g in rng.integers(0, 40, n)])
    domains = np.array(["scanA", "scanB", "scanC"])[rng.integers(0, 3, n)]
    return labels, probs, groups, domains


def _sklearn(labels, probs, threshold):
    pred = (probs >= threshold).astype(int)
    return {
        "balanced_accuracy": skm.balanced_accuracy_score(labels, pred),
        "sensitivity": skm.recall_score(labels, pred, pos_label=1),
        "specificity": skm.recall_score(labels, pred, pos_label=0),
        "accuracy": skm.accuracy_score(labels, pred),
        "auroc": skm.roc_auc_score(labels, probs),
    }


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.62])
def test_pooled_and_per_domain_match_sklearn(ties, threshold):
    labels, probs, groups, domains = _predictions(ties=ties)
    out = compute_metrics(labels, probs, threshold, domains=domains, groups=groups, n_boot=200)
    ref = _sklearn(labels, probs, threshold)
    for name in METRICS:
        assert out[name] == pytest.approx(ref[name], abs=1e-12), name
    assert out["n"] == len(labels) and out["n_atypical"] == int(labels.sum())
    assert sorted(out["per_domain"]) == ["scanA", "scanB", "scanC"]
    for domain, sub in out["per_domain"].items():
        m = domains == domain
        ref = _sklearn(labels[m], probs[m], threshold)
        for name in METRICS:
            assert sub[name] == pytest.approx(ref[name], abs=1e-12), (domain, name)
        assert sub["n"] == int(m.sum())
    c = out["confusion"]
    assert c["tp"] + c["fn"] + c["tn"] + c["fp"] == len(labels)
    assert c["tp"] + c["fp"] == out["n_predicted_atypical"]


def test_weighted_metrics_match_sklearn_sample_weight():
    labels, probs, groups, _ = _predictions(n=300, ties=True)
    w = bootstrap_weights(groups, 5, np.random.default_rng(1))
    got = weighted_metrics(labels, probs, 0.5, w)
    pred = (probs >= 0.5).astype(int)
    for b in range(5):
        sw = w[b]
        assert got["auroc"][b] == pytest.approx(skm.roc_auc_score(labels, probs, sample_weight=sw))
        assert got["balanced_accuracy"][b] == pytest.approx(
            skm.balanced_accuracy_score(labels, pred, sample_weight=sw))
        assert got["accuracy"][b] == pytest.approx(skm.accuracy_score(labels, pred, sample_weight=sw))


def test_intervals_contain_point_and_resample_slides():
    labels, probs, groups, domains = _predictions(n=800)
    out = compute_metrics(labels, probs, 0.5, domains=domains, groups=groups, n_boot=500)
    assert out["bootstrap"]["unit"] == "group" and out["bootstrap"]["n_units"] == 40
    for summary in [out, *out["per_domain"].values()]:
        for name in METRICS:
            low, high = summary["ci95"][name]
            assert low <= summary[name] <= high, name
            assert high - low > 0, name
    # Without groups the figures are resampled; slide clustering cannot make that interval narrower
    # here, since groups are assigned at random (no real clustering) -- just check the unit switches.
    by_figure = compute_metrics(labels, probs, 0.5, n_boot=200)
    assert by_figure["bootstrap"]["unit"] == "figure"
    # one group per figure (folder: specs) is figure-level resampling, and is reported as such
    own = compute_metrics(labels, probs, 0.5, groups=[f"img{i}" for i in range(len(labels))], n_boot=10)
    assert own["bootstrap"]["unit"] == "figure" and own["bootstrap"]["n_units"] == len(labels)
    assert by_figure["per_domain"] == {}


def test_bootstrap_is_reproducible_and_seeded():
    labels, probs, groups, _ = _predictions()
    a = compute_metrics(labels, probs, 0.5, groups=groups, n_boot=100, seed=3)
    b = compute_metrics(labels, probs, 0.5, groups=groups, n_boot=100, seed=3)
    c = compute_metrics(labels, probs, 0.5, groups=groups, n_boot=100, seed=4)
    assert a["ci95"] == b["ci95"]
    assert a["ci95"] != c["ci95"]


def test_single_class_domain_gives_nulls_not_a_crash():
    labels = np.array([0, 0, 0, 1, 1, 0, 0, 0])
    probs = np.array([0.1, 0.7, 0.2, 0.9, 0.4, 0.3, 0.2, 0.1])
    domains = np.array(["a", "a", "a", "a", "a", "only_normal", "only_normal", "only_normal"])
    out = compute_metrics(labels, probs, 0.5, domains=domains, n_boot=50)
    sub = out["per_domain"]["only_normal"]
    assert sub["auroc"] is None and sub["sensitivity"] is None and sub["balanced_accuracy"] is None
    assert sub["specificity"] == 1.0 and sub["accuracy"] == 1.0
    assert sub["ci95"]["auroc"] is None and sub["ci95"]["specificity"] is not None
    assert out["auroc"] == pytest.approx(skm.roc_auc_score(labels, probs))


def test_bad_inputs_raise_mitotype_error():
    with pytest.raises(MitotypeError, match="labels must be 0"):
        compute_metrics([0, 2], [0.1, 0.2], 0.5)
    with pytest.raises(MitotypeError, match="differ in shape"):
        compute_metrics([0, 1], [0.1], 0.5)
    with pytest.raises(MitotypeError, match=r"in \[0, 1\]"):
        compute_metrics([0, 1], [0.1, 1.5], 0.5)
    with pytest.raises(MitotypeError, match="no labelled"):
        compute_metrics([], [], 0.5)


def test_calibration_bins_and_ece():
    labels = np.array([0, 0, 1, 1])
    probs = np.array([0.05, 0.05, 0.95, 0.95])
    cal = calibration(labels, probs, n_bins=10)
    assert sum(cal["count"]) == 4
    assert cal["ece"] == pytest.approx(0.05)
    assert cal["observed"][0] == 0.0 and cal["observed"][9] == 1.0 and cal["observed"][5] is None
