"""The torch Dataset that training and validation use: crops in memory, dense targets after augmentation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mitotype.errors import MitotypeError

IGNORE_INDEX = -100  # torch's cross-entropy default


class FigureDataset(Dataset):
    """Figures held in memory as (N, H, W, 3) uint8, with optional (N, H, W) uint8 masks (0/1/255).

    ``__getitem__`` returns ``image`` (3, S, S) float32, ``label`` int64, ``mask`` (1, S, S) float32 (0/1),
    ``valid`` (1, S, S) float32 (0 where the target is ignored), ``classes`` (S, S) int64 (0 background,
    1 normal figure, 2 atypical figure, -100 ignored), ``heatmap`` (1, S, S) float32, ``domain`` int64,
    ``index`` int64. The mask goes through the same transform as the image and every dense target is
    derived from the transformed mask, so they stay aligned. Without masks (single-task) the mask and
    heatmap are zero and ``valid`` is 0 everywhere (``classes`` all ignored).

    ``domains``: integer ids, or names (mapped to indices of the sorted names, kept in ``domain_names``).
    ``heatmap_sigma``: the Gaussian's sigma in pixels of the stored crops (scaled with the resize).
    ``soft``: optional (N,) teacher P(atypical) per figure (distillation), returned as ``soft`` float32.
    """

    def __init__(self, images: np.ndarray, labels: Sequence[int] | np.ndarray, masks: np.ndarray | None = None,
                 domains: Sequence | np.ndarray | None = None, transform: Callable | None = None,
                 heatmap_sigma: float = 4.0, soft: np.ndarray | None = None) -> None:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise MitotypeError(f"FigureDataset: images must be (N, H, W, 3) uint8, got {images.dtype} "
                                f"{images.shape}")
        n = len(images)
        labels = np.asarray([-1 if v is None else v for v in labels], dtype=np.int64)
        if len(labels) != n:
            raise MitotypeError(f"FigureDataset: {n} images but {len(labels)} labels")
        if masks is not None:
            masks = np.asarray(masks)
            if masks.shape != images.shape[:3] or masks.dtype != np.uint8:
                raise MitotypeError(f"FigureDataset: masks must be {images.shape[:3]} uint8, got {masks.dtype} "
                                    f"{masks.shape}")
        self.domain_names: list[str] | None = None
        if domains is None:
            domain_ids = np.zeros(n, dtype=np.int64)
        else:
            domains = np.asarray(domains)
            if len(domains) != n:
                raise MitotypeError(f"FigureDataset: {n} images but {len(domains)} domains")
            if np.issubdtype(domains.dtype, np.integer):
                domain_ids = domains.astype(np.int64)
            else:
                self.domain_names = sorted({str(d) for d in domains})
                lookup = {name: i for i, name in enumerate(self.domain_names)}
                domain_ids = np.array([lookup[str(d)] for d in domains], dtype=np.int64)
        if transform is None:
            from mitotype.config import ModelConfig
            from mitotype.data.transforms import build_transform

            transform = build_transform(ModelConfig(), None)
        self.images, self.labels, self.masks, self.domains = images, labels, masks, domain_ids
        self.transform, self.heatmap_sigma = transform, heatmap_sigma
        if soft is not None and len(soft) != n:
            raise MitotypeError(f"FigureDataset: {n} images but {len(soft)} teacher probabilities")
        self.soft = None if soft is None else np.asarray(soft, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from mitotype.data.targets import IGNORE, centre_heatmap
        from mitotype.data.transforms import to_sample

        label = int(self.labels[index])
        mask = None if self.masks is None else self.masks[index]
        sample = self.transform(to_sample(self.images[index], mask))
        image = sample["image"]
        size = image.shape[-2:]
        out = {
            "image": image.as_subclass(torch.Tensor),
            "label": torch.tensor(label, dtype=torch.int64),
            "domain": torch.tensor(self.domains[index], dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
        }
        if self.soft is not None:
            out["soft"] = torch.tensor(self.soft[index], dtype=torch.float32)
        if mask is None:
            out["mask"] = torch.zeros((1, *size), dtype=torch.float32)
            out["valid"] = torch.zeros((1, *size), dtype=torch.float32)
            out["classes"] = torch.full(tuple(size), IGNORE_INDEX, dtype=torch.int64)
            out["heatmap"] = torch.zeros((1, *size), dtype=torch.float32)
            return out
        m = sample["mask"].as_subclass(torch.Tensor)[0]
        figure = m == 1
        ignored = m == IGNORE
        classes = torch.zeros(tuple(size), dtype=torch.int64)
        classes[figure] = 1 + label if label >= 0 else IGNORE_INDEX  # unlabelled: figure pixels ignored
        classes[ignored] = IGNORE_INDEX
        sigma = self.heatmap_sigma * size[0] / self.images.shape[1]
        out["mask"] = figure.float()[None]
        out["valid"] = (~ignored).float()[None]
        out["classes"] = classes
        out["heatmap"] = torch.from_numpy(centre_heatmap(m.numpy(), sigma))[None]
        return out
