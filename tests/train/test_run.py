"""`mitotype train` end to end on a small slice of real AMi-Br (tiny input size, a couple of batches)."""

import csv
import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from mitotype.cli import main
from mitotype.config import load_config
from mitotype.errors import MitotypeError
from tests.conftest import write_manifest

# Fast settings: 64 px input, 2 batches of 8 per epoch; every auxiliary task, background swap, EMA and
# per-domain weights and the auxiliary-weight decay on, so that one run goes through every branch of the
# training step.
FAST = ["model.pretrained=false", "model.input_size=64", "train.batch_size=8", "train.max_train_batches=2",
        "train.val_fraction=0.25", "model.background_swap.enabled=true", "train.ema_decay=0.9",
        "train.domain_weights=true", "train.early_stopping_patience=3", "train.aux_schedule=decay"]


@pytest.fixture(scope="module")
def small_spec(amibr_root, tmp_path_factory) -> str:
    """A manifest of 48 AMi-Br training figures: 3 from each of 16 slides holding both classes."""
    from mitotype.data.spec import load_figures

    figures = load_figures(f"amibr:{amibr_root}:split=train")
    by_slide: dict[str, list] = {}
    for f in figures:
        by_slide.setdefault(f.group, []).append(f)
    rows = []
    for group in sorted(by_slide):
        items = by_slide[group]
        atypical = [f for f in items if f.label == 1]
        normal = [f for f in items if f.label == 0]
        if atypical and len(normal) >= 2:
            rows += [atypical[0], normal[0], normal[1]]
        if len(rows) >= 48:
            break
    return write_manifest(tmp_path_factory.mktemp("spec") / "small.csv", rows)


@pytest.fixture(scope="module")
def config_file() -> Path:
    return Path(__file__).resolve().parents[2] / "configs" / "cpu_mtl.yaml"


