"""Shared inference: P(atypical) for uint8 crops, averaged over models and test-time augmentation views.

Per model the crops are centre-cropped to its ``crop_size`` (zero-padded when smaller, like the black
padding of border figures in the training data), resized to its ``input_size``, normalised with its
mean/std. TTA = the 8 flips/90-degree rotations (the dihedral group). The classification path only:
decoders never run here (except the mask for ``mask_pooling`` models, inside the model).

Backends (``backend=``), all given float32 NCHW batches and returning (N, 2) logits:

- ``"onnx"``: onnxruntime on the model's ONNX graph, exported once per model file and cached
  (``mitotype.models.onnx``); the fastest on CPU (docs/PERFORMANCE.md);
- ``"torch"``: eager PyTorch, channels-last, batch norm folded into the convolutions;
- ``"torch-eager"``: eager PyTorch without folding (the reference the others are tested against);
- ``"auto"``: ``onnx`` on CPU (``torch`` if the export fails, with a warning), ``torch`` on other devices.

Preprocessing is numpy (bit-identical to torchvision's ``to_dtype`` + ``normalize``, tested) except for a
resize, so the onnxruntime path never imports torch: importing it costs about a second per process.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from mitotype.errors import MitotypeError

Runner = Callable[[np.ndarray], np.ndarray]  # float32 (N, 3, S, S) -> float32 (N, 2) logits
BACKENDS = ("auto", "onnx", "torch", "torch-eager")


# --- device and threshold: the one choice of every command that predicts ---------------------------------

def _no_gpu_device_node() -> bool:
    """Linux without NVIDIA or AMD device nodes: torch cannot see a GPU, so ``auto`` needs no torch import."""
    import glob
    import os
    import sys

    return sys.platform.startswith("linux") and not glob.glob("/dev/nvidia[0-9]*") and not os.path.exists("/dev/kfd")


def resolve_device(device: str = "auto") -> str:
    """The one device choice of predict, evaluate, challenge and explain: ``auto`` -> ``cuda`` when a GPU is
    visible, else ``cpu``; Lightning's ``gpu`` means ``cuda``; a CUDA device without a GPU or a word that is
    not a torch device -> MitotypeError."""
    device = {"gpu": "cuda"}.get(device, device)
    if device == "cpu" or (device == "auto" and _no_gpu_device_node()):
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except (RuntimeError, ValueError):
        raise MitotypeError(f"--device {device!r}: not a torch device (cpu, cuda, cuda:1, mps, auto)") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MitotypeError(f"device {device!r} requested but no CUDA GPU is visible (use --device cpu)")
    return device


def ensemble_threshold(models: Sequence[Any], threshold: float | None = None) -> float:
    """``threshold`` if given, else the mean of the models' stored thresholds."""
    if threshold is not None:
        if not 0.0 <= threshold <= 1.0:
            raise MitotypeError(f"--threshold must be in [0, 1], got {threshold}")
        return float(threshold)
    return float(np.mean([float(m.threshold) for m in models]))



# --- preprocessing ----------------------------------------------------------------------------------------

def fit_batch(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, 3) -> (N, size, size, 3): the data layer's ``fit_size`` centre crop / zero padding, for a
    whole batch in one slicing (all crops of a batch share their size)."""
    n, h, w, c = images.shape
    if (h, w) == (size, size):
        return images
    out = np.zeros((n, size, size, c), dtype=images.dtype)
    ch, cw = min(h, size), min(w, size)
    sy, sx = (h - ch) // 2, (w - cw) // 2
    dy, dx = (size - ch) // 2, (size - cw) // 2
    out[:, dy:dy + ch, dx:dx + cw] = images[:, sy:sy + ch, sx:sx + cw]
    return out


def normalise(images: np.ndarray, crop_size: int, input_size: int, mean, std) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float32 (N, 3, input_size, input_size) C-contiguous, ``(v / 255 - mean) / std``.

    The same float32 operations as ``torchvision`` (``mul(1/255)``, ``sub(mean)``, ``div(std)``), so the
    pixels are bit-identical to :func:`preprocess`; a resize goes through torchvision (its antialiased
    uint8 kernel rounds to uint8 in between, which numpy would not reproduce).
    """
    images = fit_batch(np.asarray(images), crop_size)
    if crop_size != input_size:
        return preprocess(images, crop_size, input_size, mean, std).contiguous().numpy()
    planes = np.ascontiguousarray(images.transpose(0, 3, 1, 2))  # uint8 NCHW: a cheap copy, 1/4 of the output
    out = np.multiply(planes, np.float32(1.0 / 255), dtype=np.float32)
    out -= np.asarray(mean, dtype=np.float32)[None, :, None, None]
    out /= np.asarray(std, dtype=np.float32)[None, :, None, None]
    return out


