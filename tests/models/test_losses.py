"""MultiTaskLoss: one optimiser step lowers every term; weights, masks, ignore index and focal behave."""

from __future__ import annotations

import copy

import pytest
import torch

from mitotype.config import RunConfig, TaskConfig
from mitotype.errors import MitotypeError
from mitotype.models import Outputs, create_model
from mitotype.models.losses import MultiTaskLoss, aux_weight_scale

S = 48


def run_cfg(**model_kw) -> RunConfig:
    cfg = RunConfig()
    cfg.model.encoder = "test_resnet"  # timm's tiny test network: fast
    cfg.model.decoder_channels = (32, 16, 8)
    cfg.model.head_hidden = (32, 16)
    cfg.model.pretrained = False
    cfg.model.head_dropout = 0.0
    for task in ("segmentation", "pixel_classes", "localisation"):
        setattr(cfg.model, task, TaskConfig(enabled=True, weight=0.5))
    for key, value in model_kw.items():
        setattr(cfg.model, key, value)
    return cfg


def tiny_batch(n=4, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    label = torch.tensor([0, 1] * (n // 2))
    mask = torch.zeros(n, 1, S, S)
    mask[:, :, 16:32, 18:30] = 1
    valid = torch.ones(n, 1, S, S)
    valid[:, :, :, :3] = 0  # a zero-padded strip
    classes = (mask[:, 0] * (label[:, None, None] + 1)).long()
    classes[valid[:, 0] == 0] = -100
    yy, xx = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    heat = torch.exp(-((yy - 24.0) ** 2 + (xx - 24.0) ** 2) / 18.0)[None, None].repeat(n, 1, 1, 1)
    return {"image": torch.rand(n, 3, S, S, generator=g), "label": label, "mask": mask, "valid": valid,
            "classes": classes, "heatmap": heat, "domain": torch.tensor([0, 1] * (n // 2))}


@pytest.mark.parametrize("heatmap_loss,class_loss", [("mse", "ce"), ("focal", "focal")])
def test_one_step_lowers_every_loss(heatmap_loss, class_loss):
    """A step on the total lowers the total; a step on each term alone lowers that term (a shared encoder
    lets the terms pull against each other, so each is checked on its own gradient)."""
    torch.manual_seed(0)
    cfg = run_cfg(heatmap_loss=heatmap_loss)
    cfg.train.class_loss = class_loss
    model = create_model(cfg.model).train()
    start = copy.deepcopy(model.state_dict())
    loss_fn = MultiTaskLoss(cfg, class_weights=[1.0, 3.5])
    batch = tiny_batch()
    names = ["total", "class", "segmentation", "pixel_classes", "localisation"]
    for name in names:
        model.load_state_dict(start)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        # BatchNorm in train mode uses the batch's statistics: the same batch gives the same forward twice
        total, parts = loss_fn(model(batch["image"]), batch)
        assert set(parts) == set(names[1:])
        before = total if name == "total" else parts[name]
        opt.zero_grad()
        before.backward()
        opt.step()
        total, parts = loss_fn(model(batch["image"]), batch)
        after = total if name == "total" else parts[name]
        assert after < before, name


def test_total_is_weighted_sum_and_eval_outputs_skip_dense_terms():
    cfg = run_cfg()
    cfg.model.segmentation.weight = 2.0
    model = create_model(cfg.model).train()
    batch = tiny_batch()
    loss_fn = MultiTaskLoss(cfg)
    total, parts = loss_fn(model(batch["image"]), batch)
    expected = parts["class"] + 2.0 * parts["segmentation"] + 0.5 * (parts["pixel_classes"] + parts["localisation"])
    torch.testing.assert_close(total, expected)
    total, parts = loss_fn(model.eval()(batch["image"]), batch)
    assert set(parts) == {"class"} and torch.equal(total, parts["class"])


def test_aux_scale_multiplies_only_the_dense_terms_and_its_schedule():
    cfg = run_cfg()
    model = create_model(cfg.model).train()
    batch = tiny_batch()
    outputs = model(batch["image"])
    total, parts = MultiTaskLoss(cfg)(outputs, batch, aux_scale=0.2)
    expected = parts["class"] + 0.2 * 0.5 * (parts["segmentation"] + parts["pixel_classes"] + parts["localisation"])
    torch.testing.assert_close(total, expected)
    assert aux_weight_scale("constant", 70, 100) == 1.0
    assert aux_weight_scale("decay", 0, 100) == 1.0 and aux_weight_scale("decay", 100, 100) == 0.0
    assert aux_weight_scale("decay", 50, 100) == pytest.approx(0.5)
    assert aux_weight_scale("decay", 250, 100) == 0.0  # past the end (resumed with more epochs): stays off


def test_class_weights_and_sample_weights():
    cfg = run_cfg()
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0]])  # confident "normal"
    label = torch.tensor([0, 1])
    plain = MultiTaskLoss(cfg).class_loss(logits, label)
    weighted = MultiTaskLoss(cfg, class_weights=[1.0, 3.5]).class_loss(logits, label)
    assert weighted > plain  # the misclassified atypical sample counts 3.5 times
    only_first = MultiTaskLoss(cfg).class_loss(logits, label, weight=torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(only_first, torch.nn.functional.cross_entropy(logits[:1], label[:1]))


def test_focal_down_weights_easy_samples():
    cfg = run_cfg()
    cfg.train.class_loss = "focal"
    ce_cfg = run_cfg()
    easy = torch.tensor([[4.0, 0.0]])
    hard = torch.tensor([[0.0, 1.0]])
    y = torch.tensor([0])
    focal, ce = MultiTaskLoss(cfg), MultiTaskLoss(ce_cfg)
    assert focal.class_loss(easy, y) / ce.class_loss(easy, y) < 0.01
    assert focal.class_loss(hard, y) / ce.class_loss(hard, y) > 0.5


def test_invalid_pixels_do_not_count():
    cfg = run_cfg()
    loss_fn = MultiTaskLoss(cfg)
    batch = tiny_batch()
    out = Outputs(torch.zeros(4, 2), torch.randn(4, 1, S, S), torch.randn(4, 3, S, S), torch.randn(4, 1, S, S))
    _, ref = loss_fn(out, batch)
    changed = dict(batch)
    changed["mask"] = batch["mask"].clone()
    changed["mask"][:, :, :, :3] = 1  # only where valid == 0
    changed["heatmap"] = batch["heatmap"].clone()
    changed["heatmap"][:, :, :, :3] = 0.7
    _, parts = loss_fn(out, changed)
    for name in ("segmentation", "localisation"):
        torch.testing.assert_close(parts[name], ref[name])
    # pixel classes: the ignored pixels carry the ignore code as target, so change the prediction there
    assert (batch["classes"][:, :, :3] == -100).all()
    moved = out.classes.clone()
    moved[:, :, :, :3] += 5.0 * torch.randn(4, 3, S, 3)
    _, parts = loss_fn(out._replace(classes=moved), batch)
    torch.testing.assert_close(parts["pixel_classes"], ref["pixel_classes"])
    moved[:, :, :, 3:] += 1.0  # ... and at valid pixels it does count
    moved[:, 0, :, 3:] += 5.0
    _, parts = loss_fn(out._replace(classes=moved), batch)
    assert not torch.isclose(parts["pixel_classes"], ref["pixel_classes"])


def test_all_pixels_ignored_gives_finite_loss():
    cfg = run_cfg()
    batch = tiny_batch()
    batch["classes"][:] = -100
    batch["valid"][:] = 0
    out = Outputs(torch.zeros(4, 2), torch.randn(4, 1, S, S), torch.randn(4, 3, S, S), torch.randn(4, 1, S, S))
    total, parts = MultiTaskLoss(cfg)(out, batch)
    assert torch.isfinite(total) and all(torch.isfinite(v) for v in parts.values())


def test_unknown_class_loss_fails_when_the_config_is_read():
    from mitotype.config import load_config

    with pytest.raises(MitotypeError, match="train.class_loss: must be one of ce, focal, got 'hinge'"):
        load_config(None, ["train.class_loss=hinge"])
