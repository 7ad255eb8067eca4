"""The network: ``create_model(cfg) -> MitoNet`` (encoder + classification head + auxiliary decoders)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mitotype.config import ModelConfig
    from mitotype.models.model import MitoNet, Outputs

__all__ = ["MitoNet", "Outputs", "create_model"]


def __getattr__(name: str) -> Any:
    # The network classes import torch (a second or more): only when asked for, so that the torch-free
    # modules of this package (inference, modelfile) serve `mitotype predict`'s onnxruntime path alone.
    if name in ("MitoNet", "Outputs"):
        from mitotype.models import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def create_model(cfg: ModelConfig) -> MitoNet:
    """Build the model that ``cfg`` describes; fine-tuning mode (frozen encoder, LoRA) applied."""
    from mitotype.models.encoders import create_encoder
    from mitotype.models.model import MitoNet

    model = MitoNet(cfg, create_encoder(cfg))
    if cfg.finetune != "full":
        from mitotype.models.finetune import apply_finetune

        apply_finetune(model, cfg)
    return model