def preprocess(images, crop_size: int, input_size: int, mean, std):
    """uint8 (N, H, W, 3) -> normalised float32 torch tensor (N, 3, input_size, input_size), channels-last.

    The torch form of :func:`normalise` (for callers that feed a torch model themselves).
    """
    import torch
    from torchvision.transforms.v2 import functional as TF

    images = fit_batch(np.asarray(images), crop_size)
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if crop_size != input_size:
        x = TF.resize(x, [input_size, input_size], antialias=True)
    x = TF.to_dtype(x, torch.float32, scale=True)
    x = TF.normalize(x, list(mean), list(std))
    return x.contiguous(memory_format=torch.channels_last)


def dihedral_views(x):
    """The 8 flips/rotations by multiples of 90 degrees of a square (N, C, S, S) tensor, identity first."""
    from torchvision.transforms.v2 import functional as TF

    views = []
    for flipped in (x, TF.horizontal_flip(x)):
        views += [flipped if k == 0 else TF.rotate(flipped, 90 * k) for k in range(4)]
    return views


def dihedral_views_np(x: np.ndarray) -> list[np.ndarray]:
    """:func:`dihedral_views` for a numpy (N, C, S, S) batch, in the same order with the same pixels."""
    views = []
    for flipped in (x, x[..., ::-1]):
        views += [np.ascontiguousarray(np.rot90(flipped, k, axes=(2, 3))) for k in range(4)]
    return views


# --- backends ---------------------------------------------------------------------------------------------

def fold_batchnorm(model):
    """A copy of ``model`` (eval) with every ``Conv2d`` followed by a ``BatchNorm2d`` inside a Sequential
    folded into one convolution (exact up to float rounding; eager PyTorch runs BN as a separate pass over
    memory, which cost 21 % of a predict profile)."""
    import copy

    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            children = list(module._modules.items())
            for (name_a, a), (name_b, b) in itertools.pairwise(children):
                if type(a) is nn.Conv2d and type(b) is nn.BatchNorm2d:
                    module._modules[name_a] = fuse_conv_bn_eval(a, b)
                    module._modules[name_b] = nn.Identity()
    return model


