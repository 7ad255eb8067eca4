"""Classification head: global (or figure-mask-weighted) average pooling, then 3 fully connected layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def masked_average(features: torch.Tensor, mask_logits: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Average of ``features`` (N, C, h, w) weighted by sigmoid(mask logits) resized to (h, w).

    The weights are detached: the classification loss must not reshape the figure mask (it is supervised
    by its own target and shown to users as an explanation). ``eps`` keeps an empty mask from dividing by 0;
    it tends to plain average pooling then.
    """
    w = torch.sigmoid(mask_logits.detach().float())
    w = F.adaptive_avg_pool2d(w, features.shape[-2:]).to(features.dtype) + eps
    return (features * w).sum(dim=(2, 3)) / w.sum(dim=(2, 3))


class ClassificationHead(nn.Module):
    """pool -> [Linear -> ReLU -> Dropout] x len(hidden) -> Linear(num_classes)."""

    def __init__(self, cin: int, hidden: tuple[int, ...] = (512, 256), dropout: float = 0.3,
                 num_classes: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(cin, width), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            cin = width
        layers.append(nn.Linear(cin, num_classes))
        self.mlp = nn.Sequential(*layers)

    def pool(self, features: torch.Tensor, mask_logits: torch.Tensor | None = None) -> torch.Tensor:
        if mask_logits is None:
            return features.mean(dim=(2, 3))
        return masked_average(features, mask_logits)

    def forward(self, features: torch.Tensor, mask_logits: torch.Tensor | None = None) -> torch.Tensor:
        return self.mlp(self.pool(features, mask_logits))
