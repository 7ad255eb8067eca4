"""Training data: read every image once into memory, split off validation, build the loaders."""

from __future__ import annotations

import logging

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from mitotype.config import RunConfig
from mitotype.errors import MitotypeError

log = logging.getLogger(__name__)


def inverse_frequency(values: np.ndarray, n: int | None = None) -> np.ndarray:
    """Weight per value class, ``count_total / (n_classes * count_class)`` (sklearn's "balanced")."""
    counts = np.bincount(values, minlength=n or 0).astype(np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = values.size / (present.sum() * counts[present])
    return weights


class FigureDataModule(L.LightningDataModule):
    """Figures of ``data_spec`` (and ``val_spec``), preloaded as one uint8 array.

    Without ``val_spec`` the validation part is ``group_holdout(train.val_fraction)`` of the training data:
    slide-grouped and stratified by label. Masks are computed (cached on disk) only when a dense task or
    the background swap needs them.
    """

    def __init__(self, cfg: RunConfig, data_spec: str, val_spec: str | None = None,
                 progress: bool = True) -> None:
        super().__init__()
        self.cfg, self.data_spec, self.val_spec, self.progress = cfg, data_spec, val_spec, progress
        self.train_set = self.val_set = None
        self.summary: dict = {}

    # Lightning calls setup() on every process (DDP): each rank reads the data itself, no pickling.
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from mitotype.data.dataset import FigureDataset
        from mitotype.data.images import load_images
        from mitotype.data.spec import load_figures
        from mitotype.data.splits import group_holdout
        from mitotype.data.transforms import build_transform

        cfg = self.cfg
        figures = load_figures(self.data_spec)
        if self.val_spec:
            val_figures = load_figures(self.val_spec)
            train_keys = {f.key for f in figures}
            overlap = sum(f.key in train_keys for f in val_figures)
            if overlap:
                log.warning("%d validation figures are also in the training data", overlap)
            everything = figures + val_figures
            train_idx = np.arange(len(figures))
            val_idx = np.arange(len(figures), len(everything))
        else:
            everything = figures
        # before the hold-out: a data set without labels is the problem to name, not its number of groups
        unlabelled = [f.name for f in everything if f.label is None]
        if unlabelled:
            raise MitotypeError(f"{len(unlabelled)} figures have no label (e.g. {unlabelled[0]}); "
                                "training needs labelled data")
        if not self.val_spec:
            if cfg.train.val_fraction <= 0:
                raise MitotypeError("train.val_fraction must be > 0 when no --val data is given")
            train_idx, val_idx = group_holdout(figures, cfg.train.val_fraction, cfg.train.seed)
        labels = np.array([f.label for f in everything], dtype=np.int64)
        domain_names = sorted({f.domain for f in everything})
        domains = np.array([domain_names.index(f.domain) for f in everything], dtype=np.int64)
        images = load_images(everything, size=cfg.model.crop_size, progress=self.progress)
        masks = None
        if cfg.model.dense_tasks or cfg.model.background_swap.enabled:
            from mitotype.data.targets import disk_masks, load_masks

            if cfg.train.mask_method == "disk":
                masks = disk_masks(images)
            else:
                masks, _fallback = load_masks(everything, images, progress=self.progress)

        soft = None
        if cfg.train.distil_teacher:
            from mitotype.train.distil import teacher_probs

            soft = teacher_probs(cfg.train.distil_teacher, images[train_idx], tta=cfg.train.distil_tta,
                                 progress=self.progress)

        def subset(idx: np.ndarray, augment, train: bool = True, soft=None) -> FigureDataset:
            return FigureDataset(images[idx], labels[idx], masks=None if masks is None else masks[idx],
                                 domains=domains[idx], transform=build_transform(cfg.model, augment, train=train),
                                 soft=soft)

        self.train_set = subset(train_idx, cfg.augment, soft=soft)
        self.val_set = subset(val_idx, cfg.augment, train=False)  # eval, with the stain normalisation
        self.train_labels, self.train_domains = labels[train_idx], domains[train_idx]
        self.val_labels = labels[val_idx]
        self.domain_names = domain_names
        self.summary = {
            "train": {"n": int(train_idx.size), "atypical": int(labels[train_idx].sum()),
                      "groups": len({everything[i].group for i in train_idx})},
            "val": {"n": int(val_idx.size), "atypical": int(labels[val_idx].sum()),
                    "groups": len({everything[i].group for i in val_idx}),
                    "source": self.val_spec or f"group_holdout({cfg.train.val_fraction})"},
            "domains": {name: int((domains[train_idx] == k).sum()) for k, name in enumerate(domain_names)},
        }
        if labels[train_idx].min() == labels[train_idx].max():
            raise MitotypeError(f"{self.data_spec}: the training part has only one class")

    def class_weights(self) -> torch.Tensor | None:
        """Balanced class weights for the loss (None with balanced sampling or ``class_weights: none``)."""
        t = self.cfg.train
        if t.balanced_sampling or t.class_weights == "none":
            return None
        return torch.tensor(inverse_frequency(self.train_labels, 2), dtype=torch.float32)

    def domain_weights(self) -> torch.Tensor:
        """Inverse-frequency weight per domain index, mean 1 over the training samples."""
        return torch.tensor(inverse_frequency(self.train_domains, len(self.domain_names)), dtype=torch.float32)

    def _loader(self, dataset, shuffle: bool, sampler=None, drop_last: bool = False) -> DataLoader:
        workers = self.cfg.train.num_workers
        return DataLoader(dataset, batch_size=self.cfg.train.batch_size, shuffle=shuffle and sampler is None,
                          sampler=sampler, num_workers=workers, persistent_workers=workers > 0,
                          drop_last=drop_last, pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        sampler = None
        if self.cfg.train.balanced_sampling:
            per_sample = inverse_frequency(self.train_labels, 2)[self.train_labels]
            # The global generator, whose state the checkpoints keep (train.callbacks.RngState).
            sampler = WeightedRandomSampler(per_sample, num_samples=len(per_sample), replacement=True)
        elif self.trainer is not None and self.trainer.world_size > 1:
            # DDP: Lightning's own DistributedSampler pads the data to a multiple of the processes with
            # repeats; this one drops that remainder instead, so that every figure is seen at most once per
            # epoch, as in one process. Same seed on every rank: the ranks' shares are disjoint.
            from torch.utils.data import DistributedSampler

            sampler = DistributedSampler(self.train_set, num_replicas=self.trainer.world_size,
                                         rank=self.trainer.global_rank, shuffle=True, seed=self.cfg.train.seed,
                                         drop_last=True)
        # A last batch of one patch breaks batch norm; drop the ragged tail when there is more than one batch.
        per_process = len(sampler) if sampler is not None else len(self.train_set)
        drop_last = per_process > self.cfg.train.batch_size
        return self._loader(self.train_set, shuffle=True, sampler=sampler, drop_last=drop_last)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)
