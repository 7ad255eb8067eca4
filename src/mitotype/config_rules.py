"""The rules a run configuration must satisfy, in one place: a range per key that has one (:data:`RULES`),
the cross-field rules, and :func:`validate`, which ``config.config_from_dict`` runs on every config read.
Names with fixed choices are ``Literal`` fields of the dataclasses in ``config.py``, checked as they are
read (a typo such as ``train.schedule: cosin`` fails there, not at the optimiser).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from mitotype.errors import MitotypeError

if TYPE_CHECKING:
    from mitotype.config import RunConfig


def _between(low: float, high: float, low_open: bool = False, high_open: bool = False):
    def rule(v: float) -> bool:
        return (low < v if low_open else low <= v) and (v < high if high_open else v <= high)
    text = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    return rule, f"a number in {text}"


def _at_least(low: float):
    return (lambda v: v >= low), f">= {low:g}"


POSITIVE = ((lambda v: v > 0), "> 0")
PROBABILITY = _between(0, 1)
FRACTION = _between(0, 1, high_open=True)

# "section.key" -> (rule, what it expects); a tuple value is checked element by element
RULES: dict[str, tuple[Any, str]] = {
    "model.crop_size": _at_least(16), "model.input_size": _at_least(16), "model.mpp": POSITIVE,
    "model.mean": _between(0, 1), "model.std": POSITIVE, "model.head_hidden": _at_least(1),
    "model.head_dropout": FRACTION, "model.decoder_channels": _at_least(1), "model.lora_rank": _at_least(1),
    "model.lora_alpha": POSITIVE, "model.lora_dropout": FRACTION, "model.drop_path_rate": FRACTION,
    "augment.affine_degrees": _between(0, 180), "augment.affine_scale": POSITIVE,
    "augment.affine_translate": _between(0, 1), "augment.stain_sigma": _at_least(0),
    "augment.stain_bias": _at_least(0), "augment.brightness": _at_least(0), "augment.contrast": _at_least(0),
    "augment.saturation": _at_least(0), "augment.hue": _between(0, 0.5), "augment.blur_prob": PROBABILITY,
    "train.epochs": _at_least(1), "train.batch_size": _at_least(1), "train.lr": POSITIVE,
    "train.encoder_lr_scale": _at_least(0), "train.weight_decay": _at_least(0), "train.warmup_epochs": _at_least(0),
    "train.focal_gamma": _at_least(0), "train.label_smoothing": FRACTION, "train.early_stopping_patience": _at_least(0),
    "train.val_fraction": FRACTION, "train.seed": _between(0, 2**32 - 1), "train.num_workers": _at_least(0),
    "train.threads": _at_least(0), "train.num_nodes": _at_least(1), "train.max_train_batches": _at_least(1),
    "train.ema_decay": FRACTION, "train.distil_weight": FRACTION, "train.swa_epochs": _at_least(1),
}
TASK_WEIGHT = _at_least(0)  # the loss weight of every dense task and of the background swap


def _check(key: str, value: Any, rule: Any, expects: str, where: str) -> None:
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        # NaN fails every comparison, infinity passes "> 0": neither is a setting
        bad_float = isinstance(v, float) and not math.isfinite(v)
        if bad_float or (v is not None or "null" not in expects) and not rule(v):
            raise MitotypeError(f"{where}: {key} must be {expects}, got {_show(value)}")


def _show(value: Any) -> str:
    return "null" if value is None else repr(list(value) if isinstance(value, tuple) else value)


def validate(cfg: RunConfig, where: str = "config") -> None:
    """Every value in its range, every name one the code knows (the rules are in :data:`RULES`)."""
    for key, (rule, expects) in RULES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value is None and key == "train.max_train_batches":
            continue  # None = no limit
        _check(key, value, rule, expects, where)
    for name in ("segmentation", "pixel_classes", "localisation", "background_swap"):
        _check(f"model.{name}.weight", getattr(cfg.model, name).weight, *TASK_WEIGHT, where)
    if not cfg.model.decoder_channels and (cfg.model.dense_tasks or cfg.model.mask_pooling):
        raise MitotypeError(f"{where}: model.decoder_channels must hold at least one width (one per decoder "
                            f"block) when a dense task or mask pooling is on, got []")
    if cfg.model.mask_pooling and not cfg.model.segmentation.enabled:
        raise MitotypeError(f"{where}: model.mask_pooling needs the figure mask: set model.segmentation.enabled=true")
    low, high = cfg.augment.affine_scale
    if low > high:
        raise MitotypeError(f"{where}: augment.affine_scale must be [low, high] with low <= high, got {[low, high]}")
    if cfg.train.checkpoint == "swa" and cfg.train.ema_decay > 0:
        raise MitotypeError(f"{where}: train.checkpoint=swa and train.ema_decay > 0 both average the weights; "
                            "choose one")
    if cfg.train.checkpoint == "swa" and cfg.train.swa_epochs > cfg.train.epochs:
        raise MitotypeError(f"{where}: train.swa_epochs ({cfg.train.swa_epochs}) must be at most train.epochs "
                            f"({cfg.train.epochs})")
    _check_devices_setting(cfg.train.devices, where)


def _check_devices_setting(devices: str | int, where: str) -> None:
    """Lightning's ``devices``: auto, a count >= 1 (or -1 = all), or a comma-separated list of ids."""
    if isinstance(devices, int):
        ok = devices >= 1 or devices == -1
    else:
        ids = [d.strip() for d in devices.split(",")]
        ok = devices == "auto" or all(d.isdigit() for d in ids) and not (len(ids) == 1 and int(ids[0]) == 0)
    if not ok:
        raise MitotypeError(f"{where}: train.devices must be auto, a count >= 1, -1 (all) or a list of ids "
                            f"such as \"0,1\", got {devices!r}")


def check_accelerator(cfg: RunConfig, where: str = "config") -> None:
    """The accelerator a run asks for exists on this machine (checked when a run starts, not when a model
    file's stored config is read: a model trained on a GPU is still usable on a CPU)."""
    accelerator = cfg.train.accelerator
    if accelerator in ("auto", "cpu"):
        return
    import torch

    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise MitotypeError(f"{where}: train.accelerator={accelerator} but no CUDA GPU is visible on this "
                            "machine; use train.accelerator=cpu (or auto)")
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise MitotypeError(f"{where}: train.accelerator=mps but this machine has no Apple GPU; use "
                            "train.accelerator=cpu (or auto)")
