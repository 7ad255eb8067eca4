"""Run configuration: plain YAML files mirrored by typed dataclasses.

A YAML file has the sections ``model``, ``augment``, ``train`` (all optional); every key maps to a field
below. Unknown keys are an error (a typo must not silently fall back to a default). Command-line
overrides use dotted keys, e.g. ``train.epochs=3 model.encoder=resnet18``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from mitotype.config_rules import check_accelerator, validate
from mitotype.errors import MitotypeError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Input statistics an encoder's weights were trained with, where they are not ImageNet's usual ones
# (plain data here, so that reading a config never imports torch). The EfficientNet-Lite weights are
# TensorFlow's (x - 127) / 128: with ImageNet statistics the stem's activations have ~3.8x the variance its
# BatchNorm learnt, with these ~0.8x (tests/models/test_lite_weights.py).
ENCODER_NORMALISATION = {f"efficientnet_lite{i}": ((0.498, 0.498, 0.498), (0.502, 0.502, 0.502)) for i in range(3)}


# The auxiliary dense tasks, the one list: task name (a ModelConfig field) -> (Outputs field, channels).
# The model builds a head per entry, the loss a term per entry, bench switches them all on or off.
DENSE_TASKS = {"segmentation": ("mask", 1), "pixel_classes": ("classes", 3), "localisation": ("heatmap", 1)}


@dataclass
class TaskConfig:
    """One auxiliary dense task: on/off and its loss weight."""

    enabled: bool = False
    weight: float = 0.5


@dataclass
class ModelConfig:
    # Encoder: a timm model name (any CNN with ``features_only``), ``tv_mobilenet_v2`` (torchvision),
    # or a ViT (see models/encoders.py). ``pretrained``: load ImageNet weights through the library's own
    # mechanism (hub or its cache); ``weights``: a local file instead.
    encoder: str = "tv_mobilenet_v2"
    pretrained: bool = True
    weights: str | None = None
    # Physical units travel with the model (WSInfer habit): the crop read from the source is
    # ``crop_size`` pixels at ``mpp`` microns per pixel, then resized to ``input_size`` for the encoder.
    crop_size: int = 128
    input_size: int = 128
    mpp: float = 0.25
    mean: tuple[float, float, float] = IMAGENET_MEAN  # an encoder may bring its own (__post_init__)
    std: tuple[float, float, float] = IMAGENET_STD
    # Classification head: global pooling, then len(head_hidden)+1 fully connected layers with ReLU.
    head_hidden: tuple[int, ...] = (512, 256)
    head_dropout: float = 0.3
    # U-Net-like decoders: one channel width per x2 up-sampling block (3 blocks in the paper). The number
    # of blocks is where the decoder stops: 3 on MobileNetV2 end at stride 4, 2 at stride 8; the heads'
    # logits are bilinearly up-sampled and the losses taken at full resolution either way.
    decoder_channels: tuple[int, ...] = (128, 64, 32)
    # One decoder per dense task (the paper) or one decoder shared by all tasks with a 1x1 head each.
    # Cheaper settings and their training cost: docs/PERFORMANCE.md (training).
    shared_decoder: bool = False
    heatmap_loss: Literal["mse", "focal"] = "mse"  # focal: penalty-reduced focal loss, CenterNet style
    segmentation: TaskConfig = field(default_factory=TaskConfig)
    pixel_classes: TaskConfig = field(default_factory=TaskConfig)
    localisation: TaskConfig = field(default_factory=TaskConfig)
    # Background suppression switches (their value is measured, not assumed).
    mask_pooling: bool = False  # pool features weighted by the predicted figure mask
    background_swap: TaskConfig = field(default_factory=TaskConfig)  # consistency under swapped background
    # Fine-tuning mode: lora for ViT encoders, see models/.
    finetune: Literal["full", "frozen", "lora"] = "full"
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_targets: tuple[str, ...] = ("qkv", "proj", "fc1", "fc2")
    drop_path_rate: float = 0.0

    def __post_init__(self):
        # mean or std left at the ImageNet default: the encoder's own where its weights expect others; the
        # resolved values are what the model file stores
        own = ENCODER_NORMALISATION.get(self.encoder)
        if own is not None:
            self.mean = own[0] if tuple(self.mean) == IMAGENET_MEAN else self.mean
            self.std = own[1] if tuple(self.std) == IMAGENET_STD else self.std

    @property
    def dense_tasks(self) -> list[str]:
        return [n for n in DENSE_TASKS if getattr(self, n).enabled]


@dataclass
class AugmentConfig:
    flips: bool = True  # horizontal/vertical flips and 90-degree rotations
    affine_degrees: float = 15.0
    affine_scale: tuple[float, float] = (0.9, 1.1)
    affine_translate: float = 0.05
    stain_sigma: float = 0.05  # per-channel scale jitter in haematoxylin-eosin space
    stain_bias: float = 0.05  # per-channel shift jitter in haematoxylin-eosin space
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.02
    blur_prob: float = 0.1
    stain_normalise: Literal["macenko", "reinhard"] | None = None


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    encoder_lr_scale: float = 0.3  # pretrained encoder learns slower than the fresh heads
    weight_decay: float = 1e-4
    schedule: Literal["cosine", "onecycle"] = "cosine"
    warmup_epochs: float = 0.5
    class_loss: Literal["ce", "focal"] = "ce"
    focal_gamma: float = 2.0
    class_weights: Literal["balanced", "none"] = "balanced"  # (or balanced sampling below)
    balanced_sampling: bool = False
    domain_weights: bool = False  # per-domain loss weights (focal loss of the MIDOG25 winner)
    label_smoothing: float = 0.0
    early_stopping_patience: int = 0  # 0 = off
    # What picks the checkpoint (and drives early stopping): val_bacc (at threshold 0.5), val_auroc, or
    # val_loss. Balanced accuracy on a few hundred validation figures is noisy; AUROC and loss are smoother.
    monitor: Literal["val_bacc", "val_auroc", "val_loss"] = "val_bacc"
    val_fraction: float = 0.15  # slide-grouped validation part when no --val is given
    seed: int = 0
    num_workers: int = 0
    threads: int = 0  # torch intra-op threads; 0 = torch's default (all cores). 1 on a busy shared machine
    precision: Literal["auto", "32", "32-true", "16", "16-mixed", "bf16", "bf16-mixed"] = "auto"
    channels_last: bool = True
    devices: str | int = "auto"  # Lightning's: "auto", a count (4) or a list of ids ("0,1")
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    max_train_batches: int | None = None  # for smoke tests: limit batches per epoch
    ema_decay: float = 0.0  # 0 = off
    # Which weights become model.pt: "best" (the validation pick by train.monitor), "last" (the final epoch's)
    # or "swa" (equal-weight average of the weights, batch-norm statistics included, at the end of each of the
    # last train.swa_epochs epochs). The validation pick on a few hundred figures is noisy (docs/RESULTS.md).
    checkpoint: Literal["best", "last", "swa"] = "best"
    swa_epochs: int = 3
    # Figure-mask targets of the dense tasks: "segmented" (classical haematoxylin segmentation,
    # data/targets.py) or "disk" (a centred disk: the mask-quality ablation).
    mask_method: Literal["segmented", "disk"] = "segmented"
    # Auxiliary loss weights over training: "constant", or "decay" (x cosine from 1 to 0: the dense tasks
    # shape the features early, the classifier has the last epochs to itself).
    aux_schedule: Literal["constant", "decay"] = "constant"
    # Knowledge distillation (train/distil.py): a teacher model file (e.g. an ensemble) whose soft
    # P(atypical) on each training crop is mixed into the class loss with weight distil_weight.
    distil_teacher: str | None = None
    distil_weight: float = 0.7
    distil_tta: bool = True


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    """Tuples to lists so that YAML/JSON dumps stay plain."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise MitotypeError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise MitotypeError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        if isinstance(value, bool):  # shorthand: ``segmentation: true``
            return hint(enabled=value)
        return _build(hint, value, where)
    if value is None:
        if type(None) in get_args(hint):
            return None
        raise MitotypeError(f"{where}: may not be null")
    if get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            raise MitotypeError(f"{where}: expected a list, got {value!r}")
        args = get_args(hint)  # (int, Ellipsis) for any length, (float, float, float) for exactly three
        if args[-1] is not Ellipsis and len(value) != len(args):
            raise MitotypeError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(args[0], v, where) for v in value)
    options = [a for a in get_args(hint) if a is not type(None)] or [hint]  # ``str | int`` -> [str, int]
    if get_origin(hint) is Literal:
        options = [hint]
    choices = [c for typ in options if get_origin(typ) is Literal for c in get_args(typ)]
    if choices:  # a fixed set of names: a typo fails here, when the config is read
        if isinstance(value, str) and value in choices:
            return value
        allowed = ", ".join(choices) + (" or null" if type(None) in get_args(hint) else "")
        raise MitotypeError(f"{where}: must be one of {allowed}, got {value!r}")
    for typ in options:
        if _fits(typ, value):
            return float(value) if typ is float else value
    if float in options and isinstance(value, str):
        # YAML 1.1 reads 1e-4 (no dot) as a string; it is a number to anyone who writes it
        try:
            return float(value)
        except ValueError:
            pass
    expected = " or ".join("true/false" if t is bool else t.__name__ for t in options)
    raise MitotypeError(f"{where}: expected {expected}, got {value!r}")


