"""Kill a training run mid-epoch, ``--resume`` it, and get what an uninterrupted run with the same seed gets.

Real AMi-Br crops (a 48-figure slice, several slides per class), the multi-task cpu_mtl architecture with
random init (no download), 3 epochs of 2 batches (``train.max_train_batches``). The interrupted run is a
``mitotype train`` subprocess killed with SIGKILL as soon as the first epoch's ``last.ckpt`` and metrics
row exist (so during epoch 2); then ``mitotype train --resume --out RUN``. Both runs use one thread, so CPU
arithmetic is deterministic.

Tolerance: the tuned threshold, balanced accuracy and AUROC on validation equal to 1e-6, and every weight
of the final model file equal to 1e-5 (absolute). Anything looser would hide a resume that restarts the
data order or the augmentation stream: that changes the weights at the 1e-2 level on this slice.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OVERRIDES = ["model.pretrained=false", "train.epochs=3", "train.batch_size=8", "train.max_train_batches=2",
             "train.val_fraction=0.3", "train.early_stopping_patience=0", "train.seed=7"]


def slice_manifest(amibr_root: Path, out: Path, per_class: int = 24) -> Path:
    """``per_class`` atypical and normal AMi-Br figures, grouped by slide (group holdout needs groups)."""
    with open(amibr_root / "AMI-BR.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    lines = ["path,label,domain,group"]
    for label, folder in (("True", "atypical"), ("False", "normal")):
        chosen = [r for r in rows if r["majority_atypical"] == label][:per_class]
        for r in chosen:
            path = amibr_root / "patches" / folder / f"{r['dataset']}_{r['uid']}.png"
            lines.append(f"{path},{folder},{r['dataset']},{r['dataset']}/{r['slide']}")
    out.write_text("\n".join(lines) + "\n")
    return out


def mitotype(*args: str) -> list[str]:
    return [sys.executable, "-m", "mitotype.cli", *args]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "PYTHONHASHSEED": "0"}


def final_state(run: Path) -> tuple[list[dict], dict, dict, dict]:
    """Per-epoch metrics (without timings), validation metrics, last-epoch weights, model-file weights."""
    import torch

    with open(run / "metrics.csv", newline="") as handle:
        history = [{k: float(v) for k, v in row.items() if k != "seconds" and v != ""}
                   for row in csv.DictReader(handle)]
    metrics = json.loads((run / "val_metrics.json").read_text())
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    model = torch.load(run / "model.pt", map_location="cpu", weights_only=True)["state_dict"]
    return history, metrics, last, model


def max_difference(a: dict, b: dict) -> float:
    import torch

    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a if not a[k].is_floating_point())
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(amibr_root, tmp_path):
    data = f"manifest:{slice_manifest(amibr_root, tmp_path / 'slice.csv')}"
    train = ["train", "--config", str(REPO / "configs" / "cpu_mtl.yaml"), "--data", data, "--no-progress"]

    whole = tmp_path / "whole"
    done = subprocess.run(mitotype(*train, "--out", str(whole), *OVERRIDES), env=env(), capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(mitotype(*train, "--out", str(killed), *OVERRIDES), env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last, history = killed / "checkpoints" / "last.ckpt", killed / "metrics.csv"
    deadline = time.monotonic() + 600
    try:
        # metrics.csv is rewritten after each epoch's checkpoint: one data row = epoch 1 saved, epoch 2 running
        while not (last.is_file() and history.is_file() and len(history.read_text().splitlines()) >= 2):
            assert proc.poll() is None, f"training ended before it could be killed: {proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no checkpoint after 10 minutes"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "model.pt").exists(), "the run finished before the kill: the test proved nothing"
    epochs_done = len(history.read_text().splitlines()) - 1
    assert epochs_done < 3

    resumed = subprocess.run(mitotype("train", "--resume", "--out", str(killed), "--no-progress"), env=env(),
                             capture_output=True, text=True, timeout=600, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    (h_whole, m_whole, last_whole, model_whole) = final_state(whole)
    (h_resumed, m_resumed, last_resumed, model_resumed) = final_state(killed)
    assert len(h_resumed) == len(h_whole) == 3
    for epoch, (row_whole, row_resumed) in enumerate(zip(h_whole, h_resumed)):
        assert row_resumed.keys() == row_whole.keys()
        for key, value in row_whole.items():
            assert row_resumed[key] == pytest.approx(value, abs=1e-6), f"epoch {epoch}: {key}"
    for key in ("threshold", "balanced_accuracy", "auroc"):
        assert m_resumed["tuned"][key] == pytest.approx(m_whole["tuned"][key], abs=1e-6), key
    assert m_resumed["best_epoch"] == m_whole["best_epoch"]
    # the model file holds the best epoch's weights, last.ckpt the final ones: both must agree
    assert max_difference(model_resumed, model_whole) <= 1e-5
    assert max_difference(last_resumed, last_whole) <= 1e-5
