"""Argument types and checks shared by the commands, so that a value means the same on every command.

The types raise ``argparse.ArgumentTypeError``: argparse then prints a usage error naming the option.
:func:`check_device` is called by each command before any model is loaded.
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
