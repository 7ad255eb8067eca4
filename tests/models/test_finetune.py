"""Fine-tuning modes and model files of hub-based encoders (random-init tiny ViT; a fake offline hub cache)."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from mitotype.config import ModelConfig, RunConfig, TaskConfig
from mitotype.errors import MitotypeError
from mitotype.models import create_model
from mitotype.models.finetune import count_parameters
from mitotype.models.modelfile import load_model, read_payload, save_model

ALL_TASKS = {"segmentation": TaskConfig(True), "pixel_classes": TaskConfig(True), "localisation": TaskConfig(True)}
HUB_ID = "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"  # where timm fetches vit_tiny_patch16_224 from


def tiny_cfg(**kw) -> ModelConfig:
    base = dict(encoder="vit_tiny_patch16_224", pretrained=False, crop_size=128, input_size=128,
                mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), lora_rank=4, lora_alpha=8, **ALL_TASKS)
    base.update(kw)
    return ModelConfig(**base)


def batch(n: int = 4, size: int = 128) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(n, 1, size, size, generator=g) > 0.7).float()
    return {"image": torch.randn(n, 3, size, size, generator=g), "label": torch.tensor([0, 1] * (n // 2)),
            "mask": mask, "valid": torch.ones_like(mask), "classes": mask[:, 0].long(),
            "heatmap": torch.rand(n, 1, size, size, generator=g)}


def one_step(model: torch.nn.Module, cfg: ModelConfig) -> None:
    from mitotype.models.losses import MultiTaskLoss

    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    b = batch()
    total, parts = MultiTaskLoss(RunConfig(model=cfg))(model(b["image"]), b)
    assert set(parts) == {"class", "segmentation", "pixel_classes", "localisation"}
    total.backward()
    opt.step()


def test_lora_trains_only_adapters_and_the_new_parts():
    torch.manual_seed(0)
    cfg = tiny_cfg(finetune="lora")
    model = create_model(cfg)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    backbone = {n for n in trainable if n.startswith("encoder.backbone.")}
    assert backbone and all(".lora_A." in n or ".lora_B." in n for n in backbone)
    # adapters on every attention (qkv, proj) and MLP (fc1, fc2) linear layer of the 12 blocks, not patch_embed
    adapted = {n.split(".lora_")[0] for n in backbone}
    assert len(adapted) == 12 * 4 and not any("patch_embed" in n for n in adapted)
    # pyramid, head and decoders train fully
    for prefix in ("encoder.scales.", "encoder.proj.", "head.", "decoders.", "dense_heads."):
        params = [p for n, p in model.named_parameters() if n.startswith(prefix)]
        assert params and all(p.requires_grad for p in params), prefix
    counts = count_parameters(model)
    assert counts["trainable"] < counts["total"]

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    one_step(model, cfg)
    after = dict(model.named_parameters())
    frozen = [n for n in before if not after[n].requires_grad]
    assert frozen and all(torch.equal(before[n], after[n]) for n in frozen)
    assert any(not torch.equal(before[n], after[n]) for n in backbone if ".lora_B." in n)
    assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith("head."))


def test_frozen_keeps_the_backbone_fixed_and_in_eval_mode():
    torch.manual_seed(0)
    cfg = tiny_cfg(finetune="frozen", drop_path_rate=0.1)
    model = create_model(cfg).train()
    assert not model.encoder.backbone.training  # no drop-path / dropout in a frozen backbone
    assert model.encoder.proj.training and model.head.training
    assert not any(p.requires_grad for p in model.encoder.backbone.parameters())
    before = {n: p.detach().clone() for n, p in model.encoder.backbone.named_parameters()}
    one_step(model, cfg)
    assert not model.encoder.backbone.training
    assert all(torch.equal(before[n], p) for n, p in model.encoder.backbone.named_parameters())


def test_frozen_cnn_freezes_norm_statistics_and_lora_on_a_cnn_is_refused():
    cfg = ModelConfig(encoder="tv_mobilenet_v2", pretrained=False, finetune="frozen")
    model = create_model(cfg).train()
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert not model.encoder.training and model.head.training
    with pytest.raises(MitotypeError, match="lora_targets"):
        create_model(ModelConfig(encoder="tv_mobilenet_v2", pretrained=False, finetune="lora"))


def test_bad_lora_settings_are_refused():
    with pytest.raises(MitotypeError, match="no linear layer"):
        create_model(tiny_cfg(finetune="lora", lora_targets=("q_proj",)))
    with pytest.raises(MitotypeError, match="lora_rank"):
        create_model(tiny_cfg(finetune="lora", lora_rank=0))


def test_lora_model_file_round_trip_gives_identical_predictions(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_cfg(finetune="lora")
    model = create_model(cfg)
    one_step(model, cfg)  # adapters non-zero
    path = save_model(tmp_path / "model.pt", model, RunConfig(model=cfg), threshold=0.4)
    assert "base_weights" not in read_payload(path)  # random init: nothing to fetch, every weight stored
    loaded = load_model(path)
    x = batch()["image"]
    assert loaded.threshold == pytest.approx(0.4)
    assert torch.equal(model.predict_proba(x), loaded.model.predict_proba(x))


@pytest.fixture
def fake_hub_cache(tmp_path, monkeypatch) -> Path:
    """An offline Hugging Face cache holding (random) weights for vit_tiny_patch16_224, as a download leaves."""
    import huggingface_hub.constants
    from safetensors.torch import save_file

    cache = tmp_path / "hf-cache"
    repo = cache / ("models--" + HUB_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    torch.manual_seed(123)
    save_file(timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict(),
              str(snapshot / "model.safetensors"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return snapshot / "model.safetensors"


def test_hub_based_model_file_stores_only_what_training_changed(tmp_path, fake_hub_cache):
    torch.manual_seed(0)
    cfg = tiny_cfg(finetune="lora", pretrained=True)
    model = create_model(cfg)
    assert model.encoder.base_from_hub
    one_step(model, cfg)
    path = save_model(tmp_path / "model.pt", model, RunConfig(model=cfg))
    payload = read_payload(path)
    stored = payload["state_dict"]
    assert payload["base_weights"]["encoder"] == "vit_tiny_patch16_224"
    assert not any(k.startswith("encoder.backbone.") and ".lora_" not in k for k in stored)
    assert any(".lora_B." in k for k in stored) and any(k.startswith("decoders.") for k in stored)
    assert sum(v.numel() for v in stored.values()) < 0.5 * count_parameters(model)["total"]

    loaded = load_model(path)  # base weights from the (offline) cache, the rest from the file
    x = batch()["image"]
    assert torch.equal(model.predict_proba(x), loaded.model.predict_proba(x))

    # other base weights under the same name (a new hub revision): refused, not silently wrong
    from safetensors.torch import save_file

    torch.manual_seed(7)
    save_file(timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict(), str(fake_hub_cache))
    with pytest.raises(MitotypeError, match="differ"):
        load_model(path)

    # base weights that cannot be had: the error names the model and what to do
    fake_hub_cache.unlink()
    with pytest.raises(MitotypeError) as err:
        load_model(path)
    assert "model.pt" in str(err.value) and "vit_tiny_patch16_224" in str(err.value)
    assert "HF_TOKEN" in str(err.value)
