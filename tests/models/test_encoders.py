"""Encoders: the feature pyramid contract, local weights files, ViT dispatch, clear errors."""

from __future__ import annotations

import pytest
import torch

from mitotype.config import ModelConfig
from mitotype.errors import MitotypeError
from mitotype.models.encoders import create_encoder

ENCODERS = ["tv_mobilenet_v2", "resnet18", "efficientnet_b0", "efficientnet_lite0"]


@pytest.mark.parametrize("name", ENCODERS)
def test_feature_pyramid_matches_feature_info(name):
    enc = create_encoder(ModelConfig(encoder=name, pretrained=False)).eval()
    feats = enc(torch.rand(1, 3, 96, 96))
    info = enc.feature_info
    assert len(feats) == len(info) >= 4
    assert [f.shape[1] for f in feats] == info.channels()
    assert [96 // f.shape[-1] for f in feats] == info.reduction()
    assert info.reduction()[-4:] == [4, 8, 16, 32]  # deepest + the three skips of the decoder


def test_timm_local_weights_file_is_loaded(tmp_path):
    import timm

    ref = timm.create_model("resnet18")
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    enc = create_encoder(ModelConfig(encoder="resnet18", pretrained=False, weights=str(path)))
    assert torch.equal(enc.body.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)


def test_torchvision_local_weights_file_is_loaded(tmp_path):
    from torchvision.models import mobilenet_v2

    ref = mobilenet_v2()
    path = tmp_path / "mnv2.pth"
    torch.save(ref.state_dict(), path)
    enc = create_encoder(ModelConfig(encoder="tv_mobilenet_v2", pretrained=False, weights=str(path)))
    ours = enc.state_dict()
    # every tensor, BatchNorm statistics included (building the encoder must not run it in train mode)
    assert all(torch.equal(ours[k], v) for k, v in ref.state_dict().items() if k.startswith("features."))


@pytest.mark.parametrize("encoder", ["tv_mobilenet_v2", "resnet18", "efficientnet_lite0"])
def test_bad_weights_file_names_the_file(tmp_path, encoder):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(MitotypeError, match="bad.pth"):
        create_encoder(ModelConfig(encoder=encoder, weights=str(bad)))
    with pytest.raises(MitotypeError, match="not found"):
        create_encoder(ModelConfig(encoder=encoder, weights=str(tmp_path / "missing.pth")))


def test_foreign_weights_for_torchvision_encoder(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(MitotypeError, match="other.pth.*does not hold"):
        create_encoder(ModelConfig(encoder="tv_mobilenet_v2", weights=str(path)))


def test_unknown_encoder():
    with pytest.raises(MitotypeError, match="unknown encoder 'no_such_net'"):
        create_encoder(ModelConfig(encoder="no_such_net", pretrained=False))


def test_timm_pretrained_offline_error_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # a model whose weights are surely not cached here
    with pytest.raises(MitotypeError, match="model.weights=PATH.*pretrained=false"):
        create_encoder(ModelConfig(encoder="resnet10t", pretrained=True))


@pytest.mark.parametrize("name", ["vit_small_patch16_224", "deit_tiny_patch16_224", "eva02_tiny_patch14_224",
                                  "hf-hub:org/model"])
def test_vit_names_dispatch_to_vit_module(monkeypatch, name):
    calls = []
    from mitotype.models import encoders

    monkeypatch.setattr(encoders, "create_vit_encoder", lambda cfg: calls.append(cfg.encoder) or "encoder")
    assert create_encoder(ModelConfig(encoder=name)) == "encoder"
    assert calls == [name]
