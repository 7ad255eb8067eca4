"""FigureDataset: the exact sample contract, dense targets consistent with the (augmented) mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mitotype.config import AugmentConfig, ModelConfig
from mitotype.data import targets
from mitotype.data.dataset import FigureDataset
from mitotype.data.images import load_images
from mitotype.data.spec import load_figures
from mitotype.data.transforms import build_transform
from mitotype.errors import MitotypeError

KEYS = {"image", "label", "mask", "valid", "classes", "heatmap", "domain", "index"}


@pytest.fixture(scope="module")
def real(amibr_root):
    """Twelve AMi-Br figures of both classes, with one zero-padded crop among them, and their masks."""
    figures = load_figures(f"amibr:{amibr_root}")
    images = load_images(figures[:400])
    padded = [i for i in range(400) if targets.padding_mask(images[i]).any()]
    labels = np.array([f.label for f in figures[:400]])
    pick = list(np.flatnonzero(labels == 1)[:5]) + list(np.flatnonzero(labels == 0)[:6]) + padded[:1]
    assert padded, "expected a zero-padded crop among the first 400 AMi-Br figures"
    figures = [figures[i] for i in pick]
    images = images[pick]
    masks, _ = targets.load_masks(figures, images)
    return figures, images, masks


def _dataset(real, **kw):
    figures, images, masks = real
    return FigureDataset(images, [f.label for f in figures], masks=masks, domains=[f.domain for f in figures], **kw)


def test_sample_contract(real):
    ds = _dataset(real)
    s = ds[3]
    assert set(s) == KEYS
    shapes = {k: (tuple(v.shape), v.dtype) for k, v in s.items()}
    assert shapes == {
        "image": ((3, 128, 128), torch.float32), "label": ((), torch.int64), "mask": ((1, 128, 128), torch.float32),
        "valid": ((1, 128, 128), torch.float32), "classes": ((128, 128), torch.int64),
        "heatmap": ((1, 128, 128), torch.float32), "domain": ((), torch.int64), "index": ((), torch.int64),
    }
    assert type(s["image"]) is torch.Tensor  # plain tensors, not tv_tensors, reach the model
    assert int(s["index"]) == 3
    assert ds.domain_names == sorted({f.domain for f in real[0]})


@pytest.mark.parametrize("augment", [False, True])
def test_dense_targets_agree_with_each_other(real, augment):
    figures, images, masks = real
    transform = build_transform(ModelConfig(), AugmentConfig() if augment else None)
    ds = _dataset(real, transform=transform)
    torch.manual_seed(0)
    for i in range(len(ds)):
        s = ds[i]
        label = figures[i].label
        figure = s["mask"][0] == 1
        ignored = s["valid"][0] == 0
        assert set(s["classes"].unique().tolist()) <= {-100, 0, 1 + label}
        assert torch.equal(s["classes"] == 1 + label, figure)
        assert torch.equal(s["classes"] == -100, ignored)
        assert not (figure & ignored).any()
        assert figure.any()
        # the heatmap peaks at the figure's centre of mass
        ys, xs = torch.nonzero(figure, as_tuple=True)
        peak = torch.nonzero(s["heatmap"][0] == s["heatmap"].max())[0]
        assert abs(peak[0] - ys.float().mean()) <= 1 and abs(peak[1] - xs.float().mean()) <= 1


def test_zero_padding_is_ignored(real):
    figures, images, masks = real
    ds = _dataset(real)
    s = ds[len(ds) - 1]  # the padded crop
    pad = torch.from_numpy(targets.padding_mask(images[-1]))
    assert pad.any()
    assert torch.equal(s["valid"][0] == 0, pad)


def test_without_masks_the_dense_targets_are_switched_off(real):
    figures, images, _ = real
    ds = FigureDataset(images, [f.label for f in figures])
    s = ds[0]
    assert set(s) == KEYS
    assert not s["mask"].any() and not s["valid"].any() and not s["heatmap"].any()
    assert (s["classes"] == -100).all()
    assert int(s["domain"]) == 0


def test_resized_input_and_batching(real):
    figures, images, masks = real
    ds = _dataset(real, transform=build_transform(ModelConfig(input_size=64), AugmentConfig()))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 64, 64)
    assert batch["classes"].shape == (4, 64, 64) and batch["heatmap"].shape == (4, 1, 64, 64)
    assert batch["label"].tolist() == [f.label for f in figures[:4]]


def test_bad_input_is_a_clear_error(real):
    figures, images, masks = real
    with pytest.raises(MitotypeError, match="labels"):
        FigureDataset(images, [0])
    with pytest.raises(MitotypeError, match="masks"):
        FigureDataset(images, [0] * len(images), masks=masks[:, :10])
    with pytest.raises(MitotypeError, match="uint8"):
        FigureDataset(images.astype(np.float32), [0] * len(images))
    with pytest.raises(MitotypeError, match="domains"):
        FigureDataset(images, [0] * len(images), domains=["a"])
