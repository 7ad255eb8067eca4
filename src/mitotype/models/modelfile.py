"""One model file (``torch.save`` of a plain dict, read with ``weights_only=True``: no code is unpickled).

Keys: ``format`` ("mitotype-model"), ``format_version``, ``state_dict``, ``config`` (the full RunConfig as a
dict), ``threshold``, ``class_names``, ``crop_size``, ``input_size``, ``mpp``, ``mean``, ``std``,
``mitotype_version``, ``provenance`` (versions, commit, time) and ``extra`` (anything the caller adds: data
spec, validation metrics ...). See docs/MODELS.md.

An ensemble file (``format`` "mitotype-ensemble", written by :func:`save_ensemble`) holds the members'
payloads under ``members`` and its own ``threshold``; it loads as one model (``models/ensemble.py``).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mitotype.config import RunConfig, config_from_dict
from mitotype.errors import MitotypeError

FORMAT = "mitotype-model"
ENSEMBLE_FORMAT = "mitotype-ensemble"
FORMAT_VERSION = 1
PREPROCESSING = ("crop_size", "input_size", "mpp", "mean", "std")  # what members of an ensemble must share
CLASS_NAMES = ("normal", "atypical")
# Models that ship in the package as assets/NAME.pt: "default" (fast, one network) and, where the package
# has it, "accurate" (the ensemble the default was distilled from; slower). docs/MODELS.md says which is which.
SHIPPED = ("default", "accurate")

if TYPE_CHECKING:  # torch itself is imported where a file is read or written: `predict` may not need it
    import torch
    from torch import nn


@dataclass
class LoadedModel:
    model: nn.Module
    config: RunConfig
    threshold: float
    meta: dict[str, Any] = field(default_factory=dict)
    path: str = ""


def shipped_model_path(name: str = "default") -> Path:
    return Path(__file__).resolve().parents[1] / "assets" / f"{name}.pt"


def default_model_path() -> Path:
    return shipped_model_path("default")


def model_file(model: str | Path) -> Path:
    """A ``--model`` value as a file: a shipped name ("default", "accurate") or a path."""
    return shipped_model_path(str(model)) if str(model) in SHIPPED else Path(model)


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain MitoNet inside DDP / torch.compile / Lightning wrappers."""
    from torch import nn

    for attr in ("_orig_mod", "module", "model"):
        inner = getattr(model, attr, None)
        if isinstance(inner, nn.Module) and hasattr(inner, "encoder"):
            return _unwrap(inner)
    return model


def save_model(path: str | Path, model: nn.Module, run_cfg: RunConfig, threshold: float = 0.5,
               extra: dict[str, Any] | None = None) -> Path:
    """Write the model file atomically; returns its path."""
    import torch

    from mitotype import __version__
    from mitotype.io import atomic_write, provenance

    m = run_cfg.model
    state = {k: v.detach().cpu().contiguous() for k, v in _unwrap(model).state_dict().items()}
    # Foundation-model addition (models/finetune.py): frozen hub weights are left out, fetched again on load.
    from mitotype.models.finetune import split_state

    state, base_weights = split_state(_unwrap(model), m, state)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "state_dict": state,
        "config": run_cfg.to_dict(),
        "threshold": float(threshold),
        "class_names": list(CLASS_NAMES),
        "crop_size": m.crop_size,
        "input_size": m.input_size,
        "mpp": m.mpp,
        "mean": list(m.mean),
        "std": list(m.std),
        "mitotype_version": __version__,
        "provenance": _plain(provenance()),
        "extra": _plain(dict(extra or {})),
    }
    if base_weights is not None:
        payload["base_weights"] = _plain(base_weights)
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        torch.save(payload, handle)
    return path


def _plain(value: Any) -> Any:
    """JSON-plain copy (str subclasses like TorchVersion, numpy scalars) so that weights_only loading works."""
    import json

    from mitotype.io import _json_default

    return json.loads(json.dumps(value, default=lambda v: str(v) if isinstance(v, str) else _json_default(v)))


def _check_zip(path: Path) -> None:
    """torch.load does not verify the zip's CRC-32s: a flipped bit would load as a different model."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as exc:  # noqa: BLE001 - any damage to the container reads the same to users
        raise MitotypeError(f"{path}: not a readable mitotype model file (corrupt or truncated?): "
                            f"{type(exc).__name__}: {str(exc)[:200]}") from None
    if bad is not None:
        raise MitotypeError(f"{path}: corrupt model file (checksum mismatch in {bad}); copy or download it again")


def read_payload(path: str | Path) -> dict[str, Any]:
    """The raw dict of a model file, validated as a mitotype model file (no network built)."""
    path = Path(path)
    if not path.is_file():
        raise MitotypeError(f"{path}: model file not found")
    _check_zip(path)
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zip, pickle errors, foreign objects: same for users
        raise MitotypeError(f"{path}: not a readable mitotype model file (corrupt or truncated?): "
                            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}") from None
    if isinstance(payload, dict) and "config" in payload.get("hyper_parameters", {}) and "state_dict" in payload:
        return _from_training_checkpoint(path, payload)
    if isinstance(payload, dict) and payload.get("format") == ENSEMBLE_FORMAT:
        return payload
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise MitotypeError(f"{path}: not a mitotype model file (no '{FORMAT}' format tag); a plain PyTorch "
                            "checkpoint cannot be used as a model: train one with `mitotype train`")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise MitotypeError(f"{path}: model file format {payload['format_version']} is newer than this "
                            f"mitotype understands ({FORMAT_VERSION}); upgrade mitotype")
    return payload


def _from_training_checkpoint(path: Path, ckpt: dict[str, Any]) -> dict[str, Any]:
    """A model-file payload from a `mitotype train` checkpoint (``checkpoints/best.ckpt`` or ``last.ckpt``), e.g.
    to evaluate the last epoch instead of the chosen one. It has no tuned threshold: 0.5 unless the caller
    gives one (``mitotype evaluate --threshold``)."""
    cfg = ckpt["hyper_parameters"]["config"]
    if float(cfg.get("train", {}).get("ema_decay", 0.0)) > 0:
        raise MitotypeError(f"{path}: a checkpoint of an EMA run holds the raw weights, not the averaged ones; "
                            "use the run's model.pt")
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    return {"format": FORMAT, "config": cfg, "state_dict": state, "threshold": 0.5,
            "checkpoint_epoch": ckpt.get("epoch")}


def write_payload(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write a (modified) model-file payload atomically, e.g. after ``mitotype calibrate``."""
    import torch

    from mitotype.io import atomic_write

    path = Path(path)
    with atomic_write(path, "wb") as handle:
        torch.save(payload, handle)
    return path


