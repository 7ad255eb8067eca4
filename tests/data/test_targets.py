"""Figure masks, padding, heatmaps, the mask cache and the ``mitotype masks`` command."""

from __future__ import annotations

import numpy as np
import pytest

from mitotype.data import targets
from mitotype.data.images import load_images
from mitotype.data.spec import load_figures
from mitotype.errors import MitotypeError


def _synthetic(radius: float = 10, centre=(64, 64), size: int = 128) -> np.ndarray:
    """Pink tissue with pale nuclei and one dark purple disk (the 'figure')."""
    rng = np.random.default_rng(0)
    image = np.empty((size, size, 3), np.uint8)
    image[:] = (235, 180, 215)
    image = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for cy, cx in ((20, 25), (100, 100), (25, 105)):  # pale interphase nuclei
        image[np.hypot(yy - cy, xx - cx) <= 9] = (170, 130, 200)
    image[np.hypot(yy - centre[0], xx - centre[1]) <= radius] = (60, 30, 110)
    return image


@pytest.fixture(scope="module")
def amibr_sample(amibr_root):
    """A seeded random sample of AMi-Br plus every padded crop among the first 600 figures."""
    figures = load_figures(f"amibr:{amibr_root}")
    rng = np.random.default_rng(1)
    idx = rng.choice(len(figures), 240, replace=False)
    figures = [figures[i] for i in np.sort(idx)]
    return figures, load_images(figures)


def test_padding_mask_is_border_connected_black():
    image = _synthetic()
    image[:20] = 0  # zero-padding along the top
    image[60:63, 60:63] = 0  # a black speck inside the tissue is not padding
    pad = targets.padding_mask(image)
    assert pad[:20].all()
    assert not pad[20:].any()


def test_figure_mask_finds_a_dark_disk_and_ignores_pale_nuclei():
    mask, fallback = targets.figure_mask(_synthetic(radius=10))
    truth = np.hypot(*(np.mgrid[:128, :128] - 64)) <= 10
    assert not fallback
    assert (mask & truth).sum() / (mask | truth).sum() > 0.8
    assert not mask[:45].any() and not mask[85:].any()  # no pale nucleus


def test_figure_mask_keeps_both_daughter_sets_when_the_centre_is_between_them():
    image = _synthetic(radius=0)
    yy, xx = np.mgrid[:128, :128]
    for cx in (44, 84):  # telophase: two dark pieces 20 px either side of the centre
        image[np.hypot(yy - 64, xx - cx) <= 7] = (60, 30, 110)
    mask, fallback = targets.figure_mask(image)
    assert not fallback
    assert mask[64, 44] and mask[64, 84] and not mask[64, 64]


def test_figure_mask_falls_back_to_a_disk_on_a_blank_crop():
    image = np.full((128, 128, 3), 230, np.uint8)
    mask, fallback = targets.figure_mask(image)
    assert fallback
    assert mask[64, 64] and mask.sum() == pytest.approx(np.pi * targets.MaskParams().fallback_radius**2, rel=0.1)


def test_figure_mask_rejects_non_rgb():
    with pytest.raises(MitotypeError, match="RGB uint8"):
        targets.figure_mask(np.zeros((128, 128), np.uint8))


def test_disk_masks_are_centred_disks_that_ignore_padding(amibr_sample):
    _, images = amibr_sample
    masks = targets.disk_masks(images, radius=12)
    assert masks.shape == images.shape[:3] and masks.dtype == np.uint8
    clean = [i for i, im in enumerate(images) if not targets.padding_mask(im).any()]
    padded = [i for i, im in enumerate(images) if targets.padding_mask(im).any()]
    assert clean and padded  # the sample holds both kinds
    area = int((masks[clean[0]] == 1).sum())
    assert abs(area - np.pi * 12**2) < 0.05 * np.pi * 12**2 and masks[clean[0], 64, 64] == 1
    assert masks[clean[0], 0, 0] == 0
    for i in padded:  # zero-padding is ignored (255), the rest of the disk stays
        assert ((masks[i] == targets.IGNORE) == targets.padding_mask(images[i])).all()
    with pytest.raises(MitotypeError, match="disk_masks: expected images"):
        targets.disk_masks(images[0])


def test_centre_heatmap_peaks_at_centre_of_mass_and_ignores_ignored_pixels():
    mask = np.zeros((64, 64), np.uint8)
    mask[10:20, 30:40] = 1
    mask[50:, :] = 255
    heat = targets.centre_heatmap(mask, sigma=3.0)
    assert heat.dtype == np.float32 and heat.shape == (64, 64)
    assert np.unravel_index(heat.argmax(), heat.shape) in {(14, 34), (14, 35), (15, 34), (15, 35)}
    # centre of mass (14.5, 34.5): a Gaussian of sigma 3 around it
    assert heat[14, 40] == pytest.approx(np.exp(-(0.5**2 + 5.5**2) / (2 * 3.0**2)), rel=1e-4)
    assert heat[30, 34] == pytest.approx(np.exp(-(15.5**2 + 0.5**2) / (2 * 3.0**2)), abs=1e-6)
    assert not targets.centre_heatmap(np.zeros((8, 8), np.uint8), 2.0).any()


def test_real_masks_come_from_the_image_and_cover_the_centre(amibr_sample):
    figures, images = amibr_sample
    masks, fallback = targets.load_masks(figures, images)
    stats = targets.mask_stats(masks)
    good = ~fallback & stats["centre_hit"]
    assert good.mean() >= 0.95, f"only {good.mean():.1%} from the image and covering the centre"
    areas = stats["area"][~fallback]
    assert 150 < np.median(areas) < 1500  # a figure, not a speck or the whole crop
    # padding is ignored and never figure; the mask is exactly 0/1/255
    pad = np.stack([targets.padding_mask(im) for im in images])
    assert pad.any()  # the sample holds some padded crops
    assert np.array_equal(masks == 255, pad)
    assert set(np.unique(masks)) <= {0, 1, 255}


def test_load_masks_cache_is_keyed_by_image_and_method(amibr_sample, monkeypatch):
    figures, images = amibr_sample
    figures, images = figures[:6], images[:6].copy()
    first, fb = targets.load_masks(figures, images)
    calls = []
    real = targets.compute_masks

    def counting(imgs, params=None, **kw):
        calls.append(len(imgs))
        return real(imgs, params, **kw)

    monkeypatch.setattr(targets, "compute_masks", counting)
    again, fb2 = targets.load_masks(figures, images)
    assert calls == [] and np.array_equal(first, again) and np.array_equal(fb, fb2)
    images[2, :8] = 0  # a changed image: only that one is recomputed
    changed, _ = targets.load_masks(figures, images)
    assert calls == [1]
    assert (changed[2, :8] == 255).all()
    targets.load_masks(figures, images, params=targets.MaskParams(sigma=1.5))  # a changed method: all
    assert calls == [1, 6]


def test_load_masks_checks_its_input():
    with pytest.raises(MitotypeError, match="2 figures but 1 images"):
        targets.load_masks([None, None], np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(MitotypeError, match="uint8"):
        targets.load_masks([None], np.zeros((1, 8, 8, 3), np.float32))
