"""``mitotype experiment --last-epoch``: every finished run scored with its last checkpoint, the paired
differences, and the cached last-epoch probabilities that stand in for weights that are not kept."""

from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from mitotype.cli import main
from mitotype.experiment import run_experiment
from tests.experiment.conftest import FakeTrainer, write_yaml


def _delta(text: str) -> tuple[float, float, float]:
    delta, low, high = map(float, re.fullmatch(r"([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\]", text).groups())
    return delta, low, high


def test_last_epoch_option(tmp_path, amibr_root, monkeypatch, capsys):
    import mitotype.train.run as train_run

    spec = write_yaml(tmp_path / "e.yaml", {
        "name": "last", "data": f"amibr:{amibr_root}:domain=source", "subsample": 60, "seeds": [0, 1],
        "protocols": {"published": {}},
        "configs": {"stl": {}, "mtl": {"overrides": ["model.segmentation.enabled=true"]}},
        "reference": "stl", "overrides": ["model.pretrained=false", "train.epochs=1"],
        "evaluate": {"n_boot": 50, "device": "cpu", "plots": False}})
    out = tmp_path / "out"
    fake = FakeTrainer()
    monkeypatch.setattr(train_run, "train", fake)
    run_experiment(spec, out)
    runs = {f"{c}/published/test/seed{s}": out / "runs" / c / "published" / "test" / f"seed{s}"
            for c in ("stl", "mtl") for s in (0, 1)}
    for d in runs.values():  # the fake's checkpoint is a stub: let the last epoch be the chosen model
        shutil.copy(d / "train/model.pt", d / "train/checkpoints/last.ckpt")

    command = ["experiment", "--config", str(spec), "--out", str(out), "--table-only", "--last-epoch",
               "--reference", "mtl"]
    capsys.readouterr()
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert len(fake.calls) == 4  # trains nothing
    table = pd.read_csv(out / "last_epoch.csv")
    assert list(table["config"]) == ["stl", "mtl"] and (table["n_seeds"] == 2).all()
    assert "| test_set | config | n_seeds | auroc | values |" in printed
    for _, row in table.iterrows():  # last epoch == chosen model here: the AUROC of its evaluation
        auroc = [skm.roc_auc_score(p["label"], p["p_atypical"]) for p in
                 (pd.read_csv(runs[f"{row['config']}/published/test/seed{s}"] / "eval/predictions.csv")
                  for s in (0, 1))]
        assert [float(v) for v in row["values"].split(";")] == pytest.approx(auroc, abs=1e-4)
        assert row["auroc"] == pytest.approx(np.mean(auroc), abs=1e-6)
    # differences to the file's reference (stl) and to --reference (mtl): one the negative of the other
    stl, mtl = table.iloc[0], table.iloc[1]
    assert pd.isna(stl["delta_vs_stl"]) and pd.isna(mtl["delta_vs_mtl"])
    delta, low, high = _delta(mtl["delta_vs_stl"])
    assert low <= delta <= high
    assert _delta(stl["delta_vs_mtl"])[0] == pytest.approx(-delta, abs=1e-3)
    assert delta == pytest.approx(mtl["auroc"] - stl["auroc"], abs=1e-3)
    assert "--last-epoch" not in (out / "results_vs_mtl.md").read_text()  # not part of reproducing the runs

    # Weights gone: the cached probabilities give the same table.
    before = (out / "last_epoch.csv").read_text()
    for d in runs.values():
        assert (d / "eval/last_epoch_p_atypical.csv").is_file()
        (d / "train/checkpoints/last.ckpt").unlink()
    assert main(command) == 0
    assert (out / "last_epoch.csv").read_text() == before

    # A checkpoint newer than its cache is scored again: stl seed 0 now holds mtl's seed-0 model.
    ckpt = runs["stl/published/test/seed0"] / "train/checkpoints/last.ckpt"
    shutil.copy(runs["mtl/published/test/seed0"] / "train/model.pt", ckpt)
    cache = ckpt.parents[2] / "eval/last_epoch_p_atypical.csv"
    os.utime(ckpt, (cache.stat().st_mtime + 10, cache.stat().st_mtime + 10))
    assert main(command) == 0
    again = pd.read_csv(out / "last_epoch.csv")
    assert again.loc[0, "values"].split(";")[0] == mtl["values"].split(";")[0]
    assert again.loc[0, "values"].split(";")[1] == stl["values"].split(";")[1]
