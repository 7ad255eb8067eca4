"""The training step's loss, the one definition: Lightning's ``MitoModule.training_step``, the step-time
probes of ``train.speed`` and ``mitotype bench``'s training rows all call :func:`training_loss`."""

from __future__ import annotations

from collections.abc import Callable

import torch

from mitotype.config import RunConfig
from mitotype.train.background_swap import consistency, with_swapped


def training_loss(forward: Callable[[torch.Tensor], tuple], criterion: Callable, cfg: RunConfig, batch: dict,
                  aux_scale: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(total, parts) of one training batch: ``forward(images)`` (the model, in training mode) once over the
    batch -- with background swap over the originals and their swapped copies together, plus the
    consistency term -- and ``criterion`` (a MultiTaskLoss) on its outputs."""
    n = batch["image"].shape[0]
    swap = cfg.model.background_swap
    if not (swap.enabled and n > 1):
        return criterion(forward(batch["image"]), batch, aux_scale=aux_scale)
    batch = with_swapped(batch)
    outputs = forward(batch["image"])
    total, parts = criterion(outputs, batch, aux_scale=aux_scale)
    term = consistency(outputs.logits[:n], outputs.logits[n:])
    return total + swap.weight * term, {**parts, "background_swap": term}
