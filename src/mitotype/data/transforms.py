"""Augmentation and preprocessing: one torchvision v2 pipeline over a sample dict.

A sample is ``{"image": tv_tensors.Image uint8 (3, H, W), "mask": tv_tensors.Mask uint8 (1, H, W), ...}``
(mask values 0 background, 1 figure, 255 ignore; other keys pass through untouched). Geometric transforms
move image and mask together (the mask with nearest-neighbour); colour transforms touch the image only.

Order (training): [stain normalisation] -> stain jitter in haematoxylin-eosin space, brightness/contrast/
saturation/hue jitter, blur (all on uint8, black zero-padding restored to black afterwards so it never
turns into fake tissue) -> flips and 90-degree rotations -> small affine (rotation, scale, translation) ->
resize to ``input_size`` -> float32 + Normalize. Pixels that the affine map brings in from outside the
crop are black in the image (like zero-padding) and 255 (ignore) in the mask, so no loss is computed on
them. Evaluation: [stain normalisation] -> resize -> float32 + Normalize.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from mitotype.config import AugmentConfig, ModelConfig
from mitotype.data.targets import IGNORE, padding_mask  # the mask's codes, owned by the targets
from mitotype.errors import MitotypeError


def _padding(image: torch.Tensor) -> torch.Tensor:
    """(H, W) bool: the zero-padding of a (3, H, W) uint8 image, as ``targets.padding_mask`` defines it
    (black and connected to the border), so that augmentation and the loss's ignore mask agree."""
    return torch.from_numpy(padding_mask(image.permute(1, 2, 0).numpy()))


class RandomRot90(v2.Transform):
    """Rotate image and mask by k x 90 degrees, k uniform in 0..3 (exact: a pixel permutation)."""

    _transformed_types = (tv_tensors.Image, tv_tensors.Mask)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"k": int(torch.randint(4, ()).item())}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["k"] == 0:
            return inpt
        return tv_tensors.wrap(torch.rot90(inpt, params["k"], dims=(-2, -1)), like=inpt)


class TissueOnly(v2.Transform):
    """Apply colour transforms to the image, then put the black zero-padding back to black.

    Contrast, blur and stain shifts would otherwise turn padding into grey or coloured fake tissue.
    """

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, transforms: list[v2.Transform]) -> None:
        super().__init__()
        self.inner = v2.Compose(transforms)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        pad = _padding(inpt)
        out = self.inner(inpt)
        if pad.any():
            out = out.clone()
            out[:, pad] = 0
        return tv_tensors.wrap(out, like=inpt)


class HEDJitter(v2.Transform):
    """Stain augmentation (Tellez et al. 2018): per-channel scale and shift of the haematoxylin and eosin
    concentrations from colour deconvolution (optical density, natural log, Ruifrok-Johnston vectors as in
    ``skimage.color.hed_from_rgb``). The residual (DAB) channel is left alone.

    ``sigma``: scale ~ U(1 - sigma, 1 + sigma); ``bias``: shift ~ U(-bias, bias) in optical density.
    The whole map is one 3x3 matrix and an offset in optical-density space, so it costs little.
    """

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, sigma: float, bias: float) -> None:
        super().__init__()
        from skimage.color import hed_from_rgb, rgb_from_hed

        self.sigma, self.bias = float(sigma), float(bias)
        self.to_hed = torch.as_tensor(hed_from_rgb, dtype=torch.float32)
        self.from_hed = torch.as_tensor(rgb_from_hed, dtype=torch.float32)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        scale = torch.ones(3)
        shift = torch.zeros(3)
        scale[:2] = 1 + (torch.rand(2) * 2 - 1) * self.sigma
        shift[:2] = (torch.rand(2) * 2 - 1) * self.bias
        return {"scale": scale, "shift": shift}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        c, h, w = inpt.shape[-3:]
        od = -torch.log((inpt.reshape(3, -1).T.float() + 1) / 256)  # (HW, 3)
        matrix = self.to_hed @ torch.diag(params["scale"]) @ self.from_hed
        od = od @ matrix + params["shift"] @ self.from_hed
        rgb = (256 * torch.exp(-od) - 1).clamp_(0, 255).round_().to(torch.uint8)
        return tv_tensors.wrap(rgb.T.reshape(c, h, w), like=inpt)