def save_ensemble(path: str | Path, member_paths: list[str | Path], threshold: float | None = None,
                  extra: dict[str, Any] | None = None, tta: bool = False) -> Path:
    """Write the members' model files as one ensemble file; threshold: given, else the members' mean.
    ``tta``: the file asks for 8-fold dihedral test-time augmentation wherever it runs (its threshold and
    its measured accuracy then belong to the averaged views)."""
    import torch

    from mitotype.io import atomic_write, provenance

    if len(member_paths) < 2:
        raise MitotypeError("an ensemble needs at least two member model files")
    members = []
    for p in member_paths:
        payload = read_payload(p)
        if payload.get("format") != FORMAT or "base_weights" in payload:
            raise MitotypeError(f"{p}: ensemble members must be plain model files from `mitotype train`")
        members.append(payload)
    for p, m in zip(member_paths[1:], members[1:]):
        differ = [k for k in PREPROCESSING if m.get(k) != members[0].get(k)]
        if differ:
            raise MitotypeError(f"{p}: its preprocessing ({', '.join(differ)}) differs from {member_paths[0]}; "
                                "ensemble members must see the same pixels")
    if threshold is None:
        threshold = sum(float(m["threshold"]) for m in members) / len(members)
    if not 0.0 <= threshold <= 1.0:
        raise MitotypeError(f"ensemble threshold must be in [0, 1], got {threshold}")
    payload = {"format": ENSEMBLE_FORMAT, "format_version": FORMAT_VERSION, "members": members,
               "threshold": float(threshold), "tta": bool(tta), **{k: members[0][k] for k in PREPROCESSING},
               "provenance": _plain(provenance()),
               "extra": _plain({"members": [str(p) for p in member_paths], **(extra or {})})}
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        torch.save(payload, handle)
    return path


def load_model(path: str | Path = "default", device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the network from the stored config (no pretrained download) and load the weights; an
    ensemble file loads as one :class:`~mitotype.models.ensemble.EnsembleNet`."""
    if str(path) in SHIPPED and not model_file(path).is_file():
        raise MitotypeError(f"{model_file(path)}: no {path!r} model is shipped in this installation; give a "
                            "model file trained with `mitotype train` (e.g. --model RUN_DIR/model.pt)")
    path = model_file(path)
    payload = read_payload(path)
    if payload.get("format") == ENSEMBLE_FORMAT:
        from mitotype.models.ensemble import EnsembleNet

        members = [_build(path, m, device) for m in payload["members"]]
        meta = {k: v for k, v in payload.items() if k not in ("members", "threshold")}
        return LoadedModel(model=EnsembleNet([m.model for m in members]).to(device).eval(),
                           config=members[0].config, threshold=float(payload["threshold"]), meta=meta,
                           path=str(path))
    return _build(path, payload, device)


def _build(path: Path, payload: dict[str, Any], device: str | torch.device) -> LoadedModel:
    from mitotype.models import create_model

    try:
        cfg = config_from_dict(payload["config"], where=f"{path} (stored config)")
        # The file holds every weight (never fetch ImageNet ones) -- unless it names hub base weights.
        cfg.model.pretrained = bool(payload.get("base_weights"))
        cfg.model.weights = None
        model = create_model(cfg.model)
    except KeyError as exc:
        raise MitotypeError(f"{path}: model file lacks {exc}") from None
    except MitotypeError as exc:
        raise MitotypeError(f"{path}: stored config cannot be built: {exc}") from None
    try:
        if payload.get("base_weights"):  # foundation-model addition: fine-tuned part on top of hub weights
            from mitotype.models.finetune import restore_state

            restore_state(model, payload["state_dict"], payload["base_weights"], str(path))
        else:
            model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError, TypeError) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines()[1:4]]
        raise MitotypeError(f"{path}: the weights do not fit the architecture its config describes "
                            f"(encoder {cfg.model.encoder!r}): {' '.join(lines)[:400]}") from None
    model.to(device).eval()
    meta = {k: v for k, v in payload.items() if k not in ("state_dict", "config", "threshold")}
    return LoadedModel(model=model, config=cfg, threshold=float(payload.get("threshold", 0.5)), meta=meta,
                       path=str(path))
