"""MitoNet: every head's shape for three encoders, dense outputs only when asked, mask pooling, CAM,
fine-tuning modes, and the factory's checks."""

from __future__ import annotations

import pytest
import torch

from mitotype.config import ModelConfig, TaskConfig
from mitotype.errors import MitotypeError
from mitotype.models import Outputs, create_model


def make_cfg(encoder="test_resnet", **kw) -> ModelConfig:
    tasks = {t: TaskConfig(enabled=True) for t in ("segmentation", "pixel_classes", "localisation")}
    return ModelConfig(**{"encoder": encoder, "pretrained": False, **tasks, **kw})


@pytest.mark.parametrize("encoder", ["tv_mobilenet_v2", "resnet18", "efficientnet_b0"])
def test_every_head_shape(encoder):
    model = create_model(make_cfg(encoder)).train()
    for size in (64, 77):  # odd size: decoders resize to each skip's exact size
        out = model(torch.rand(2, 3, size, size))
        assert isinstance(out, Outputs)
        assert out.logits.shape == (2, 2)
        assert out.mask.shape == (2, 1, size, size)
        assert out.classes.shape == (2, 3, size, size)
        assert out.heatmap.shape == (2, 1, size, size)


def test_dense_outputs_only_in_training_or_when_asked():
    model = create_model(make_cfg())
    x = torch.rand(2, 3, 64, 64)
    model.eval()
    assert model(x)[1:] == (None, None, None)
    assert all(t is not None for t in model(x, dense=True))
    model.train()
    assert all(t is not None for t in model(x))
    assert model(x, dense=False)[1:] == (None, None, None)


def test_single_task_baseline_has_no_decoder():
    model = create_model(ModelConfig(encoder="test_resnet", pretrained=False)).train()
    assert len(model.decoders) == 0
    out = model(torch.rand(2, 3, 64, 64), dense=True)
    assert out.logits.shape == (2, 2) and out[1:] == (None, None, None)


def test_only_enabled_tasks_are_built():
    cfg = ModelConfig(encoder="test_resnet", pretrained=False, localisation=TaskConfig(enabled=True))
    out = create_model(cfg).train()(torch.rand(2, 3, 64, 64))
    assert out.mask is None and out.classes is None and out.heatmap.shape == (2, 1, 64, 64)


def test_shared_decoder():
    model = create_model(make_cfg(shared_decoder=True)).train()
    assert list(model.decoders) == ["shared"]
    out = model(torch.rand(2, 3, 64, 64))
    assert out.classes.shape == (2, 3, 64, 64)
    separate = create_model(make_cfg())
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in separate.parameters())


@pytest.mark.parametrize(("shared", "widths"), [(True, (64, 32, 16)), (False, (64, 32, 16)), (True, (128, 64))])
def test_cheaper_decoders_keep_full_resolution_outputs(shared, widths):
    """Shared trunk, narrower blocks, or two blocks (stopping at stride 8): the heads' logits are
    up-sampled to the input, so the losses and targets are those of the default decoders."""
    cheap = create_model(make_cfg("tv_mobilenet_v2", shared_decoder=shared, decoder_channels=widths)).train()
    out = cheap(torch.rand(2, 3, 64, 64))
    assert out.mask.shape == (2, 1, 64, 64) and out.classes.shape == (2, 3, 64, 64)
    assert out.heatmap.shape == (2, 1, 64, 64)
    assert cheap.decoders[next(iter(cheap.decoders))].out_channels == widths[-1]
    default = create_model(make_cfg("tv_mobilenet_v2"))
    assert sum(p.numel() for p in cheap.parameters()) < sum(p.numel() for p in default.parameters())


def test_default_decoders_keep_the_shipped_model_file_layout():
    """The default decoder settings build exactly the weights the shipped default.pt holds (it still loads)."""
    from mitotype.config import config_from_dict
    from mitotype.models.modelfile import default_model_path

    payload = torch.load(default_model_path(), map_location="cpu", weights_only=False)
    shipped = config_from_dict(payload["config"]).model
    assert (shipped.shared_decoder, shipped.decoder_channels) == (False, ModelConfig().decoder_channels)
    cfg = make_cfg("tv_mobilenet_v2")
    assert sorted(create_model(cfg).state_dict()) == sorted(payload["state_dict"])