class ColourJitter(v2.Transform):
    """Brightness, contrast, saturation and hue jitter as one affine colour map in float (fast).

    Same ranges as ``v2.ColorJitter`` (factors ~ U(1 - x, 1 + x), hue shift ~ U(-hue, hue) of a turn), but
    the hue shift is a rotation of the chroma plane in YIQ space instead of an HSV round trip (4x cheaper,
    equal for small shifts), the contrast pivot is the mean grey of the tissue pixels only (zero-padding
    would drag it down), and the order is fixed: brightness, contrast, saturation, hue.
    """

    _transformed_types = (tv_tensors.Image,)
    LUMA = torch.tensor([0.299, 0.587, 0.114])
    RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float) -> None:
        super().__init__()
        self.ranges = (float(brightness), float(contrast), float(saturation), float(hue))
        self.yiq_to_rgb = torch.linalg.inv(self.RGB_TO_YIQ)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        b, c, s, h = ((torch.rand(4) * 2 - 1) * torch.tensor(self.ranges)).tolist()
        # saturation (blend with grey) then hue (rotation of the chroma plane): one 3x3 matrix
        saturation = (1 + s) * torch.eye(3) - s * torch.outer(torch.ones(3), self.LUMA)
        cos, sin = math.cos(2 * math.pi * h), math.sin(2 * math.pi * h)
        rotation = torch.tensor([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]])
        matrix = self.yiq_to_rgb @ rotation @ self.RGB_TO_YIQ @ saturation
        return {"brightness": 1 + b, "contrast": 1 + c, "matrix": matrix}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        c, h, w = inpt.shape[-3:]
        rgb = inpt.reshape(3, -1).float() * params["brightness"]  # (3, HW), 0-255
        tissue = (~_padding(inpt)).reshape(-1).float()
        grey = self.LUMA @ rgb
        pivot = (grey @ tissue) / tissue.sum().clamp(min=1)
        k = params["contrast"]
        rgb = params["matrix"] @ (k * rgb + (1 - k) * pivot)  # the pivot is grey: commutes with the matrix
        out = rgb.clamp_(0, 255).round_().to(torch.uint8)
        return tv_tensors.wrap(out.reshape(c, h, w), like=inpt)


class StainNormalise(v2.Transform):
    """Stain normalisation with torchstain on tissue pixels only (zero-padding excluded, then restored).

    ``macenko``: to torchstain's reference stain matrix and maximal concentrations (Macenko et al. 2009).
    ``reinhard``: to fixed LAB means and standard deviations (``REINHARD_TARGET``, the median over AMi-Br
    crops, see docs/MASKS.md). Images where the method cannot estimate stains (too little tissue) pass
    unchanged.
    """

    _transformed_types = (tv_tensors.Image,)
    # median per-crop LAB mean / std over the tissue pixels of 600 random AMi-Br crops (seed 0), in
    # torchstain's LAB convention (OpenCV scaling: L in 0-255, a and b offset by 128)
    REINHARD_TARGET = ((147.5, 161.0, 113.4), (40.8, 8.6, 7.6))

    def __init__(self, method: str) -> None:
        super().__init__()
        try:
            import torchstain
        except ImportError:
            raise MitotypeError("augment.stain_normalise needs the package torchstain (pip install torchstain)"
                                ) from None
        if method == "macenko":
            self.normaliser = torchstain.normalizers.MacenkoNormalizer(backend="torch")
        elif method == "reinhard":
            self.normaliser = torchstain.normalizers.ReinhardNormalizer(backend="torch")
            means, stds = self.REINHARD_TARGET
            self.normaliser.target_means = torch.tensor(means)
            self.normaliser.target_stds = torch.tensor(stds)
        else:
            raise MitotypeError(f"augment.stain_normalise: unknown method {method!r}; use macenko or reinhard")
        self.method = method

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        tissue = ~_padding(inpt)
        pixels = inpt[:, tissue]  # (3, N): torchstain only reshapes, so a 1 x N "image" works
        if pixels.shape[1] < 64:
            return inpt
        try:
            if self.method == "macenko":
                out = self.normaliser.normalize(pixels[:, None, :], stains=False)[0]  # (1, N, 3)
                out = out.reshape(-1, 3).T
            else:
                out = self.normaliser.normalize(pixels[:, None, :].float())  # (3, 1, N) float 0-255
                out = out.reshape(3, -1)
        except (RuntimeError, ValueError, torch.linalg.LinAlgError):  # degenerate stain estimate
            return inpt
        result = inpt.clone()
        result[:, tissue] = out.float().clamp(0, 255).round().to(torch.uint8)
        return tv_tensors.wrap(result, like=inpt)