def torch_runner(loaded: Any, device: str, bf16: bool = False, fold: bool = True,
                 threads: int | None = None, channels_last: bool = True, features: bool = False) -> Runner:
    """Eager PyTorch on ``loaded.model`` (moved in place; folding makes a copy): channels-last unless
    ``channels_last=False`` (NCHW, which ``mitotype bench`` compares), bf16 autocast with ``bf16``.
    ``features``: the runner returns (logits, pooled features or None) -- None for a network without
    ``classify`` (an ensemble), whose members each have their own features."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = loaded.model.to(device).eval()
    if fold:
        model = fold_batchnorm(model)
    model = model.to(memory_format=layout)
    pooled = features and hasattr(model, "classify")

    def run(x: np.ndarray) -> Any:
        autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if bf16 \
            else contextlib.nullcontext()
        batch = torch.from_numpy(x).to(device).contiguous(memory_format=layout)
        with torch.inference_mode(), autocast:
            if pooled:
                logits, feats = model.classify(batch)
                return logits.float().cpu().numpy(), feats.float().cpu().numpy()
            logits = model(batch, dense=False).logits.float().cpu().numpy()
            return (logits, None) if features else logits

    return run


def _torch_model(loaded: Any, device: str) -> Any:
    """A model opened for onnxruntime alone (no network built) gets its torch network on demand."""
    if getattr(loaded, "model", None) is not None:
        return loaded
    from mitotype.models.modelfile import load_model

    return load_model(loaded.path, device=device)


def resolve_backend(backend: str, device: str, bf16: bool = False) -> str:
    """``auto`` -> ``onnx`` on CPU, ``torch`` elsewhere (and for bf16, which only torch runs)."""
    if backend not in BACKENDS:
        raise MitotypeError(f"backend {backend!r} is not one of {list(BACKENDS)}")
    if backend == "auto":
        return "onnx" if str(device).startswith("cpu") and not bf16 else "torch"
    return backend


def make_runner(loaded: Any, backend: str, device: str, bf16: bool = False, threads: int | None = None) -> Runner:
    return open_runner(loaded, backend, device, bf16, threads)[1]


def open_runner(loaded: Any, backend: str, device: str, bf16: bool = False,
                threads: int | None = None, features: bool = False) -> tuple[str, Runner]:
    """(the backend actually used, its runner) for one model; ``features``: the runner returns
    (logits, pooled features or None)."""
    from mitotype.models import onnx

    chosen = resolve_backend(backend, device, bf16)
    if backend == "auto" and (not getattr(loaded, "path", "") or onnx.EXPORT_FAILED in loaded.meta):
        chosen = "torch"  # a network built in memory has no file to key a graph by; or its export failed
    if chosen == "onnx":
        try:
            return chosen, onnx.make_runner(loaded, device, threads=threads, features=features)
        except MitotypeError as exc:
            if backend != "auto":
                raise
            warnings.warn(f"onnxruntime unavailable for this model ({exc}); running eager PyTorch instead",
                          stacklevel=2)
            chosen = "torch"
    return chosen, torch_runner(_torch_model(loaded, device), device, bf16, fold=chosen == "torch",
                                threads=threads, features=features)


def available_cores() -> int:
    """The cores this process may run on (its affinity mask: a Slurm or container limit), else all."""
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def split_threads(backend: str, device: str, threads: int | None) -> tuple[int | None, int]:
    """(intra-op threads inside one network call, batches run at once) for ``threads`` CPU threads in all
    (None: OMP_NUM_THREADS, else the available cores). onnxruntime on CPU runs one single-threaded batch per
    thread: the network's many small layers make a thread pool wait for all its threads at every layer, and
    whole batches side by side do not (2 cores: 702-736 vs 651 patches/s, docs/PERFORMANCE.md). Eager torch
    and GPUs keep one call at a time with ``threads`` inside it."""
    if resolve_backend(backend, device) == "onnx" and str(device).startswith("cpu"):
        return 1, max(1, threads or default_threads() or available_cores())
    return threads, 1


def default_threads() -> int:
    """The thread count a backend gets when the user sets none: ``OMP_NUM_THREADS`` if set (torch reads it
    too), else 0 = the backend's own choice (all physical cores)."""
    with contextlib.suppress(ValueError):
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "0")))
    return 0


# --- prediction -------------------------------------------------------------------------------------------

def _check_images(images: Any) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise MitotypeError(f"predict_proba: expected uint8 images (N, H, W, 3), got {images.dtype} "
                            f"{tuple(images.shape)}")
    return images


