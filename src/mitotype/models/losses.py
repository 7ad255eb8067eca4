"""Multi-task loss: class loss + weighted dense auxiliary losses.

total = class + w_seg * (BCE + Dice) + w_pix * (CE + Dice) + w_loc * (MSE | focal)
(the training step adds w_swap * the background-swap consistency: ``mitotype.train.background_swap``)

* class: cross-entropy or focal (``train.class_loss``, ``train.focal_gamma``), with class weights
  (``class_weights``, e.g. ~(1, 3.5) for 1 atypical to 3.5 normal), label smoothing, and optional per-sample
  weights ``batch["weight"]`` (per-domain weighting); the mean is normalised by the sum of the weights used.
* dense terms are computed only where ``batch["valid"]`` is 1 (zero-padding and other ignored pixels are
  left out) and only when the model returned them (decoders off in eval mode -> no dense term).
* Dice terms are soft Dice over the whole batch (one ratio per channel), as in segmentation_models_pytorch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mitotype.config import DENSE_TASKS, RunConfig
from mitotype.data.dataset import IGNORE_INDEX as IGNORE  # the pixel-class ignore code the dataset writes


def _resize(pred: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if pred.shape[-2:] != like.shape[-2:]:
        pred = F.interpolate(pred, size=like.shape[-2:], mode="bilinear", align_corners=False)
    return pred.float()


def soft_dice(probs: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - mean over channels of 2|P.T| / (|P| + |T|) on valid pixels. probs/target (N, C, H, W)."""
    dims = (0, 2, 3)
    inter = (probs * target * valid).sum(dims)
    total = (probs * valid).sum(dims) + (target * valid).sum(dims)
    return 1.0 - ((2 * inter + smooth) / (total + smooth)).mean()


def heatmap_focal(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, alpha: float = 2.0,
                  beta: float = 4.0) -> torch.Tensor:
    """Penalty-reduced pixel focal loss (CenterNet). Positives: pixels within 1% of each map's peak."""
    peak = target.flatten(1).amax(1).view(-1, 1, 1, 1)
    pos = ((target >= 0.99 * peak) & (peak > 0)).float() * valid
    neg = (1 - pos) * valid
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos_loss = -(torch.log(p) * (1 - p) ** alpha * pos).sum()
    neg_loss = -(torch.log(1 - p) * p ** alpha * (1 - target) ** beta * neg).sum()
    return (pos_loss + neg_loss) / pos.sum().clamp_min(1.0)


class MultiTaskLoss(nn.Module):
    def __init__(self, run_cfg: RunConfig, class_weights=None):
        super().__init__()
        self.model_cfg = run_cfg.model
        self.train_cfg = run_cfg.train
        cw = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", cw, persistent=False)

    def class_loss(self, logits: torch.Tensor, label: torch.Tensor, weight: torch.Tensor | None = None,
                   soft: torch.Tensor | None = None):
        """Per-sample CE (or focal) against the label; with ``soft`` (a teacher's P(atypical)) mixed with the
        CE against the teacher's distribution, ``train.distil_weight`` of it (distillation)."""
        logits = logits.float()
        ce = F.cross_entropy(logits, label, reduction="none", label_smoothing=self.train_cfg.label_smoothing)
        if self.train_cfg.class_loss == "focal":
            pt = torch.softmax(logits, 1).gather(1, label[:, None])[:, 0]
            ce = (1 - pt).clamp_min(0) ** self.train_cfg.focal_gamma * ce
        if soft is not None:
            target = torch.stack([1 - soft, soft], dim=1).to(logits)
            soft_ce = -(target * F.log_softmax(logits, 1)).sum(1)
            w_t = self.train_cfg.distil_weight
            ce = (1 - w_t) * ce + w_t * soft_ce
        w = torch.ones_like(ce)
        if self.class_weights is not None:
            w = w * self.class_weights.to(ce.device)[label]
        if weight is not None:
            w = w * weight.to(ce)
        return (w * ce).sum() / w.sum().clamp_min(1e-8)

    def segmentation_loss(self, logits, mask, valid):
        logits = _resize(logits, mask)
        bce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none")
        bce = (bce * valid).sum() / valid.sum().clamp_min(1.0)
        return bce + soft_dice(torch.sigmoid(logits), mask, valid)

    def pixel_class_loss(self, logits, classes):
        logits = _resize(logits, classes[:, None])
        ce = F.cross_entropy(logits, classes, ignore_index=IGNORE)
        if not (classes != IGNORE).any():  # all ignored: CE is nan
            ce = logits.sum() * 0.0
        valid = (classes != IGNORE)[:, None].float()
        onehot = F.one_hot(classes.clamp_min(0), logits.shape[1]).permute(0, 3, 1, 2).float()
        return ce + soft_dice(torch.softmax(logits, 1), onehot, valid)

    def heatmap_loss(self, logits, heatmap, valid):
        logits = _resize(logits, heatmap)
        if self.model_cfg.heatmap_loss == "focal":
            return heatmap_focal(logits, heatmap, valid)
        mse = (torch.sigmoid(logits) - heatmap) ** 2
        return (mse * valid).sum() / valid.sum().clamp_min(1.0)

    def forward(self, outputs, batch: dict, aux_scale: float = 1.0):
        """``outputs``: the model's Outputs; ``aux_scale``: multiplies every dense task's weight
        (``aux_weight_scale``)."""
        m = self.model_cfg
        parts = {"class": self.class_loss(outputs.logits, batch["label"], batch.get("weight"), batch.get("soft"))}
        total = parts["class"]
        valid = batch.get("valid")
        if valid is None:  # no ignored pixels
            valid = torch.ones_like(batch["image"][:, :1])
        losses = {
            "segmentation": lambda o: self.segmentation_loss(o, batch["mask"], valid),
            "pixel_classes": lambda o: self.pixel_class_loss(o, batch["classes"]),
            "localisation": lambda o: self.heatmap_loss(o, batch["heatmap"], valid),
        }
        for name, (field_name, _) in DENSE_TASKS.items():
            task, out, fn = getattr(m, name), getattr(outputs, field_name), losses[name]
            if task.enabled and out is not None:
                parts[name] = fn(out)
                total = total + aux_scale * task.weight * parts[name]
        return total, parts


def aux_weight_scale(schedule: str, step: int, total_steps: int) -> float:
    """Factor on the auxiliary loss weights at ``step`` of ``total_steps`` (``train.aux_schedule``)."""
    if schedule == "decay":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / max(1, total_steps))))
    return 1.0  # "constant"
