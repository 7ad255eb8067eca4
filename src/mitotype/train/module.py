"""The LightningModule: one MitoNet, its training loss (``train.step``), AdamW and the LR schedule."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from mitotype.config import RunConfig
from mitotype.models.losses import aux_weight_scale
from mitotype.train.step import training_loss


def warmup_cosine(warmup_steps: int, total_steps: int, floor: float = 0.0):
    """LambdaLR factor: linear warm-up to 1, then cosine down to ``floor``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


class MitoModule(L.LightningModule):
    """Training, validation and optimisation of :class:`mitotype.models.MitoNet` for one :class:`RunConfig`.

    ``class_weights`` (2,) go to the loss; ``domain_weights`` (n_domains,) become the per-sample batch key
    ``weight`` (looked up from ``batch['domain']``) when ``train.domain_weights`` is on.
    """

    def __init__(self, cfg: RunConfig, class_weights: torch.Tensor | None = None,
                 domain_weights: torch.Tensor | None = None) -> None:
        super().__init__()
        from mitotype.models import create_model
        from mitotype.models.losses import MultiTaskLoss

        self.cfg = cfg
        self.save_hyperparameters({"config": cfg.to_dict()})
        self.model = create_model(cfg.model)
        if cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.criterion = MultiTaskLoss(cfg, class_weights=class_weights)
        self.register_buffer("domain_weight", domain_weights, persistent=False)
        self._val_probs: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []
        self._val_index: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, dense: bool | None = None):
        if self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x, dense=dense)

    # -- training ---------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        n = batch["image"].shape[0]
        if self.cfg.train.domain_weights and self.domain_weight is not None:
            batch = {**batch, "weight": self.domain_weight[batch["domain"]]}
        aux_scale = 1.0
        if self.cfg.train.aux_schedule != "constant":
            aux_scale = aux_weight_scale(self.cfg.train.aux_schedule, self.global_step,
                                         self.trainer.estimated_stepping_batches)
            self.log("aux_scale", aux_scale, on_step=False, on_epoch=True, batch_size=n)
        total, parts = training_loss(self, self.criterion, self.cfg, batch, aux_scale=aux_scale)
        if not torch.isfinite(total):
            from mitotype.errors import MitotypeError

            raise MitotypeError(f"training loss is {total.item()} at step {self.global_step} "
                                f"(parts: { {k: float(v) for k, v in parts.items()} }); lower train.lr?")
        # sync_dist: the epoch's loss over every process's batches (one scalar per step under DDP)
        self.log("train_loss", total, on_step=True, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        for name, value in parts.items():
            self.log(f"train_{name}", value, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        return total

    # -- validation -------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_probs.clear()
        self._val_labels.clear()
        self._val_index.clear()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self(batch["image"], dense=False).logits.float()
        loss = F.cross_entropy(logits, batch["label"])
        self.log("val_loss", loss, on_step=False, on_epoch=True, batch_size=logits.shape[0], sync_dist=True)
        self._val_probs.append(logits.softmax(dim=1)[:, 1].detach())
        self._val_labels.append(batch["label"].detach())
        self._val_index.append(batch["index"].detach())

    def on_validation_epoch_end(self) -> None:
        if not self._val_probs:
            return
        probs, labels = torch.cat(self._val_probs), torch.cat(self._val_labels)
        if self.trainer.world_size > 1:
            probs, labels = self._gather_validation(probs, labels, torch.cat(self._val_index))
        metrics = validation_metrics(labels.cpu().numpy(), probs.cpu().numpy())
        self.log("val_bacc", metrics["balanced_accuracy"], prog_bar=True, sync_dist=False)
        self.log("val_auroc", metrics["auroc"], prog_bar=True, sync_dist=False)

    def _gather_validation(self, probs, labels, index) -> tuple[torch.Tensor, torch.Tensor]:
        """DDP: every rank saw a shard of the validation part, padded by Lightning's sampler with repeats
        to equal sizes; the metrics need every figure exactly once, as in one process."""
        probs, labels, index = (self.all_gather(t).reshape(-1) for t in (probs, labels, index))
        _, first = np.unique(index.cpu().numpy(), return_index=True)
        keep = torch.as_tensor(first, device=probs.device)
        return probs[keep], labels[keep]

    # -- optimisation -----------------------------------------------------------------------------------
    def configure_optimizers(self):
        t = self.cfg.train
        groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            is_encoder = name.startswith("encoder.")
            no_decay = param.ndim <= 1  # biases and norm scales: weight decay only hurts them
            groups.setdefault((is_encoder, no_decay), []).append(param)
        param_groups = [
            {"params": params, "lr": t.lr * (t.encoder_lr_scale if enc else 1.0),
             "weight_decay": 0.0 if no_decay else t.weight_decay}
            for (enc, no_decay), params in groups.items()
        ]
        optimizer = torch.optim.AdamW(param_groups, lr=t.lr, weight_decay=t.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        if t.schedule == "onecycle":
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=[g["lr"] for g in param_groups], total_steps=total,
                pct_start=min(0.5, max(0.01, t.warmup_epochs / max(1, t.epochs))))
        else:  # "cosine" (the config allows nothing else)
            steps_per_epoch = total / max(1, t.epochs)
            warmup = round(t.warmup_epochs * steps_per_epoch)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, total, floor=0.01))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def validation_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """The evaluation metrics (``metrics.point_metrics``: atypical = positive, called when
    p >= threshold) with the threshold and counts, as training logs and stores them."""
    from mitotype.metrics import point_metrics

    labels = np.asarray(labels).astype(int)
    return {**point_metrics(labels, probs, threshold), "threshold": float(threshold), "n": int(labels.size),
            "n_atypical": int((labels == 1).sum())}
