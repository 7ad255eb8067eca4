"""ViT encoders: pyramid shapes, all heads, weights sources and the errors users see (random-init tiny ViTs)."""

from __future__ import annotations

import os

import pytest
import timm
import torch

from mitotype.config import ModelConfig, TaskConfig
from mitotype.errors import MitotypeError
from mitotype.models import create_model
from mitotype.models.vit import ViTEncoder, create_vit_encoder, is_vit_encoder

ALL_TASKS = {"segmentation": TaskConfig(True), "pixel_classes": TaskConfig(True), "localisation": TaskConfig(True)}


def tiny_cfg(size: int = 128, **kw) -> ModelConfig:
    base = dict(encoder="vit_tiny_patch16_224", pretrained=False, crop_size=128, input_size=size,
                mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), **ALL_TASKS)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("size", [128, 224])
def test_all_heads_have_the_right_shapes(size):
    torch.manual_seed(0)
    model = create_model(tiny_cfg(size)).train()
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.logits.shape == (2, 2)
    assert out.mask.shape == (2, 1, size, size)
    assert out.classes.shape == (2, 3, size, size)
    assert out.heatmap.shape == (2, 1, size, size)
    # the pyramid agrees with the feature_info the decoders were sized from
    feats = model.encoder(x)
    info = model.encoder.feature_info
    assert [f.shape[1] for f in feats] == info.channels() == [48, 96, 192, 192]
    assert info.reduction() == [4, 8, 16, 32]
    assert [f.shape[-1] for f in feats] == [-(-size // r) for r in info.reduction()]
    model.eval()
    eval_out = model(x)
    assert eval_out.mask is None and eval_out.classes is None and eval_out.heatmap is None
    p = model.predict_proba(x)
    assert p.shape == (2,) and torch.all((p >= 0) & (p <= 1))


def test_evenly_spaced_blocks_and_prefix_tokens_dropped():
    enc = create_vit_encoder(tiny_cfg())
    assert enc.indices == [2, 5, 8, 11]
    assert enc.backbone.num_prefix_tokens == 1  # class token; the maps are 8x8 patches only
    maps = enc.backbone.forward_intermediates(torch.randn(1, 3, 128, 128), indices=enc.indices,
                                              intermediates_only=True)
    assert [tuple(m.shape) for m in maps] == [(1, 192, 8, 8)] * 4


def test_patch14_with_register_tokens_gets_the_nominal_strides():
    """UNI2-h / Virchow2 / H-optimus layout (patch 14, register tokens) on a 4-block toy model."""
    backbone = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, patch_size=14,
                                 depth=4, img_size=112, reg_tokens=4, no_embed_class=True, dynamic_img_size=True)
    enc = ViTEncoder(backbone, "toy", base_from_hub=False)
    assert enc.indices == [0, 1, 2, 3]
    feats = enc(torch.randn(1, 3, 112, 112))
    assert [tuple(f.shape[-2:]) for f in feats] == [(28, 28), (14, 14), (7, 7), (4, 4)]
    # dynamic image size: another input size works without rebuilding
    assert [f.shape[-1] for f in enc(torch.randn(1, 3, 140, 140))] == [35, 18, 9, 5]


def test_names_dispatch_to_the_vit_factory():
    assert all(is_vit_encoder(n) for n in ("vit_small_patch16_224", "deit_tiny_patch16_224", "eva02_tiny_patch14_224",
                                            "hf-hub:MahmoodLab/UNI2-h"))
    assert not is_vit_encoder("resnet18") and not is_vit_encoder("tv_mobilenet_v2")


def test_local_weights_file_is_loaded_and_resampled(tmp_path):
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    path = tmp_path / "vit_tiny.pth"
    torch.save(ref.state_dict(), path)
    with pytest.warns(UserWarning, match="mean"):  # the ImageNet defaults differ from this ViT's 0.5/0.5
        enc = create_vit_encoder(tiny_cfg(weights=str(path), mean=(0.485, 0.456, 0.406),
                                          std=(0.229, 0.224, 0.225)))
    assert torch.equal(enc.backbone.blocks[5].mlp.fc1.weight, ref.blocks[5].mlp.fc1.weight)
    assert enc.backbone.pos_embed.shape[1] == 1 + 8 * 8  # 224-px grid resampled to 128 px
    assert not enc.base_from_hub  # a local file: the model file keeps every weight


def test_local_hub_snapshot_folder_is_loaded(tmp_path):
    """``model.weights=FOLDER`` (config.json + weights, as `hf download --local-dir` leaves) needs no network."""
    from timm.models._hub import save_for_hf

    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    save_for_hf(ref, tmp_path)
    enc = create_vit_encoder(tiny_cfg(weights=str(tmp_path)))
    assert torch.equal(enc.backbone.blocks[7].attn.qkv.weight, ref.blocks[7].attn.qkv.weight)


def test_bad_weights_and_names_raise_clear_errors(tmp_path):
    with pytest.raises(MitotypeError, match="not found"):
        create_vit_encoder(tiny_cfg(weights=str(tmp_path / "missing.pth")))
    with pytest.raises(MitotypeError, match="config.json"):
        create_vit_encoder(tiny_cfg(weights=str(tmp_path)))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(MitotypeError, match="bad.pth"):
        create_vit_encoder(tiny_cfg(weights=str(bad)))
    with pytest.raises(MitotypeError, match="unknown ViT"):
        create_vit_encoder(tiny_cfg(encoder="vit_no_such_model"))


def test_gated_hub_model_offline_gives_a_clear_error():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # set by conftest before huggingface_hub is imported
    cfg = tiny_cfg(encoder="hf-hub:MahmoodLab/UNI2-h", pretrained=True, input_size=224)
    with pytest.raises(MitotypeError) as err:
        create_model(cfg)
    text = str(err.value)
    for needle in ("MahmoodLab/UNI2-h", "HF_TOKEN", "log in", "model.weights=PATH", "huggingface.co/MahmoodLab"):
        assert needle in text
    assert "Traceback" not in text
