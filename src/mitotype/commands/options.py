"""Argument types and checks shared by the commands, so that a value means the same on every command.

The types raise ``argparse.ArgumentTypeError``: argparse then prints a usage error naming the option.
:func:`check_device` is called by each command before any model is loaded. The option groups
(:func:`add_model_arguments`, :func:`add_backend_arguments`, :func:`add_tta_argument`,
:func:`add_slide_arguments`) declare the options that several commands share, spelled the same everywhere.
"""

from __future__ import annotations

import argparse
import math

from mitotype.errors import MitotypeError


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def random_seed(text: str) -> int:
    """numpy's and Lightning's seeds: 0 .. 2**32 - 1."""
    value = _int(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be in 0 .. 4294967295, got {text}")
    return value


def int_range(low: int, high: int):
    def parse(text: str) -> int:
        value = _int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in {low} .. {high}, got {text}")
        return value
    return parse


def positive_float(text: str) -> float:
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def probability(text: str) -> float:
    value = _float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


DEVICES_HINT = "auto, cpu, cuda, cuda:N or mps"


def check_device(device: str, option: str = "--device") -> str:
    """A torch device that exists on this machine (``auto`` always does); MitotypeError otherwise."""
    if device == "auto":
        return device
    import torch

    if device == "gpu":  # Lightning's word for it, accepted where evaluation follows the trainer
        check_device("cuda", option)
        return device

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise MitotypeError(f"{option} {device!r}: not a device; use {DEVICES_HINT}") from None
    if parsed.type == "cpu":
        return device
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise MitotypeError(f"{option} {device}: no CUDA GPU is visible on this machine; use --device cpu "
                                "(or auto)")
        if parsed.index is not None and parsed.index >= count:
            raise MitotypeError(f"{option} {device}: this machine has {count} CUDA GPU(s), cuda:0 .. cuda:{count - 1}")
        return device
    if parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise MitotypeError(f"{option} mps: this machine has no Apple GPU; use --device cpu (or auto)")
        return device
    raise MitotypeError(f"{option} {device!r}: unsupported device type {parsed.type!r}; use {DEVICES_HINT}")


# --- options shared by the commands that run a model ---------------------------------------------------------

def add_model_arguments(parser: argparse.ArgumentParser, ensemble: bool = True, batch_size: int = 64,
                        required: bool = False) -> None:
    """--model (repeatable for an ensemble, else one file), --batch-size and --device (predict, challenge,
    evaluate, explain)."""
    if ensemble:
        parser.add_argument("--model", action="append", required=required, metavar="M",
                            help="model file (.pt from `mitotype train`) or 'default' (the model shipped with "
                                 "mitotype; the default). Repeat for an ensemble: probabilities are averaged")
    else:
        parser.add_argument("--model", default="default", metavar="M",
                            help="model file (.pt from `mitotype train`) or 'default' (the model shipped with "
                                 "mitotype; the default)")
    parser.add_argument("--batch-size", type=positive_int, default=batch_size, metavar="N",
                        help=f"figures per batch (default {batch_size})")
    parser.add_argument("--device", default="auto", metavar="D",
                        help="torch device: auto (default: cuda if available, else cpu), cpu, cuda, cuda:1, mps")


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """--backend and --threads (predict, challenge)."""
    parser.add_argument("--backend", choices=("auto", "onnx", "torch", "torch-eager"), default="auto",
                        help="auto (default: onnxruntime on CPU, the model's graph exported once and cached; "
                             "torch on GPUs), onnx, torch (eager PyTorch, batch norm folded), or torch-eager "
                             "(unfolded: the reference the others are tested against)")
    parser.add_argument("--threads", type=positive_int, metavar="N",
                        help="CPU threads of the network (default: $OMP_NUM_THREADS, else all available cores; "
                             "onnxruntime runs one batch per thread); 1 per process is fastest on a machine "
                             "shared with other jobs")


def add_tta_argument(parser: argparse.ArgumentParser) -> None:
    """--tta (predict, challenge, evaluate)."""
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation: average over the 8 flips and 90-degree rotations")


def add_slide_arguments(parser: argparse.ArgumentParser) -> None:
    """--slide, --coords and --slide-mpp (predict, explain)."""
    parser.add_argument("--slide", metavar="SLIDE",
                        help="a whole-slide image (SVS, pyramidal/plain TIFF, NDPI, ...; MRXS etc. with openslide)")
    parser.add_argument("--coords", metavar="CSV",
                        help="with --slide: CSV with columns x, y = figure centres in level-0 pixels")
    parser.add_argument("--slide-mpp", "--mpp", dest="slide_mpp", type=positive_float, metavar="UM",
                        help="with --slide: microns per pixel at level 0, for slides whose resolution metadata is "
                             "missing or wrong (overrides the metadata)")
