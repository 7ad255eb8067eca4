"""``mitotype experiment``: the grid, manifests, resuming, the table of the finished runs, and (slow) the real
smoke experiment end to end with the real trainer."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from mitotype.cli import main
from mitotype.errors import MitotypeError
from mitotype.experiment import load_experiment, run_experiment
from tests.experiment.conftest import REPO, FakeTrainer


@pytest.mark.slow
def test_grid_resume_and_table(grid, tmp_path, monkeypatch):
    import mitotype.train.run as train_run

    out = tmp_path / "out"
    fake = FakeTrainer(interrupt="mtl/cv/fold1/seed0")
    monkeypatch.setattr(train_run, "train", fake)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(grid, out)
    n_before = len(fake.calls)
    # 2 configs x 2 seeds x (1 + 2 parts) = 12 runs; the interrupted one is 'partial'
    assert n_before < 12
    assert (out / "runs/stl/published/test/seed0/eval/metrics.json").is_file()

    run_experiment(grid, out, table_only=True)  # trains nothing; tabulates the runs that have finished
    assert len(fake.calls) == n_before
    assert f"{n_before - 1} of 12 runs finished" in (out / "results.md").read_text()

    run_experiment(grid, out)  # resumes: finished runs are skipped, the interrupted one resumes
    resumed = fake.calls[n_before:]
    assert resumed[0] == (str(out / "runs/mtl/cv/fold1/seed0/train"), True)
    assert all(not r for _, r in resumed[1:]) and len(fake.calls) == 12 + 1
    for name in ("results.md", "results.csv", "results.png", "experiment.json", "experiment.log"):
        assert (out / name).is_file(), name
    assert "done, skipped" in (out / "experiment.log").read_text()
    assert (out / "runs/stl/cv/fold0/seed1/run.log").is_file()

    # train/test manifests: disjoint slides, and the test part is what was evaluated
    d = out / "runs/stl/cv/fold0/seed0"
    train_m, test_m = pd.read_csv(d / "train.csv"), pd.read_csv(d / "test.csv")
    assert not set(train_m["group"]) & set(test_m["group"])
    assert list(pd.read_csv(d / "eval/predictions.csv")["path"]) == list(test_m["path"])
    assert all(p.startswith(str(tmp_path / "linked-amibr")) for p in test_m["path"])  # links kept

    table = pd.read_csv(out / "results.csv")
    assert set(table["test_set"]) == {"published", "cv"} and set(table["config"]) == {"stl", "mtl"}

    def seed_metrics(config, test_set, seed):
        if test_set == "published":
            return json.loads((out / f"runs/{config}/published/test/seed{seed}/eval/metrics.json").read_text())
        # k-fold: out-of-fold predictions of both folds pooled, each at its own model's threshold
        parts = [out / f"runs/{config}/cv/fold{k}/seed{seed}/eval" for k in (0, 1)]
        p = pd.concat([pd.read_csv(x / "predictions.csv") for x in parts])
        pred = p["class"] == "atypical"
        return {"balanced_accuracy": skm.balanced_accuracy_score(p["label"], pred),
                "auroc": skm.roc_auc_score(p["label"], p["p_atypical"]), "n": len(p)}

    for _, row in table.iterrows():
        vals = [seed_metrics(row["config"], row["test_set"], s)[row["metric"]] for s in (0, 1)]
        assert row["n_seeds"] == 2
        assert row["mean"] == pytest.approx(np.mean(vals), abs=1e-5)
        assert row["sd"] == pytest.approx(np.std(vals, ddof=1), abs=1e-5)
        if row["config"] == "mtl":
            ref = [seed_metrics("stl", row["test_set"], s)[row["metric"]] for s in (0, 1)]
            assert row["delta"] == pytest.approx(np.mean(vals) - np.mean(ref), abs=1e-5)
            assert row["delta_ci_low"] <= row["delta"] <= row["delta_ci_high"]
        else:
            assert pd.isna(row["delta"])
    assert (table.loc[table["test_set"] == "cv", "n_test"] == seed_metrics("stl", "cv", 0)["n"]).all()
    md = (out / "results.md").read_text()
    assert "## balanced_accuracy" in md and "| mtl |" in md and "Δ" in md

    # --reference: the same runs against another config, beside (not over) the experiment's own table
    run_experiment(grid, out, table_only=True, reference="mtl")
    versus = pd.read_csv(out / "results_vs_mtl.csv")
    for _, row in versus[versus["config"] == "stl"].iterrows():
        mine = table[(table["config"] == "mtl") & (table["test_set"] == row["test_set"])
                     & (table["metric"] == row["metric"])].iloc[0]
        assert row["delta"] == pytest.approx(-mine["delta"], abs=1e-5)
    assert versus.loc[versus["config"] == "mtl", "delta"].isna().all()
    assert "reference config: `mtl`" in (out / "results_vs_mtl.md").read_text()
    assert pd.read_csv(out / "results.csv").equals(table)  # the experiment's own table is untouched
    with pytest.raises(MitotypeError, match="--reference 'seg' is not one of the configs"):
        run_experiment(grid, out, table_only=True, reference="seg")

    # A third invocation trains nothing; a changed config is flagged on the finished runs, not hidden.
    run_experiment(grid, out, overrides=["train.lr=0.5"])
    assert len(fake.calls) == 13
    assert "WARNING: trained with another config (train.lr: 0.001 -> 0.5)" in (out / "experiment.log").read_text()


def test_dry_run_lists_runs_and_global_overrides_reach_configs(grid, tmp_path, capsys):
    from mitotype.experiment.spec import run_config

    assert main(["experiment", "--config", str(grid), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "12 runs" in text and "mtl/cv/fold1/seed1" in text and "[todo]" in text
    assert not (tmp_path / "o").exists()
    exp = load_experiment(grid)
    cfg = run_config(exp, "mtl", 1, ["train.accelerator=gpu", "train.epochs=5"])
    assert cfg.train.accelerator == "gpu" and cfg.train.epochs == 5 and cfg.train.seed == 1
    assert cfg.model.segmentation.enabled and not cfg.model.pretrained


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "experiments").glob("*.yaml")))
def test_every_bundled_experiment_dry_runs(name, amibr_root, tmp_path, capsys):
    path = REPO / "experiments" / name
    assert main(["experiment", "--config", str(path), "--out", str(tmp_path / "o"), "--dry-run",
                 "--data", f"amibr:{amibr_root}:domain=source"]) == 0
    assert "[todo]" in capsys.readouterr().out


def test_bad_override_fails_before_training(grid, tmp_path):
    with pytest.raises(MitotypeError, match="unknown key"):
        run_experiment(grid, tmp_path / "o", overrides=["train.epoch=3"])


@pytest.mark.slow
def test_smoke_experiment_with_the_real_trainer(tmp_path, amibr_root):
    """experiments/smoke.yaml end to end: real training (1 epoch of 2 batches), real evaluation."""
    out = tmp_path / "smoke"
    code = main(["experiment", "--config", str(REPO / "experiments" / "smoke.yaml"), "--out", str(out),
                 "--data", f"amibr:{amibr_root}:domain=source", "--set", "train.accelerator=cpu"])
    assert code == 0
    table = pd.read_csv(out / "results.csv")
    assert set(table["test_set"]) == {"published", "lodo:TUPAC16"}
    assert (table["n_seeds"] == 1).all() and table["mean"].notna().all()
    run = out / "runs/mtl/lodo/TUPAC16/seed0"
    assert (run / "train/model.pt").is_file() and (run / "eval/report.md").is_file()
    # the held-out domain really was held out
    assert set(pd.read_csv(run / "train.csv")["domain"]) == {"MIDOG21"}
    assert set(pd.read_csv(run / "test.csv")["domain"]) == {"TUPAC16"}
    shutil.rmtree(run / "eval")  # evaluation lost: rerun evaluates only, no training
    assert main(["experiment", "--config", str(REPO / "experiments" / "smoke.yaml"), "--out", str(out),
                 "--data", f"amibr:{amibr_root}:domain=source"]) == 0
    assert (run / "eval/metrics.json").is_file()
