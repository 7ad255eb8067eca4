"""Several trained networks as one model: P(atypical) is the mean of the members' probabilities.

``EnsembleNet`` returns ``log(mean softmax)`` as its logits, so that everything that takes a softmax of a
model's logits (prediction, evaluation, the challenge, ONNX export) gets the ensemble's mean probability
without knowing it is an ensemble. Dense outputs and Grad-CAM come from the first member: the members
see the same pixels, and one member's mask is what a reviewer reads. Members must share their
preprocessing (crop size, input size, resolution, mean/std): the model file stores one.
"""

from __future__ import annotations

import torch
from torch import nn

from mitotype.models.model import Outputs


class EnsembleNet(nn.Module):
    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        first = members[0]
        self.cfg, self.tasks, self.encoder = first.cfg, first.tasks, first.encoder  # what callers read

    def forward(self, x: torch.Tensor, dense: bool | None = None) -> Outputs:
        first = self.members[0](x, dense=dense)
        probs = [torch.softmax(first.logits.float(), dim=1)]
        probs += [torch.softmax(m(x, dense=False).logits.float(), dim=1) for m in self.members[1:]]
        mean = torch.stack(probs).mean(dim=0)
        return first._replace(logits=torch.log(mean.clamp_min(1e-12)))

    @torch.inference_mode()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        was_training = self.training
        self.eval()
        try:
            return torch.softmax(self(x, dense=False).logits, dim=1)[:, 1]
        finally:
            self.train(was_training)

    def cam(self, x: torch.Tensor, target: int = 1, stage: int | None = None) -> torch.Tensor:
        return self.members[0].cam(x, target=target, stage=stage)
