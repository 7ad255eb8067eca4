"""Fine-tuning modes (``model.finetune``) and the model-file split for hub-based encoders.

* ``full``: everything trains (nothing to do here).
* ``frozen``: the encoder's pretrained part is frozen, normalisation statistics included (a ViT backbone is
  kept in eval mode; a CNN goes through ``MitoNet.freeze_encoder``); the ViT pyramid, the classification
  head and the decoders train -- a probe of the pretrained features.
* ``lora``: peft LoRA adapters (``lora_rank``, ``lora_alpha``, ``lora_dropout``) on the encoder's linear
  layers whose names end in ``lora_targets`` (attention ``qkv``/``proj`` and MLP ``fc1``/``fc2`` by
  default); every other backbone weight is frozen; the pyramid, head and decoders train fully.

When the frozen base weights come from a named hub model (``pretrained=true``, no ``model.weights``), the
model file stores only what training changed (:func:`split_state`), a few MB instead of gigabytes, and never
redistributes gated weights; :func:`restore_state` puts them back on top of freshly fetched hub weights and
checks, by a checksum, that those are the weights the model was trained on.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mitotype.config import ModelConfig
from mitotype.errors import MitotypeError

BACKBONE_PREFIX = "encoder.backbone."


def apply_finetune(model: nn.Module, cfg: ModelConfig) -> nn.Module:
    """Set up ``cfg.finetune`` on a freshly built MitoNet, in place; returns the model."""
    from mitotype.models.vit import ViTEncoder

    encoder = model.encoder
    is_vit = isinstance(encoder, ViTEncoder)
    if cfg.finetune == "full":
        return model
    if cfg.finetune == "frozen":
        if is_vit:
            encoder.backbone.requires_grad_(False)
            encoder.backbone_frozen = True
            encoder.train(encoder.training)
        else:
            model.freeze_encoder()
        return model
    add_lora(encoder.backbone if is_vit else encoder, cfg)  # "lora": the config allows nothing else
    return model


def lora_target_names(module: nn.Module, targets: tuple[str, ...] | list[str]) -> list[str]:
    """Full names of the ``nn.Linear`` layers whose name is, or ends in ``.``, one of ``targets``."""
    names = []
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets):
            names.append(name)
    return names


def add_lora(module: nn.Module, cfg: ModelConfig) -> nn.Module:
    """Inject LoRA adapters into ``module`` in place (peft); all its other parameters are frozen."""
    from peft import LoraConfig, inject_adapter_in_model

    if cfg.lora_rank < 1 or cfg.lora_alpha <= 0 or not 0 <= cfg.lora_dropout < 1:
        raise MitotypeError(f"model.lora_rank={cfg.lora_rank}, lora_alpha={cfg.lora_alpha}, lora_dropout="
                            f"{cfg.lora_dropout}: need rank >= 1, alpha > 0, 0 <= dropout < 1")
    names = lora_target_names(module, cfg.lora_targets)
    if not names:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in module.named_modules() if isinstance(m, nn.Linear)})
        raise MitotypeError(
            f"model.lora_targets={list(cfg.lora_targets)}: no linear layer of encoder {cfg.encoder!r} has such a "
            f"name (its linear layers end in {linear[:12] or 'nothing'}); LoRA is meant for ViT encoders -- "
            "use model.finetune=frozen or full for a CNN")
    config = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                        target_modules=names, bias="none")
    inject_adapter_in_model(config, module)
    return module


def count_parameters(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


# -- model files: leave the hub weights out ----------------------------------------------------------------
def _base_keys(model: nn.Module) -> list[str]:
    """State-dict keys of the frozen backbone (parameters without gradients and backbone buffers)."""
    frozen = {BACKBONE_PREFIX + n for n, p in model.encoder.backbone.named_parameters() if not p.requires_grad}
    frozen |= {BACKBONE_PREFIX + n for n, _ in model.encoder.backbone.named_buffers()}
    return [k for k in model.state_dict() if k in frozen]


def _checksum(state: dict[str, torch.Tensor], keys: list[str]) -> float:
    """Cheap fingerprint of the base weights (float64 sums): detects a changed hub revision."""
    total = torch.zeros((), dtype=torch.float64)
    for i, key in enumerate(keys):
        t = state[key].detach().to("cpu", torch.float64)
        total += t.sum() + (i % 7 + 1) * t.abs().sum()
    return float(total)


def stores_base_separately(model: nn.Module, cfg: ModelConfig) -> bool:
    """True when the model file should leave out the frozen base weights (they come from a named hub model)."""
    from mitotype.models.vit import ViTEncoder

    encoder = getattr(model, "encoder", None)
    return (isinstance(encoder, ViTEncoder) and encoder.base_from_hub and cfg.finetune in ("frozen", "lora")
            and cfg.pretrained and not cfg.weights)


def split_state(model: nn.Module, cfg: ModelConfig, state: dict[str, torch.Tensor]
                ) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(state to store, description of the left-out base weights or None when everything is stored)."""
    if not stores_base_separately(model, cfg):
        return state, None
    keys = _base_keys(model)
    base = {
        "encoder": cfg.encoder,
        "source": (getattr(model.encoder.backbone, "pretrained_cfg", None) or {}).get("hf_hub_id"),
        "keys": len(keys),
        "checksum": _checksum(state, keys),
    }
    dropped = set(keys)
    return {k: v for k, v in state.items() if k not in dropped}, base


def restore_state(model: nn.Module, state: dict[str, torch.Tensor], base: dict[str, Any], where: str) -> None:
    """Load a stored trainable state on top of a model freshly built with its hub weights."""
    keys = _base_keys(model)
    missing, unexpected = model.load_state_dict(state, strict=False)
    not_base = sorted(set(missing) - set(keys))
    if not_base or unexpected:
        raise MitotypeError(f"{where}: the stored weights do not fit the architecture its config describes "
                            f"(encoder {base.get('encoder')!r}): missing {not_base[:3]}, unexpected "
                            f"{list(unexpected)[:3]}")
    own = _checksum(model.state_dict(), keys)
    if len(keys) != base.get("keys") or abs(own - base["checksum"]) > 1e-6 * max(1.0, abs(base["checksum"])):
        raise MitotypeError(f"{where}: the base weights of {base.get('encoder')!r} fetched now differ from those "
                            "this model was trained on (another hub revision or timm version?); the fine-tuned "
                            "parameters in this file only fit the original weights")
