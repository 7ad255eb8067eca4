"""Lightning DDP on CPU (2 processes, gloo): the documented single-process behaviour holds.

One epoch of a tiny model on 44 real AMi-Br crops (33 training, 11 validation figures given as --val): every
training figure seen at most once over the two processes (the one left over by 2 processes dropped, never a
repeat), one model file (written by rank 0), and the validation metrics over the whole validation part, not
Lightning's padded shards. Lightning's DDP launcher re-runs the script in a second process (gloo on CPU).
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import write_manifest
from tests.models.conftest import imagenet_file  # noqa: F401  (a fixture: ImageNet weights, offline)

SCRIPT = Path(__file__).with_name("ddp_script.py")
REPO = Path(__file__).resolve().parents[2]
# 64 px, batch 8: 16 training figures per process = 2 batches each. ImageNet weights, not random ones:
# a random MobileNetV2 gives every crop the same P, and the metrics could not tell a repeated figure.
FAST = ["model.input_size=64", "train.batch_size=8", "train.epochs=1",
        "train.accelerator=cpu", "train.devices=2", "train.strategy=ddp", "train.threads=1",
        "train.monitor=val_auroc"]


@pytest.fixture(scope="module")
def specs(amibr_root, tmp_path_factory) -> tuple[str, str]:
    """33 training and 11 validation figures (odd counts: Lightning's samplers pad them), both classes."""
    from mitotype.data.spec import load_figures

    figures = load_figures(f"amibr:{amibr_root}:split=train")
    atypical = [f for f in figures if f.label == 1][::40]
    normal = [f for f in figures if f.label == 0][::40]
    train = atypical[:8] + normal[:25]
    val = atypical[8:12] + normal[25:32]
    folder = tmp_path_factory.mktemp("ddp-spec")
    return write_manifest(folder / "train.csv", train), write_manifest(folder / "val.csv", val)


@pytest.fixture(scope="module")
def ddp_run(specs, imagenet_file, tmp_path_factory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("ddp") / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(SCRIPT), *specs, str(out), *FAST, f"model.weights={imagenet_file}"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_every_training_figure_once_per_epoch(ddp_run):
    ranks = [json.loads((ddp_run / f"seen_rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    seen = [r["seen"] for r in ranks]
    assert len(seen[0]) == len(seen[1]) == 16  # 33 // 2 = 16 per process: 2 batches of 8
    assert not set(seen[0]) & set(seen[1])  # disjoint shares
    assert len(set(seen[0] + seen[1])) == 32 and set(seen[0] + seen[1]) <= set(range(33))  # none twice


def test_distributed_sampler_drops_the_remainder_instead_of_repeating():
    """The training loader of rank r of 2 on 33 figures: 16 each, disjoint; Lightning's default would give
    17 each with one figure twice (in the batch that drop_last keeps when the batch holds 17)."""
    from types import SimpleNamespace

    from mitotype.config import load_config
    from mitotype.train.datamodule import FigureDataModule

    cfg = load_config(None, ["train.batch_size=17"])
    shares = []
    for rank in (0, 1):
        data = FigureDataModule(cfg, "unused")
        data.train_set = list(range(33))
        data.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        shares.append([i for batch in data.train_dataloader().batch_sampler for i in batch])
    assert [len(s) for s in shares] == [16, 16]
    assert len(set(shares[0]) | set(shares[1])) == 32


@pytest.mark.slow
def test_one_model_file_from_rank_zero(ddp_run):
    assert sorted(p.name for p in ddp_run.glob("*.pt")) == ["model.pt"]
    assert sorted(p.name for p in (ddp_run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    state = torch.load(ddp_run / "model.pt", map_location="cpu", weights_only=False)
    assert state["config"]["train"]["strategy"] == "ddp"
    info = json.loads((ddp_run / "run.json").read_text())
    assert info["epochs_run"] == 1 and len(info["seconds_per_epoch"]) == 1


@pytest.mark.slow
def test_validation_metrics_over_the_whole_validation_part(ddp_run):
    """The metrics logged in training (gathered from both processes) equal rank 0's own pass over all 11
    validation figures afterwards: a padded repeat of a figure would change them."""
    metrics = json.loads((ddp_run / "val_metrics.json").read_text())
    assert metrics["at_0.5"]["n"] == 11 and metrics["data"]["n"] == 11
    with (ddp_run / "metrics.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))
    assert metrics["at_0.5"]["auroc"] != 0.5  # P differs between figures (a repeat would change the AUROC)
    assert float(row["val_auroc"]) == pytest.approx(metrics["at_0.5"]["auroc"], abs=1e-6)
    assert float(row["val_bacc"]) == pytest.approx(metrics["at_0.5"]["balanced_accuracy"], abs=1e-6)
