"""Knowledge distillation: the mixed class loss, the cached teacher probabilities, and a student run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from mitotype.cli import main
from mitotype.config import RunConfig
from mitotype.models.losses import MultiTaskLoss

from .test_run import small_spec  # noqa: F401 - the fixture

REPO = Path(__file__).resolve().parents[2]


def loss(weight: float) -> MultiTaskLoss:
    cfg = RunConfig()
    cfg.train.distil_weight = weight
    return MultiTaskLoss(cfg)


def test_class_loss_mixes_label_and_teacher():
    torch.manual_seed(0)
    logits, label = torch.randn(6, 2), torch.tensor([0, 1, 0, 1, 1, 0])
    soft = torch.tensor([0.9, 0.2, 0.5, 0.7, 0.1, 0.3])
    ce = F.cross_entropy(logits, label)
    target = torch.stack([1 - soft, soft], 1)
    soft_ce = -(target * F.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(loss(0.0).class_loss(logits, label, soft=soft), ce)
    torch.testing.assert_close(loss(1.0).class_loss(logits, label, soft=soft), soft_ce)
    torch.testing.assert_close(loss(0.7).class_loss(logits, label, soft=soft), 0.3 * ce + 0.7 * soft_ce)
    # w = 1: the loss is smallest where the student equals the teacher
    at_teacher = torch.log(target)
    assert loss(1.0).class_loss(at_teacher, label, soft=soft) < loss(1.0).class_loss(logits, label, soft=soft)


def test_teacher_probabilities_are_cached(tmp_path, amibr_root, monkeypatch):
    from mitotype.data.images import read_rgb
    from mitotype.models import modelfile
    from mitotype.train.distil import teacher_probs

    monkeypatch.setenv("MITOTYPE_CACHE", str(tmp_path / "cache"))
    images = np.stack([read_rgb(p) for p in sorted((amibr_root / "patches" / "normal").glob("*.png"))[:6]])
    first = teacher_probs("default", images, tta=False)
    assert first.shape == (6,) and ((first >= 0) & (first <= 1)).all()

    def no_load(*args, **kwargs):
        raise AssertionError("the teacher was loaded again")

    monkeypatch.setattr(modelfile, "load_model", no_load)
    np.testing.assert_array_equal(teacher_probs("default", images, tta=False), first)
    with pytest.raises(AssertionError):  # other pixels: not from the cache
        teacher_probs("default", images[::-1].copy(), tta=False)


def test_student_trains_on_the_teachers_soft_labels(tmp_path, small_spec, monkeypatch):  # noqa: F811
    """A student run with the shipped model as teacher: the teacher's probabilities reach the loss."""
    from mitotype.models import losses

    seen = []
    original = losses.MultiTaskLoss.class_loss

    def spy(self, logits, label, weight=None, soft=None):
        seen.append(soft)
        return original(self, logits, label, weight, soft)

    monkeypatch.setattr(losses.MultiTaskLoss, "class_loss", spy)
    monkeypatch.chdir(REPO)
    out = tmp_path / "student"
    assert main(["train", "--config", "configs/cpu_stl.yaml", "--data", small_spec, "--out", str(out),
                 "--no-progress", "train.epochs=1",
                 "model.pretrained=false", "model.input_size=64", "train.batch_size=8",
                 "train.max_train_batches=2", "train.val_fraction=0.25", "train.distil_teacher=default",
                 "train.distil_tta=false"]) == 0
    assert (out / "model.pt").is_file()
    assert len(seen) == 2 and all(s is not None and s.shape == (8,) for s in seen)
    assert all(((s >= 0) & (s <= 1)).all() for s in seen)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["distil_teacher"] == "default"