def test_too_many_decoder_blocks_are_named():
    with pytest.raises(MitotypeError, match="model.decoder_channels: 5 decoder blocks need 6 encoder levels"):
        create_model(make_cfg("tv_mobilenet_v2", decoder_channels=(8, 8, 8, 8, 8)))


def test_head_has_three_linear_layers_with_configured_widths():
    model = create_model(ModelConfig(encoder="test_resnet", pretrained=False, head_hidden=(32, 16)))
    linears = [m for m in model.head.modules() if isinstance(m, torch.nn.Linear)]
    cin = model.encoder.feature_info.channels()[-1]
    assert [(m.in_features, m.out_features) for m in linears] == [(cin, 32), (32, 16), (16, 2)]


def test_mask_pooling_uses_the_predicted_mask_at_inference(monkeypatch):
    torch.manual_seed(0)
    model = create_model(make_cfg(mask_pooling=True)).eval()
    x = torch.rand(2, 3, 64, 64)
    assert model(x).mask is None  # computed inside, not returned unless asked

    def left_half(features, size):  # a "figure" covering the left half of the image
        mask = torch.full((features.shape[0], 1, *size), -30.0)
        mask[..., : size[1] // 2] = 30.0
        return mask

    monkeypatch.setattr(model.dense_heads["segmentation"], "forward", left_half)
    monkeypatch.setattr(model.head, "mlp", torch.nn.Identity())  # logits = the pooled features
    with torch.no_grad():
        deep = model.encoder(x)[-1]
        expected = deep[..., : deep.shape[-1] // 2].mean(dim=(2, 3))
        torch.testing.assert_close(model(x).logits, expected, atol=1e-4, rtol=1e-3)
        assert not torch.allclose(deep.mean(dim=(2, 3)), expected, atol=1e-3)


@pytest.fixture(scope="module")
def real_crops(amibr_root):
    """Eight AMi-Br test crops, normalised, at 64 px (real pixels, small network)."""
    import torch.nn.functional as F

    from mitotype.data.images import load_images
    from mitotype.data.spec import load_figures
    from mitotype.models.inference import model_inputs

    images = load_images(load_figures(f"amibr:{amibr_root}:split=test")[:8], size=128)
    x = torch.from_numpy(model_inputs(images, (128, 128, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), None)))
    return F.interpolate(x, size=64, mode="bilinear", align_corners=False)


@pytest.mark.parametrize("pooling", [False, True])
def test_forward_is_forward_features_then_forward_head(real_crops, pooling):
    """The split is the forward path itself: encoder maps -> (the decoders asked for, and the segmentation
    decoder for mask pooling) -> head, bit for bit, in eval and training mode."""
    torch.manual_seed(0)
    model = create_model(make_cfg(mask_pooling=pooling)).eval()
    x = real_crops
    with torch.no_grad():
        features = model.encoder(x)
        for dense in (False, True):
            out = model(x, dense=dense)
            wanted = list(model.tasks) if dense else ["segmentation"] * pooling
            maps = model._dense(features, wanted, x.shape[-2:])
            logits = model.head(features[-1], maps.get("segmentation") if pooling else None)
            assert torch.equal(out.logits, logits)
            split = model.forward_head(model.forward_features(x), x.shape[-2:], dense)
            assert all(a is b is None or torch.equal(a, b) for a, b in zip(out, split))
            if dense:
                assert torch.equal(out.mask, maps["segmentation"]) and torch.equal(out.heatmap, maps["localisation"])
        model.train()
        assert torch.equal(model(x).classes, model.forward_head(model.forward_features(x), x.shape[-2:], True).classes)


@pytest.mark.parametrize("pooling", [False, True])
def test_cam_differentiates_the_forward_logits(real_crops, pooling):
    """Grad-CAM's gradients are those of the forward path's own atypical logit (a hook on the stage's map)."""
    torch.manual_seed(0)
    model = create_model(make_cfg(mask_pooling=pooling)).eval()
    x, stage, kept = real_crops, model.cam_stage(), {}

    def keep(module, inputs, output):
        output[stage].retain_grad()
        kept["map"] = output[stage]

    handle = model.encoder.register_forward_hook(keep)
    model(x.requires_grad_(True), dense=False).logits[:, 1].sum().backward()
    handle.remove()
    chosen, grad = kept["map"].detach(), kept["map"].grad
    cam = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * chosen).sum(dim=1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    model.zero_grad(set_to_none=True)
    torch.testing.assert_close(model.cam(x.detach()), cam / cam.flatten(1).amax(dim=1).clamp_min(1e-8)[:, None, None])


def test_mask_pooling_needs_segmentation():
    from mitotype.config import load_config

    with pytest.raises(MitotypeError, match="mask_pooling needs the figure mask"):
        load_config(None, ["model.mask_pooling=true"])


def test_predict_proba_and_mode_restored():
    model = create_model(make_cfg()).train()
    p = model.predict_proba(torch.rand(3, 3, 64, 64))
    assert p.shape == (3,) and ((p >= 0) & (p <= 1)).all()
    assert model.training


def test_channels_last_forward_matches():
    model = create_model(make_cfg("tv_mobilenet_v2")).eval()
    x = torch.rand(2, 3, 64, 64)
    ref = model(x, dense=True)
    model = model.to(memory_format=torch.channels_last)
    out = model(x.contiguous(memory_format=torch.channels_last), dense=True)
    for a, b in zip(ref, out):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_cam_shape_range_and_no_param_grads():
    model = create_model(make_cfg())
    cam = model.cam(torch.rand(2, 3, 64, 64))
    assert cam.shape == (2, 64, 64)
    assert cam.min() >= 0 and cam.max() <= 1 + 1e-6
    assert all(p.grad is None for p in model.parameters())


def test_cam_defaults_to_a_stride_8_stage_finer_than_the_last():
    """The deepest stage is 4 x 4 at 128 px (blobs along the border); the default CAM is taken on the
    16 x 16 stage, and stage=-1 still gives the coarse one."""
    model = create_model(make_cfg("tv_mobilenet_v2"))
    x = torch.rand(1, 3, 128, 128)
    stage = model.cam_stage()
    features = model.encoder(x)
    assert features[stage].shape[-1] == 16 and features[-1].shape[-1] == 4
    torch.testing.assert_close(model.cam(x), model.cam(x, stage=stage))
    assert not torch.allclose(model.cam(x), model.cam(x, stage=-1))


def test_frozen_encoder_keeps_weights_and_norm_statistics():
    model = create_model(ModelConfig(encoder="test_resnet", pretrained=False, finetune="frozen"))
    bn = next(m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model.train()
    model(torch.rand(4, 3, 64, 64) * 5)
    assert torch.equal(bn.running_mean, before)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    assert model.cam(torch.rand(1, 3, 64, 64)).shape == (1, 64, 64)


def test_finetune_module_is_applied_when_present(monkeypatch):
    calls = []
    from mitotype.models import finetune

    monkeypatch.setattr(finetune, "apply_finetune", lambda model, cfg: calls.append(cfg.finetune))
    create_model(ModelConfig(encoder="test_resnet", pretrained=False, finetune="lora"))
    create_model(ModelConfig(encoder="test_resnet", pretrained=False, finetune="full"))
    assert calls == ["lora"]


def test_frozen_finetune_freezes_a_cnn_encoder():
    model = create_model(ModelConfig(encoder="test_resnet", pretrained=False, finetune="frozen"))
    assert model.encoder_frozen


def test_bad_finetune_mode():
    from mitotype.config import load_config

    with pytest.raises(MitotypeError, match="model.finetune: must be one of full, frozen, lora, got 'partial'"):
        load_config(None, ["model.finetune=partial"])