@pytest.fixture(scope="module")
def run_dir(small_spec, config_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "mtl"
    code = main(["train", "--config", str(config_file), "--data", small_spec, "--out", str(out), "--no-progress",
                 "train.epochs=1", *FAST])
    assert code == 0
    return out


def test_run_writes_every_file(run_dir, small_spec):
    for name in ("model.pt", "config.yaml", "run.json", "metrics.csv", "curves.png", "val_metrics.json",
                 "checkpoints/last.ckpt", "checkpoints/best.ckpt"):
        assert (run_dir / name).is_file(), name
    info = json.loads((run_dir / "run.json").read_text())
    assert info["data_spec"] == small_spec
    assert info["git_commit"] and info["torch"] and info["mitotype_version"]
    assert info["data"]["train"]["n"] + info["data"]["val"]["n"] == 48
    assert info["epochs_run"] == 1 and len(info["seconds_per_epoch"]) == 1
    with (run_dir / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows] == ["0"]
    for column in ("train_loss", "train_class", "train_segmentation", "train_pixel_classes",
                   "train_localisation", "train_background_swap", "val_loss", "val_bacc", "val_auroc"):
        assert np.isfinite(float(rows[0][column])), column
    # aux_schedule=decay over 2 steps: factors 1.0 and 0.5, logged as their epoch mean
    assert float(rows[0]["aux_scale"]) == pytest.approx(0.75)
    val = json.loads((run_dir / "val_metrics.json").read_text())
    assert 0.0 <= val["tuned"]["threshold"] <= 1.0
    assert val["tuned"]["balanced_accuracy"] >= val["at_0.5"]["balanced_accuracy"]  # tuned on these data


def test_overrides_reach_the_resolved_config(run_dir, config_file):
    saved = load_config(run_dir / "config.yaml")
    assert saved.model.input_size == 64 and saved.train.batch_size == 8 and saved.train.epochs == 1
    assert saved.model.background_swap.enabled and saved.train.ema_decay == 0.9
    assert saved.model.dense_tasks == ["segmentation", "pixel_classes", "localisation"]  # from the file
    base = load_config(config_file)
    assert saved.augment == base.augment


def test_model_file_loads_and_predicts(run_dir, amibr_root):
    from mitotype.data.images import read_rgb
    from mitotype.models.modelfile import load_model

    loaded = load_model(run_dir / "model.pt")
    val = json.loads((run_dir / "val_metrics.json").read_text())
    assert loaded.threshold == pytest.approx(val["tuned"]["threshold"])
    assert loaded.config.model.input_size == 64
    image = read_rgb(next((amibr_root / "patches" / "atypical").glob("*.png")))
    import torch

    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    x = torch.nn.functional.interpolate(x, size=64, mode="bilinear", antialias=True)
    mean = torch.tensor(loaded.config.model.mean).view(1, 3, 1, 1)
    std = torch.tensor(loaded.config.model.std).view(1, 3, 1, 1)
    p = loaded.model.predict_proba((x - mean) / std)
    assert p.shape == (1,) and 0.0 <= float(p) <= 1.0


def test_resume_continues_the_run(run_dir, small_spec, tmp_path):
    import shutil

    from mitotype.train.run import train

    run = tmp_path / "copy"
    shutil.copytree(run_dir, run)
    first = (run / "model.pt").read_bytes()
    # A new run into a used folder is refused; --resume with another config too.
    cfg = load_config(run / "config.yaml")
    with pytest.raises(MitotypeError, match="already holds a run"):
        train(cfg, small_spec, run, progress=False)
    with pytest.raises(MitotypeError, match="model.head_dropout"):
        train(load_config(run / "config.yaml", ["model.head_dropout=0.5"]), small_spec, run, resume=True,
              progress=False)
    # CLI: --resume with only --out reads config and data from the run; train.epochs may grow.
    assert main(["train", "--resume", "--out", str(run), "--no-progress", "train.epochs=2"]) == 0
    with (run / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert int(rows[1]["step"]) == 2 * int(rows[0]["step"])  # the step counter went on, not restarted
    assert load_config(run / "config.yaml").train.epochs == 2
    info = json.loads((run / "run.json").read_text())
    assert info["epochs_run"] == 2 and len(info["earlier_sessions"]) == 1
    assert (run / "model.pt").read_bytes() != first


def test_single_task_run_with_separate_validation_data(small_spec, tmp_path):
    from mitotype.models.modelfile import load_model
    from mitotype.train.run import train

    config = Path(__file__).resolve().parents[2] / "configs" / "cpu_stl.yaml"
    cfg = load_config(config, ["train.epochs=1", "model.pretrained=false", "model.input_size=64",
                               "train.batch_size=16", "train.max_train_batches=1", "train.balanced_sampling=true"])
    model_path = train(cfg, small_spec, tmp_path / "stl", val_spec=small_spec, progress=False)
    info = json.loads((tmp_path / "stl" / "run.json").read_text())
    assert info["val_spec"] == small_spec and info["data"]["val"]["n"] == 48  # all of --val, no hold-out
    loaded = load_model(model_path)
    assert loaded.config.model.dense_tasks == [] and not hasattr(loaded.model.decoders, "segmentation")
    # A training checkpoint loads as a model too (e.g. to evaluate the last epoch): same weights as model.pt
    # here (one epoch: best = last), no tuned threshold.
    from_ckpt = load_model(tmp_path / "stl" / "checkpoints" / "last.ckpt")
    assert from_ckpt.threshold == 0.5 and from_ckpt.meta["checkpoint_epoch"] == 0
    for (name, a), (_, b) in zip(loaded.model.state_dict().items(), from_ckpt.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_checkpoint_of_an_ema_run_is_refused(run_dir):
    from mitotype.models.modelfile import load_model

    with pytest.raises(MitotypeError, match="checkpoint of an EMA run"):
        load_model(run_dir / "checkpoints" / "last.ckpt")


def test_help_and_config_errors(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--config", "--data", "--val", "--out", "--resume", "KEY=VALUE"):
        assert option in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epoch: 3\n")
    assert main(["train", "--config", str(bad), "--data", "folder:x", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "unknown key(s) ['epoch']" in err and str(bad) in err
    assert main(["train", "--config", str(bad), "--data", "folder:x", "train.epochz=1"]) == 2
    assert main(["train", "--data", "folder:x"]) == 2
    assert "--config" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(tmp_path / "none")]) == 2
    assert "nothing to resume" in capsys.readouterr().err


@pytest.mark.parametrize(("monitor", "mode"), [("val_bacc", "max"), ("val_auroc", "max"), ("val_loss", "min")])
def test_monitor_picks_checkpoint_and_early_stopping(monitor, mode, tmp_path):
    from lightning.pytorch.callbacks import EarlyStopping

    from mitotype.train.run import _callbacks

    cfg = load_config(None, [f"train.monitor={monitor}", "train.early_stopping_patience=3"])
    callbacks, best = _callbacks(cfg, tmp_path, progress=False)
    stopper = next(c for c in callbacks if isinstance(c, EarlyStopping))
    assert (best.monitor, best.mode) == (monitor, mode)
    assert stopper.monitor == monitor and stopper.mode == mode and stopper.patience == 3
    with pytest.raises(MitotypeError, match="train.monitor: must be one of .*, got 'val_f1'"):
        load_config(None, ["train.monitor=val_f1"])


def test_mask_method_disk_replaces_the_segmented_targets(small_spec):
    from mitotype.data.targets import disk_masks
    from mitotype.train.datamodule import FigureDataModule

    cfg = load_config(None, ["model.segmentation.enabled=true", "train.mask_method=disk", "train.val_fraction=0.25"])
    dm = FigureDataModule(cfg, small_spec, progress=False)
    dm.setup()
    assert (dm.train_set.masks == disk_masks(dm.train_set.images)).all()
    with pytest.raises(MitotypeError, match="train.mask_method: must be one of segmented, disk, got 'circle'"):
        load_config(None, ["model.segmentation.enabled=true", "train.mask_method=circle"])  # its Literal


class _EpochWeights(L.Callback):
    """The model's weights and buffers at the end of every training epoch (after validation)."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.states.append({k: v.detach().clone() for k, v in pl_module.model.state_dict().items()})


@pytest.mark.parametrize("policy", ["swa", "last"])
def test_checkpoint_policy_writes_the_tail_average_or_the_last_weights(policy, small_spec, tmp_path):
    from mitotype.models.modelfile import load_model
    from mitotype.train.run import train

    config = Path(__file__).resolve().parents[2] / "configs" / "cpu_stl.yaml"
    cfg = load_config(config, ["train.epochs=3", "model.pretrained=false", "model.input_size=64",
                               "train.batch_size=16", "train.max_train_batches=2", f"train.checkpoint={policy}",
                               "train.swa_epochs=2", "train.val_fraction=0.25"])
    recorder = _EpochWeights()
    model_path = train(cfg, small_spec, tmp_path / policy, callbacks=[recorder], progress=False)
    saved = load_model(model_path).model.state_dict()
    assert len(recorder.states) == 3
    first, second, third = recorder.states
    moved = 0
    for name, value in saved.items():
        if not value.is_floating_point():
            continue
        expected = third[name] if policy == "last" else (second[name] + third[name]) / 2
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6, msg=name)
        moved += not torch.allclose(second[name], third[name])
    assert moved > 0  # the last two epochs differ, so the average is not one of them
    val = json.loads((tmp_path / policy / "val_metrics.json").read_text())
    assert val["checkpoint"] == policy and val["best_epoch"] == 2


def test_swa_settings_are_checked_when_read():
    with pytest.raises(MitotypeError, match="train.checkpoint: must be one of best, last, swa, got 'swaa'"):
        load_config(None, ["train.checkpoint=swaa"])
    with pytest.raises(MitotypeError, match="both average the weights"):
        load_config(None, ["train.checkpoint=swa", "train.ema_decay=0.99"])
    with pytest.raises(MitotypeError, match="train.swa_epochs .* must be at most train.epochs"):
        load_config(None, ["train.checkpoint=swa", "train.epochs=2", "train.swa_epochs=3"])
