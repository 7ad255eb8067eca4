"""Augmentation: image and mask move together; colour transforms leave zero-padding black; speed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from mitotype.config import AugmentConfig, ModelConfig
from mitotype.data import transforms as T
from mitotype.data.images import read_rgb
from mitotype.errors import MitotypeError

MARKER = (0, 255, 0)  # pure green never occurs in H&E


def _marked(size: int = 128):
    """Grey-pink image with a green L-shaped marker off-centre; the mask is 1 exactly on the marker."""
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal((200, 150, 190), 8, (size, size, 3)), 1, 255).astype(np.uint8)
    mask = np.zeros((size, size), np.uint8)
    mask[20:44, 70:80] = 1  # the L: a vertical bar ...
    mask[34:44, 80:96] = 1  # ... and a foot, so a wrong flip or rotation cannot match by symmetry
    image[mask == 1] = MARKER
    return image, mask


def _marker_in(image: torch.Tensor) -> torch.Tensor:
    """Marker pixels of a transformed image (uint8 or normalised float) by their colour."""
    img = image.float()
    if img.max() <= 20:  # normalised: undo
        mean = torch.tensor(ModelConfig().mean)[:, None, None]
        std = torch.tensor(ModelConfig().std)[:, None, None]
        img = (img * std + mean) * 255
    return (img[1] > 180) & (img[0] < 100) & (img[2] < 100)


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum())


GEOMETRIC = {
    "hflip": v2.RandomHorizontalFlip(p=1.0),
    "vflip": v2.RandomVerticalFlip(p=1.0),
    "rot90": T.RandomRot90(),
    "affine": v2.RandomAffine(degrees=(20, 20), translate=(0.05, 0.05), scale=(1.1, 1.1),
                              interpolation=v2.InterpolationMode.BILINEAR,
                              fill={tv_tensors.Image: 0, tv_tensors.Mask: 255}),
    "resize": v2.Resize((96, 96), antialias=True),
}


@pytest.mark.parametrize("name", list(GEOMETRIC))
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_mask_stays_aligned_under_each_geometric_transform(name, seed):
    image, mask = _marked()
    torch.manual_seed(seed)
    out = GEOMETRIC[name](T.to_sample(image, mask))
    marker, figure = _marker_in(out["image"]), out["mask"][0] == 1
    assert figure.any()
    assert _iou(marker, figure) > 0.75, name
    if name not in ("affine", "resize"):  # exact pixel permutations
        assert torch.equal(marker, figure)


@pytest.mark.parametrize("seed", range(6))
def test_mask_stays_aligned_through_the_whole_training_pipeline(seed):
    image, mask = _marked()
    cfg = AugmentConfig(stain_sigma=0, stain_bias=0, brightness=0, contrast=0, saturation=0, hue=0,
                        blur_prob=0, affine_degrees=30)
    torch.manual_seed(seed)
    out = T.build_transform(ModelConfig(input_size=112), cfg)(T.to_sample(image, mask))
    assert out["image"].shape == (3, 112, 112) and out["image"].dtype == torch.float32
    assert out["mask"].shape == (1, 112, 112) and out["mask"].dtype == torch.uint8
    assert _iou(_marker_in(out["image"]), out["mask"][0] == 1) > 0.7


def test_rot90_visits_all_four_rotations():
    image, mask = _marked()
    seen = set()
    for seed in range(30):
        torch.manual_seed(seed)
        out = T.RandomRot90()(T.to_sample(image, mask))
        seen.add(out["mask"].numpy().tobytes())
    assert len(seen) == 4


def test_affine_fills_image_black_and_mask_with_ignore():
    image, mask = _marked()
    out = GEOMETRIC["affine"](T.to_sample(image, mask))
    # the corners come from outside the crop
    assert out["mask"][0, 0, 0] == 255 and out["mask"][0, -1, -1] == 255
    assert (out["image"][:, 0, 0] == 0).all()
    assert set(out["mask"].unique().tolist()) <= {0, 1, 255}  # nearest-neighbour: no blended values


def test_colour_transforms_keep_zero_padding_black(amibr_root):
    image = read_rgb(next((amibr_root / "patches" / "normal").glob("MIDOG21_*.png")))
    image = image.copy()
    image[:, :30] = 0  # zero-padding on the left
    colour = T.TissueOnly([T.HEDJitter(0.2, 0.2), T.ColourJitter(0.3, 0.3, 0.3, 0.1),
                           v2.GaussianBlur(3, sigma=1.0)])
    torch.manual_seed(0)
    out = colour(T.to_sample(image))["image"]
    assert (out[:, :, :30] == 0).all()
    assert (out[:, :, 31:] != torch.as_tensor(image).permute(2, 0, 1)[:, :, 31:]).float().mean() > 0.5


def test_padding_is_the_targets_definition_border_black_only(amibr_root):
    from mitotype.data.targets import padding_mask

    image = read_rgb(next((amibr_root / "patches" / "normal").glob("MIDOG21_*.png"))).copy()
    image[:, :30] = 0  # zero-padding on the left
    image[60:64, 60:64] = 0  # a black spot inside the tissue is not padding
    pad = T._padding(T.to_sample(image)["image"])
    assert pad[:, :30].all() and not pad[60:64, 60:64].any()
    assert (pad.numpy() == padding_mask(image)).all()


def test_colour_jitter_and_hed_jitter_are_identity_at_zero_strength(amibr_root):
    image = read_rgb(next((amibr_root / "patches" / "atypical").glob("*.png")))
    x = T.to_sample(image)["image"]
    for transform in (T.HEDJitter(0, 0), T.ColourJitter(0, 0, 0, 0)):
        diff = (transform(x).int() - x.int()).abs()
        assert diff.max() <= 1, type(transform).__name__


def test_hed_jitter_moves_the_haematoxylin_channel(amibr_root):
    from skimage.color import rgb2hed

    image = read_rgb(next((amibr_root / "patches" / "normal").glob("*.png")))
    jitter = T.HEDJitter(0.3, 0.0)
    darker = jitter.transform(T.to_sample(image)["image"],
                              {"scale": torch.tensor([1.3, 1.0, 1.0]), "shift": torch.zeros(3)})
    h_before = rgb2hed(image)[..., 0].mean()
    hed_after = rgb2hed(darker.permute(1, 2, 0).numpy())
    assert hed_after[..., 0].mean() > 1.15 * h_before
    eosin_before = rgb2hed(image)[..., 1].mean()
    assert abs(hed_after[..., 1].mean() - eosin_before) < 0.1 * abs(eosin_before) + 1e-3


def test_evaluation_transform_is_deterministic_and_resizes(amibr_root):
    image = read_rgb(next((amibr_root / "patches" / "normal").glob("*.png")))
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[50:80, 50:80] = 1
    transform = T.build_transform(ModelConfig(input_size=96), None)
    a = transform(T.to_sample(image, mask))
    b = transform(T.to_sample(image, mask))
    assert torch.equal(a["image"], b["image"]) and a["image"].shape == (3, 96, 96)
    assert abs(float(a["image"].mean())) < 2  # normalised
    assert set(a["mask"].unique().tolist()) == {0, 1}


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_stain_normalisation_ignores_padding(amibr_root, method):
    pytest.importorskip("torchstain")
    image = read_rgb(next((amibr_root / "patches" / "atypical").glob("TUPAC16_*.png"))).copy()
    image[-20:] = 0
    out = T.StainNormalise(method)(T.to_sample(image))["image"]
    assert out.dtype == torch.uint8 and out.shape == (3, 128, 128)
    assert (out[:, -20:] == 0).all()
    assert not torch.equal(out[:, :-20], torch.as_tensor(image).permute(2, 0, 1)[:, :-20])
    # training and evaluation both normalise when the config asks for it
    cfg = AugmentConfig(stain_normalise=method)
    assert isinstance(T.build_transform(ModelConfig(), cfg, train=False).transforms[0], T.StainNormalise)


def test_unknown_stain_normalisation_is_a_clear_error():
    with pytest.raises(MitotypeError, match="stain_normalise"):
        T.build_transform(ModelConfig(), AugmentConfig(stain_normalise="vahadane"))


def test_to_sample_rejects_non_rgb():
    with pytest.raises(MitotypeError, match="RGB uint8"):
        T.to_sample(np.zeros((128, 128), np.uint8))
