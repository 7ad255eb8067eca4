"""Shared inference: P(atypical) for uint8 crops, averaged over models and test-time augmentation views.

Per model the crops are centre-cropped to its ``crop_size`` (zero-padded when smaller, like the black
padding of border figures in the training data), resized to its ``input_size``, normalised with its
mean/std, and fed channels-last. TTA = the 8 flips/90-degree rotations (the dihedral group), from
torchvision's functionals. The classification path only: decoders never run here (except the mask for
``mask_pooling`` models, inside the model).

Backends: ``"torch"``; ``"onnx"`` is provided by ``mitotype.predict.onnx.make_runner(loaded, device)``,
which must return a callable mapping a float32 (N, 3, S, S) tensor to (N, 2) logits.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from mitotype.errors import MitotypeError
from mitotype.models.modelfile import LoadedModel

Runner = Callable[[torch.Tensor], torch.Tensor]


def dihedral_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips/rotations by multiples of 90 degrees of a square (N, C, S, S) batch, identity first."""
    views = []
    for flipped in (x, TF.horizontal_flip(x)):
        views += [flipped if k == 0 else TF.rotate(flipped, 90 * k) for k in range(4)]
    return views


def preprocess(images: np.ndarray, crop_size: int, input_size: int, mean, std) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float32 (N, 3, input_size, input_size), channels-last.

    The crop uses the data layer's ``fit_size`` (centre crop, zero padding), as training does.
    """
    if images.shape[1:3] != (crop_size, crop_size):
        from mitotype.data.images import fit_size

        images = np.stack([fit_size(im, crop_size, "center-crop") for im in images])
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if crop_size != input_size:
        x = TF.resize(x, [input_size, input_size], antialias=True)
    x = TF.to_dtype(x, torch.float32, scale=True)
    x = TF.normalize(x, list(mean), list(std))
    return x.contiguous(memory_format=torch.channels_last)


def torch_runner(loaded: LoadedModel, device: str, bf16: bool = False) -> Runner:
    model = loaded.model.to(device).eval()
    model = model.to(memory_format=torch.channels_last)

    def run(x: torch.Tensor) -> torch.Tensor:
        autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if bf16 \
            else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            return model(x.to(device), dense=False).logits.float()

    return run


def make_runner(loaded: LoadedModel, backend: str, device: str, bf16: bool = False) -> Runner:
    if backend == "torch":
        return torch_runner(loaded, device, bf16)
    if backend == "onnx":
        try:
            onnx_mod = importlib.import_module("mitotype.predict.onnx")
        except ModuleNotFoundError as exc:
            if exc.name != "mitotype.predict.onnx":
                raise
            raise MitotypeError("backend 'onnx' is not available in this installation") from None
        return onnx_mod.make_runner(loaded, device)
    raise MitotypeError(f"backend {backend!r} is not one of ['torch', 'onnx']")


def predict_proba(models: Sequence[LoadedModel] | LoadedModel, images: np.ndarray, batch_size: int = 64,
                  tta: bool = False, device: str = "cpu", progress: bool = False, backend: str = "torch",
                  bf16: bool = False) -> np.ndarray:
    """(N,) mean P(atypical) over ``models`` and (with ``tta``) the 8 dihedral views.

    ``images``: uint8 (N, H, W, 3). ``bf16``: bfloat16 autocast (see docs/MODELS.md for its measured
    speed and agreement with float32).
    """
    if isinstance(models, LoadedModel):
        models = [models]
    if not models:
        raise MitotypeError("predict_proba: no model given")
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise MitotypeError(f"predict_proba: expected uint8 images (N, H, W, 3), got {images.dtype} "
                            f"{tuple(images.shape)}")
    n = len(images)
    total = np.zeros(n, dtype=np.float64)
    if n == 0:
        return total.astype(np.float32)
    from tqdm.auto import tqdm

    steps = len(models) * ((n + batch_size - 1) // batch_size)
    bar = tqdm(total=steps, desc="predict", unit="batch", disable=not progress)
    for loaded in models:
        meta = loaded.meta
        cfg = loaded.config.model
        crop, size = meta.get("crop_size", cfg.crop_size), meta.get("input_size", cfg.input_size)
        mean, std = meta.get("mean", cfg.mean), meta.get("std", cfg.std)
        run = make_runner(loaded, backend, device, bf16)
        for start in range(0, n, batch_size):
            batch = images[start:start + batch_size]
            x = preprocess(batch, crop, size, mean, std)
            views = dihedral_views(x) if tta else [x]
            probs = sum(torch.softmax(run(v.contiguous(memory_format=torch.channels_last)), 1)[:, 1]
                        for v in views) / len(views)
            total[start:start + len(batch)] += probs.cpu().double().numpy()
            bar.update(1)
    bar.close()
    return (total / len(models)).astype(np.float32)