def stain_normalise_images(images: np.ndarray, method: str) -> np.ndarray:
    """uint8 (N, H, W, 3) stain-normalised image by image with :class:`StainNormalise`, the step the
    validation transform applies, so that prediction sees the pixels the model was validated on."""
    step = StainNormalise(method)
    out = np.empty_like(images)
    for i, image in enumerate(images):
        out[i] = step(to_sample(image)["image"]).permute(1, 2, 0).numpy()
    return out


def build_transform(model_cfg: ModelConfig, augment_cfg: AugmentConfig | None,
                    train: bool | None = None) -> v2.Compose:
    """The sample pipeline: training augmentation when ``augment_cfg`` is given, else evaluation.

    ``train=False`` with an ``augment_cfg``: evaluation, but with the stain normalisation that the
    training used (the model must see normalised images at inference too).
    """
    train = augment_cfg is not None if train is None else train
    steps: list[v2.Transform] = []
    if augment_cfg is not None and augment_cfg.stain_normalise:
        steps.append(StainNormalise(augment_cfg.stain_normalise))
    if train:
        a = augment_cfg
        colour: list[v2.Transform] = []
        if a.stain_sigma > 0 or a.stain_bias > 0:
            colour.append(HEDJitter(a.stain_sigma, a.stain_bias))
        if any(v > 0 for v in (a.brightness, a.contrast, a.saturation, a.hue)):
            colour.append(ColourJitter(a.brightness, a.contrast, a.saturation, a.hue))
        if a.blur_prob > 0:
            colour.append(v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 1.0))], p=a.blur_prob))
        if colour:
            steps.append(TissueOnly(colour))
        if a.flips:
            steps += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), RandomRot90()]
        if a.affine_degrees > 0 or a.affine_translate > 0 or tuple(a.affine_scale) != (1.0, 1.0):
            steps.append(v2.RandomAffine(
                degrees=a.affine_degrees,
                translate=(a.affine_translate, a.affine_translate) if a.affine_translate > 0 else None,
                scale=tuple(a.affine_scale),
                interpolation=v2.InterpolationMode.BILINEAR,
                fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE},
            ))
    size = model_cfg.input_size
    steps += [
        v2.Resize((size, size), antialias=True),
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(mean=list(model_cfg.mean), std=list(model_cfg.std)),
    ]
    return v2.Compose(steps)


def to_sample(image, mask=None, **extra: Any) -> dict[str, Any]:
    """A sample dict from an (H, W, 3) uint8 array and an optional (H, W) uint8 mask."""
    if isinstance(image, np.ndarray) and not image.flags.writeable:
        image = image.copy()  # torch cannot share read-only memory
    img = torch.as_tensor(image)
    if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != torch.uint8:
        raise MitotypeError(f"expected an RGB uint8 image (H, W, 3), got {img.dtype} {tuple(img.shape)}")
    sample: dict[str, Any] = {"image": tv_tensors.Image(img.permute(2, 0, 1))}
    if mask is not None:
        sample["mask"] = tv_tensors.Mask(torch.as_tensor(mask)[None])
    sample.update(extra)
    return sample


__all__ = ["ColourJitter", "HEDJitter", "RandomRot90", "StainNormalise", "TissueOnly", "build_transform",
           "stain_normalise_images", "to_sample"]