def _fits(typ: type, value: Any) -> bool:
    """Ints pass as floats, but nothing else converts (``true`` is not an int, ``3`` is not a name)."""
    if typ is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, typ) and not (typ is int and isinstance(value, bool))


def config_from_dict(data: dict[str, Any] | None, where: str = "config") -> RunConfig:
    """A typed, range-checked config (MitotypeError naming ``where`` and the key otherwise): names with
    fixed choices (``Literal``) checked by the coercion, ranges and cross-field rules by
    :func:`mitotype.config_rules.validate`."""
    cfg = _build(RunConfig, data or {}, where)
    validate(cfg, where)
    return cfg


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``['train.epochs=3', 'model.segmentation.enabled=false']`` -> nested dict (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise MitotypeError(f"override {item!r}: expected KEY=VALUE, e.g. train.epochs=3")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(p.strip() for p in parts):
            raise MitotypeError(f"override {item!r}: {key.strip()!r} is not a dotted key such as train.epochs")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise MitotypeError(f"override {item!r}: {part!r} is a value, not a section with keys")
        node[parts[-1]] = _override_value(item, raw)
    return tree


def _override_value(item: str, raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise MitotypeError(f"override {item!r}: the value is not valid YAML ({_one_line(exc)})") from None


def _one_line(exc: Exception) -> str:
    """PyYAML's messages span lines with a caret drawing; an error message stays on one line."""
    return " ".join(str(exc).split())


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        elif isinstance(value, dict) and isinstance(out.get(key), bool):  # task shorthand then details
            out[key] = _merge({"enabled": out[key]}, value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path, what: str) -> Any:
    """A YAML file's content ({} when empty), with clear errors for a missing file or bad YAML."""
    path = Path(path)
    if path.is_dir():
        raise MitotypeError(f"{path}: is a folder; expected the {what} (a YAML file)")
    if not path.is_file():
        raise MitotypeError(f"{path}: {what} not found")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError) as exc:
        raise MitotypeError(f"{path}: cannot read the {what} ({type(exc).__name__}: {exc})") from None
    except yaml.YAMLError as exc:
        raise MitotypeError(f"{path}: not valid YAML ({_one_line(exc)})") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                check_devices: bool = True) -> RunConfig:
    """Read a YAML run config (or the defaults), apply ``key=value`` overrides, validate types and ranges
    and (``check_devices``) that the accelerator asked for exists here."""
    data: dict[str, Any] = {}
    where = "config"
    if path is not None:
        where = str(path)
        data = read_yaml(path, "config file")
        if not isinstance(data, dict):
            raise MitotypeError(f"{path}: expected a mapping with the sections model, augment, train; "
                                f"the file holds a {type(data).__name__}")
    if overrides:
        data = _merge(data, parse_overrides(overrides))
    cfg = config_from_dict(data, where)
    if check_devices:
        check_accelerator(cfg, where)
    return cfg
