"""``mitotype experiment``: the grid, manifests, resuming, the table's statistics, and (slow) the real smoke
experiment end to end with the real trainer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn import metrics as skm

from mitotype.cli import main
from mitotype.errors import MitotypeError
from mitotype.evaluate.experiment import load_experiment, run_experiment
from tests.evaluate.test_run import tiny_model

REPO = Path(__file__).resolve().parents[2]


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture()
def grid(tmp_path, amibr_root):
    """Two configs x two seeds x (published split + 2-fold grouped CV) on 60 real AMi-Br figures, reached
    through a symbolic link (as users' data often are): every output must name the files the same way."""
    linked = tmp_path / "linked-amibr"
    linked.symlink_to(amibr_root.resolve(), target_is_directory=True)
    return _write(tmp_path / "grid.yaml", {
        "name": "grid", "data": f"amibr:{linked}:domain=source", "subsample": 60, "seeds": [0, 1],
        "protocols": {"published": {}, "cv": {"kind": "kfold", "k": 2}},
        "configs": {"stl": {}, "mtl": {"overrides": ["model.segmentation.enabled=true"]}},
        "reference": "stl", "overrides": ["model.pretrained=false", "train.epochs=1"],
        "evaluate": {"n_boot": 50, "device": "cpu", "plots": False}})


class FakeTrainer:
    """Stands in for ``train.run.train``: an untrained tiny model per (config, seed), a checkpoint first,
    and an optional interruption, so that the runner's bookkeeping is tested in seconds."""

    def __init__(self, interrupt: str | None = None):
        self.calls: list[tuple[str, bool]] = []
        self.interrupt = interrupt

    def __call__(self, cfg, data_spec, out_dir, val_spec=None, resume=False, **kwargs):
        from mitotype.data.images import load_images
        from mitotype.data.spec import load_figures
        from mitotype.models.inference import predict_proba
        from mitotype.models.modelfile import LoadedModel, save_model

        out_dir = Path(out_dir)
        self.calls.append((str(out_dir), resume))
        assert data_spec.startswith("manifest:")
        figures = load_figures(data_spec)  # the train part, readable
        (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (out_dir / "checkpoints" / "last.ckpt").write_text("checkpoint")
        (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
        if self.interrupt and self.interrupt in str(out_dir) and not resume:
            raise KeyboardInterrupt
        seed = cfg.train.seed + 10 * cfg.model.segmentation.enabled
        cfg.model.encoder, cfg.model.input_size, cfg.model.head_hidden = "resnet18", 32, ()
        images = load_images(figures[:32], 128)
        model = tiny_model(cfg, images, seed)
        # threshold: the median P(atypical) on the train part, so that both classes are predicted
        threshold = float(np.median(predict_proba([LoadedModel(model, cfg, 0.5)], images)))
        return save_model(out_dir / "model.pt", model, cfg, threshold=threshold)


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


def test_table_statistics_from_stored_predictions(tmp_path):
    """tabulate(): k-fold pooling, mean/sd over seeds, paired differences, a missing fold, a missing seed."""
    from mitotype.data.figure import Figure
    from mitotype.evaluate.experiment import Run, tabulate
    from mitotype.evaluate.run import write_predictions

    exp = load_experiment(_write(tmp_path / "e.yaml", {
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
    from mitotype.evaluate.experiment import Run, tabulate
    from mitotype.evaluate.run import write_predictions

    rng = np.random.default_rng(1)
    n = 2000
    figures = [Figure(path=f"/img/{i}.png", label=int(rng.random() < 0.3), domain="d", group=f"slide{i % 200}")
               for i in range(n)]
    labels = np.array([f.label for f in figures])
    noise = rng.uniform(0.0, 0.6, n)  # shared by both configs: paired differences come from the signal only

    def table(signals):
        exp = load_experiment(_write(tmp_path / "e.yaml", {
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


def test_dry_run_lists_runs_and_global_overrides_reach_configs(grid, tmp_path, capsys):
    from mitotype.evaluate.experiment import run_config

    assert main(["experiment", "--config", str(grid), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "12 runs" in text and "mtl/cv/fold1/seed1" in text and "[todo]" in text
    assert not (tmp_path / "o").exists()
    exp = load_experiment(grid)
    cfg = run_config(exp, "mtl", 1, ["train.accelerator=gpu", "train.epochs=5"])
    assert cfg.train.accelerator == "gpu" and cfg.train.epochs == 5 and cfg.train.seed == 1
    assert cfg.model.segmentation.enabled and not cfg.model.pretrained


def test_bundled_experiment_files_are_valid(amibr_root):
    exp = load_experiment(REPO / "experiments" / "amibr_mtl_vs_stl.yaml", data=f"amibr:{amibr_root}:domain=source")
    assert exp.seeds == [0, 1, 2] and set(exp.configs) == {"stl", "mtl"} and exp.reference == "stl"
    assert {p["kind"] for p in exp.protocols.values()} == {"published", "lodo"}
    smoke = load_experiment(REPO / "experiments" / "smoke.yaml")
    assert smoke.subsample and "train.max_train_batches=2" in smoke.overrides


def test_ablation_grid_switches_one_thing_per_config(amibr_root):
    from mitotype.evaluate.experiment import run_config

    exp = load_experiment(REPO / "experiments" / "amibr_ablation.yaml", data=f"amibr:{amibr_root}:domain=source")
    tasks = {name: run_config(exp, name, 0, []).model for name in exp.configs}
    assert tasks["stl"].dense_tasks == [] and tasks["seg"].dense_tasks == ["segmentation"]
    assert tasks["pix"].dense_tasks == ["pixel_classes"] and tasks["loc"].dense_tasks == ["localisation"]
    assert tasks["mtl"].dense_tasks == tasks["mtl_bgswap"].dense_tasks == tasks["mtl_maskpool"].dense_tasks
    assert tasks["mtl_bgswap"].background_swap.enabled and not tasks["mtl"].background_swap.enabled
    assert tasks["mtl_maskpool"].mask_pooling and not tasks["mtl"].mask_pooling


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "experiments").glob("*.yaml")))
def test_every_bundled_experiment_dry_runs(name, amibr_root, tmp_path, capsys):
    path = REPO / "experiments" / name
    assert main(["experiment", "--config", str(path), "--out", str(tmp_path / "o"), "--dry-run",
                 "--data", f"amibr:{amibr_root}:domain=source"]) == 0
    assert "[todo]" in capsys.readouterr().out


@pytest.mark.parametrize("change, message", [
    ({"protocols": {"x": {"kind": "bogus"}}}, "unknown kind"),
    ({"protocols": {"lodo": {"k": 3}}}, "unknown option"),
    ({"reference": "nope"}, "reference"),
    ({"configs": {"a": {"base": "no/such.yaml"}}}, "not found"),
    ({"seeds": "zero"}, "seeds"),
    ({"metrics": ["f1"]}, "metrics"),
    ({"typo": 1}, "unknown key"),
])
def test_bad_experiment_files(tmp_path, change, message):
    base = {"data": "amibr:x", "protocols": {"published": {}}, "configs": {"a": {}}}
    with pytest.raises(MitotypeError, match=message):
        load_experiment(_write(tmp_path / "e.yaml", {**base, **change}))


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
