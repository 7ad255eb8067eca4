"""The table's statistics from stored predictions: k-fold pooling, mean and sd over seeds, and the paired
differences with their interval (``metrics.paired_bootstrap``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from mitotype.experiment.spec import load_experiment
from tests.experiment.conftest import write_yaml


def test_table_statistics_from_stored_predictions(tmp_path):
    """tabulate(): k-fold pooling, mean/sd over seeds, paired differences, a missing fold, a missing seed."""
    from mitotype.data.figure import Figure
    from mitotype.evaluate.run import write_predictions
    from mitotype.experiment.plan import Run
    from mitotype.experiment.table import tabulate

    exp = load_experiment(write_yaml(tmp_path / "e.yaml", {
        "data": "amibr:x", "seeds": [0, 1, 2], "protocols": {"cv": {"kind": "kfold", "k": 2}},
        "configs": {"stl": {}, "mtl": {}}, "evaluate": {"n_boot": 300}}))
    rng = np.random.default_rng(0)
    n = 120
    figures = [Figure(path=f"/img/{i}.png", label=int(rng.random() < 0.3), domain="d", group=f"slide{i % 20}")
               for i in range(n)]
    labels = np.array([f.label for f in figures])
    folds = [np.arange(n)[np.arange(n) % 20 < 10], np.arange(n)[np.arange(n) % 20 >= 10]]
    runs, probs = [], {}
    for config, signal in (("stl", 0.2), ("mtl", 0.35)):
        for seed in exp.seeds:
            p = np.clip(signal * labels + rng.uniform(0.2, 0.7, n), 0, 1)
            probs[(config, seed)] = p
            for k, test in enumerate(folds):
                run = Run(config, "cv", f"fold{k}", "cv", seed, folds[1 - k], test)
                runs.append(run)
                if config == "mtl" and seed == 2 and k == 1:
                    continue  # an unfinished fold: that seed must not enter the table
                d = tmp_path / "runs" / run.id / "eval"
                write_predictions(d / "predictions.csv", [figures[i] for i in test], p[test], 0.5 + 0.02 * k)
                (d / "metrics.json").write_text(json.dumps({"threshold": 0.5 + 0.02 * k}))
    rows = {(r["config"], r["metric"]): r for r in tabulate(exp, runs, tmp_path / "runs", n_boot=300)}

    thr = np.where(np.arange(n) % 20 < 10, 0.5, 0.52)  # each fold at its own model's threshold

    def bacc(config, seed):
        return skm.balanced_accuracy_score(labels, probs[(config, seed)] >= thr)

    stl = [bacc("stl", s) for s in (0, 1, 2)]
    mtl = [bacc("mtl", s) for s in (0, 1)]
    r = rows[("stl", "balanced_accuracy")]
    assert r["n_seeds"] == 3 and r["n_test"] == n
    assert r["mean"] == pytest.approx(np.mean(stl)) and r["sd"] == pytest.approx(np.std(stl, ddof=1))
    r = rows[("mtl", "balanced_accuracy")]
    assert r["n_seeds"] == 2 and r["values"] == pytest.approx(mtl)
    assert r["paired_seeds"] == 2  # seed 2 has no complete mtl result
    assert r["delta"] == pytest.approx(np.mean(mtl) - np.mean(stl[:2]))
    assert r["delta_ci_low"] < r["delta"] < r["delta_ci_high"]
    assert r["delta_ci_low"] > 0  # a real difference in signal shows up as an interval above 0
    auroc = [skm.roc_auc_score(labels, probs[("mtl", s)]) for s in (0, 1)]
    assert rows[("mtl", "auroc")]["mean"] == pytest.approx(np.mean(auroc))


def test_difference_interval_covers_seed_to_seed_variation(tmp_path):
    """Seeds that disagree (one helps, one hurts) must give a wide interval around their mean difference,
    even where the test set is large enough for each seed's own slide interval to be narrow."""
    from mitotype.data.figure import Figure
    from mitotype.evaluate.run import write_predictions
    from mitotype.experiment.plan import Run
    from mitotype.experiment.table import tabulate

    rng = np.random.default_rng(1)
    n = 2000
    figures = [Figure(path=f"/img/{i}.png", label=int(rng.random() < 0.3), domain="d", group=f"slide{i % 200}")
               for i in range(n)]
    labels = np.array([f.label for f in figures])
    noise = rng.uniform(0.0, 0.6, n)  # shared by both configs: paired differences come from the signal only

    def table(signals):
        exp = load_experiment(write_yaml(tmp_path / "e.yaml", {
            "data": "amibr:x", "seeds": [0, 1, 2], "protocols": {"published": {}},
            "configs": {"stl": {}, "mtl": {}}, "metrics": ["auroc"]}))
        runs = []
        for config, signal in signals.items():
            for seed in exp.seeds:
                run = Run(config, "published", "test", "published", seed, np.arange(0), np.arange(n))
                runs.append(run)
                p = np.clip(signal[seed] * labels + noise + 0.01 * rng.standard_normal(n), 0, 1)
                write_predictions(tmp_path / "runs" / run.id / "eval" / "predictions.csv", figures, p, 0.5)
                (tmp_path / "runs" / run.id / "eval" / "metrics.json").write_text(json.dumps({"threshold": 0.5}))
        return {r["config"]: r for r in tabulate(exp, runs, tmp_path / "runs", n_boot=400)}["mtl"]

    steady = table({"stl": [0.2, 0.2, 0.2], "mtl": [0.25, 0.25, 0.25]})
    split = table({"stl": [0.2, 0.2, 0.2], "mtl": [0.45, 0.25, 0.05]})
    assert len(split["delta_values"]) == 3 and split["delta"] == pytest.approx(np.mean(split["delta_values"]))
    assert split["delta_values"][0] > 0.05 > -0.05 > split["delta_values"][2]  # the seeds really disagree
    steady_width = steady["delta_ci_high"] - steady["delta_ci_low"]
    split_width = split["delta_ci_high"] - split["delta_ci_low"]
    assert split_width > 3 * steady_width
    assert split["delta_ci_low"] < min(split["delta_values"]) / 2
    assert split["delta_ci_high"] > max(split["delta_values"]) / 2
