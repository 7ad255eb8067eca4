"""The LightningModule's pieces on synthetic tensors (shapes and rules); real-data runs are in test_run.py."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mitotype.config import load_config
from mitotype.train.datamodule import inverse_frequency
from mitotype.train.module import MitoModule, validation_metrics, warmup_cosine

S = 64


def _cfg(*overrides):
    return load_config(None, ["model.pretrained=false", f"model.input_size={S}", f"model.crop_size={S}",
                              *overrides])


def _batch(n=4):
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(n, 1, S, S)
    mask[:, :, 24:40, 24:40] = 1.0
    valid = torch.ones(n, 1, S, S)
    valid[0, :, :, :8] = 0.0  # zero-padding strip on the first patch
    label = torch.tensor([0, 1] * (n // 2))
    classes = (mask[:, 0] * (label[:, None, None] + 1)).long()
    classes[valid[:, 0] == 0] = -100
    return {"image": torch.randn(n, 3, S, S, generator=g), "label": label, "mask": mask, "valid": valid,
            "classes": classes, "heatmap": mask * 0.5, "domain": torch.tensor([0, 0, 1, 1][:n]),
            "index": torch.arange(n)}


def test_training_step_runs_every_loss_and_learns():
    torch.manual_seed(0)
    cfg = _cfg("model.segmentation=true", "model.pixel_classes=true", "model.localisation=true",
               "model.background_swap=true", "train.domain_weights=true", "train.lr=0.001")
    module = MitoModule(cfg, class_weights=torch.tensor([0.6, 2.0]), domain_weights=torch.tensor([1.5, 0.75]))
    module.train()
    batch = _batch()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    losses = []
    for _ in range(4):
        loss = module.training_step(batch, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0]


def test_unknown_aux_schedule_fails_when_the_config_is_read():
    from mitotype.errors import MitotypeError

    with pytest.raises(MitotypeError, match="train.aux_schedule: must be one of constant, decay, got 'warmup'"):
        _cfg("model.segmentation=true", "train.aux_schedule=warmup")


def test_optimizer_groups_scale_encoder_lr_and_skip_decay_on_norms():
    cfg = _cfg("train.lr=0.01", "train.encoder_lr_scale=0.1", "train.epochs=4", "train.warmup_epochs=1")
    module = MitoModule(cfg)
    module.trainer = SimpleNamespace(estimated_stepping_batches=40)
    setup = module.configure_optimizers()
    groups = setup["optimizer"].param_groups
    encoder_ids = {id(p) for p in module.model.encoder.parameters()}
    for group in groups:
        in_encoder = {id(p) in encoder_ids for p in group["params"]}
        assert len(in_encoder) == 1
        assert group["initial_lr"] == pytest.approx(0.001 if in_encoder.pop() else 0.01)
        assert group["lr"] == pytest.approx(group["initial_lr"] / 10)  # warm-up: step 0 of 10
        if all(p.ndim <= 1 for p in group["params"]):
            assert group["weight_decay"] == 0.0
    n_params = sum(len(g["params"]) for g in groups)
    assert n_params == sum(1 for p in module.model.parameters() if p.requires_grad)


def test_warmup_cosine_schedule():
    f = warmup_cosine(10, 100, floor=0.01)
    assert f(0) == pytest.approx(0.1)
    assert f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.505, abs=0.01)
    assert f(100) == pytest.approx(0.01)
    assert all(f(i) >= f(i + 1) for i in range(10, 100))


def test_validation_metrics_and_inverse_frequency():
    m = validation_metrics(np.array([0, 0, 0, 1]), np.array([0.1, 0.6, 0.2, 0.9]))
    assert m["sensitivity"] == 1.0 and m["specificity"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx(5 / 6)
    assert m["auroc"] == 1.0
    w = inverse_frequency(np.array([0, 0, 0, 1]), 2)
    assert w.tolist() == pytest.approx([4 / 6, 2.0])
    assert (w[np.array([0, 0, 0, 1])]).mean() == pytest.approx(1.0)


def test_onecycle_and_unknown_schedule():
    from mitotype.errors import MitotypeError

    module = MitoModule(_cfg("train.schedule=onecycle", "train.lr=0.01", "train.epochs=2"))
    module.trainer = SimpleNamespace(estimated_stepping_batches=20)
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR) and scheduler.total_steps == 20
    with pytest.raises(MitotypeError, match="train.schedule: must be one of cosine, onecycle, got 'cosin'"):
        _cfg("train.schedule=cosin")  # refused with the config (its Literal), before any module