def _softmax_atypical(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e[:, 1] / e.sum(axis=1)


class Prediction(NamedTuple):
    probs: np.ndarray  # (N,) float32 mean P(atypical)
    features: list[np.ndarray | None]  # per model: (N, C) pooled features of the identity view, or None


class Predictor:
    """Models opened once for one backend; call it on any number of chunks of a stream of crops.

    ``predictor(images uint8 (N, H, W, 3), batch_size) -> (N,) float32`` mean P(atypical) over the models
    and (with ``tta``, or for a model file that asks for it) the 8 dihedral views. With ``features=True``,
    ``predictor.run(...)`` also returns each model's pooled encoder features (of the untransformed view:
    the shift reference was fitted on those), from the same forward pass.
    """

    def __init__(self, models: Sequence[Any] | Any, backend: str = "torch", device: str = "cpu",
                 tta: bool = False, bf16: bool = False, threads: int | None = None, features: bool = False):
        models = list(models) if isinstance(models, (list, tuple)) else [models]
        if not models:
            raise MitotypeError("predict_proba: no model given")
        resolve_backend(backend, device, bf16)  # a bad name fails before any model is opened
        intra, self.workers = split_threads(backend, device, threads) if not bf16 else (threads, 1)
        opened = [open_runner(m, backend, device, bf16, intra, features) for m in models]
        self.members = [(preprocessing_of(m), run, tta or bool((m.meta or {}).get("tta")))
                        for m, (_, run) in zip(models, opened)]
        self.features = features
        self.tta = any(t for _, _, t in self.members)
        self.backend = "+".join(dict.fromkeys(name for name, _ in opened))  # e.g. "onnx", or "onnx+torch"

    def __call__(self, images: np.ndarray, batch_size: int = 64, on_batch: Callable[[], Any] | None = None
                 ) -> np.ndarray:
        return self.run(images, batch_size, on_batch).probs

    def run(self, images: np.ndarray, batch_size: int = 64, on_batch: Callable[[], Any] | None = None
            ) -> Prediction:
        images = _check_images(images)
        batch_size = self.batch_for(len(images), batch_size)
        starts = range(0, len(images), batch_size)
        total = np.zeros(len(images), dtype=np.float64)
        feats: list[np.ndarray | None] = []
        with contextlib.ExitStack() as stack:
            if self.workers > 1 and len(starts) > 1:
                from concurrent.futures import ThreadPoolExecutor

                pool_map = stack.enter_context(ThreadPoolExecutor(self.workers)).map  # results in input order
            else:
                pool_map = map
            for preprocessing, run, tta in self.members:
                def one(start: int, preprocessing=preprocessing, run=run, tta=tta) -> tuple[np.ndarray, Any]:
                    x = model_inputs(images[start:start + batch_size], preprocessing)
                    views = dihedral_views_np(x) if tta else [x]
                    outs = [run(v) for v in views]
                    part = None
                    if self.features:
                        part, outs = outs[0][1], [o[0] for o in outs]
                    return sum(_softmax_atypical(o) for o in outs) / len(views), part

                parts: list[np.ndarray | None] = []
                for start, (probs, part) in zip(starts, pool_map(one, starts)):
                    total[start:start + len(probs)] += probs
                    parts.append(part)
                    if on_batch is not None:
                        on_batch()
                usable = self.features and bool(parts) and all(p is not None for p in parts)
                feats.append(np.concatenate(parts).astype(np.float32) if usable else None)
        return Prediction((total / len(self.members)).astype(np.float32), feats)

    def batch_for(self, n: int, batch_size: int) -> int:
        """``batch_size``, smaller when ``n`` crops would not give every worker a batch (a 16-crop challenge
        stack on 2 workers: two batches of 8, not one of 16 on one core)."""
        if batch_size < 1:
            raise MitotypeError(f"batch size must be at least 1, got {batch_size}")
        if self.workers > 1 and 0 < n < self.workers * batch_size:
            return max(1, math.ceil(n / self.workers))
        return batch_size

    def steps(self, n: int, batch_size: int) -> int:
        batch_size = self.batch_for(n, batch_size)
        return len(self.members) * ((n + batch_size - 1) // batch_size)


def preprocessing_of(loaded: Any) -> tuple[int, int, Any, Any, str | None]:
    """(crop_size, input_size, mean, std, stain normalisation) as the model file stores them (the config
    as fallback)."""
    meta, cfg = loaded.meta, loaded.config.model
    return (meta.get("crop_size", cfg.crop_size), meta.get("input_size", cfg.input_size),
            meta.get("mean", cfg.mean), meta.get("std", cfg.std), loaded.config.augment.stain_normalise)


def model_inputs(images: np.ndarray, preprocessing: tuple[int, int, Any, Any, str | None]) -> np.ndarray:
    """The network's float32 input for uint8 crops: crop to size, the stain normalisation the model was
    trained and validated with (if any, the validation transform's own step), resize, mean/std. The one
    path of predict, evaluate and challenge (tests/models/test_inference.py checks it against the
    validation transform for every preprocessing option)."""
    crop, size, mean, std, stain = preprocessing
    images = fit_batch(np.asarray(images), crop)
    if stain:
        from mitotype.data.transforms import stain_normalise_images

        images = stain_normalise_images(images, stain)
    return normalise(images, crop, size, mean, std)


def predict_proba(models: Sequence[Any] | Any, images: np.ndarray, batch_size: int = 64, tta: bool = False,
                  device: str = "cpu", progress: bool = False, backend: str = "torch", bf16: bool = False,
                  threads: int | None = None) -> np.ndarray:
    """(N,) mean P(atypical) over ``models`` (LoadedModel, or opened by ``models.onnx.open_model``) and
    (with ``tta``) the 8 dihedral views.

    ``images``: uint8 (N, H, W, 3). ``bf16``: bfloat16 autocast, torch only (see docs/MODELS.md for its
    measured speed and agreement with float32). ``threads``: intra-op threads of the backend.
    """
    images = _check_images(images)
    predictor = Predictor(models, backend, device, tta, bf16, threads)
    if len(images) == 0:
        return np.zeros(0, dtype=np.float32)
    if not progress:
        return predictor(images, batch_size)
    from tqdm.auto import tqdm

    with tqdm(total=predictor.steps(len(images), batch_size), desc="predict", unit="batch") as bar:
        return predictor(images, batch_size, on_batch=lambda: bar.update(1))
