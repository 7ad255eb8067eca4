"""Which settings a run may change and still be the same run: the one owner of that decision.

``HARDWARE_KEYS``: train settings that say where and how fast a run is computed, not what it computes; a
finished experiment run is not stale when only these differ. ``RESUMABLE``: what ``train --resume`` may
change (hardware except ``precision``, whose optimiser and scaler state lives in the checkpoint, plus the
length of the run). Imports no torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from mitotype.config import RunConfig, config_from_dict
from mitotype.errors import MitotypeError

HARDWARE_KEYS = frozenset({"accelerator", "devices", "strategy", "num_nodes", "num_workers", "threads",
                           "precision"})
RESUMABLE = (HARDWARE_KEYS - {"precision"}) | {"epochs", "early_stopping_patience"}


def read_config(path: Path) -> dict[str, Any]:
    """A saved ``config.yaml`` as the dict of its RunConfig (every key present)."""
    return config_from_dict(yaml.safe_load(path.read_text()), str(path)).to_dict()


def config_diff(saved: dict[str, Any], new: dict[str, Any], free: frozenset[str]) -> list[str]:
    """``section.key: old -> new`` for every setting that differs, except ``train.<key>`` for keys in ``free``."""
    return [f"{sec}.{key}: {saved.get(sec, {}).get(key)!r} -> {value!r}" for sec, section in new.items()
            for key, value in section.items()
            if saved.get(sec, {}).get(key) != value and not (sec == "train" and key in free)]


def run_progress(out_dir: Path) -> str:
    """How far the training run in ``out_dir`` got: ``finished`` (``model.pt`` written), ``resumable``
    (``config.yaml`` and ``checkpoints/last.ckpt``: ``train(..., resume=True)`` continues it) or ``new``."""
    if (out_dir / "model.pt").is_file():
        return "finished"
    if (out_dir / "checkpoints" / "last.ckpt").is_file() and (out_dir / "config.yaml").is_file():
        return "resumable"
    return "new"


def config_changes(out_dir: Path, cfg: RunConfig) -> str:
    """What differs between the config the run in ``out_dir`` was trained with and ``cfg`` ('' = nothing, or
    no run there); hardware settings (``HARDWARE_KEYS``) do not count."""
    saved_path = out_dir / "config.yaml"
    if not saved_path.is_file():
        return ""
    try:
        saved = read_config(saved_path)
    except (MitotypeError, yaml.YAMLError):
        return f"{saved_path} unreadable"
    return "; ".join(config_diff(saved, cfg.to_dict(), HARDWARE_KEYS))


def resume_inputs(run_dir: Path, config_path: str | Path | None, data: str | None, val: str | None
                  ) -> tuple[str | Path, str, str | None]:
    """(config, data spec, val spec) of ``train --resume``: what the command gave, else the run's own."""
    if config_path is None:
        if not (run_dir / "config.yaml").is_file():
            raise MitotypeError(f"{run_dir}: nothing to resume (no config.yaml)")
        config_path = run_dir / "config.yaml"
    if data is None:
        info_path = run_dir / "run.json"
        if not info_path.is_file():
            raise MitotypeError(f"{info_path}: not found; give --data (and --val) of the run")
        info = json.loads(info_path.read_text())
        data, val = info.get("data_spec"), val or info.get("val_spec")
    return config_path, data, val


def check_resume(cfg: RunConfig, data_spec: str, val_spec: str | None, out_dir: Path) -> None:
    """MitotypeError unless ``out_dir`` holds a run that ``cfg`` on this data may continue."""
    saved_path = out_dir / "config.yaml"
    if not (out_dir / "checkpoints" / "last.ckpt").is_file() or not saved_path.is_file():
        raise MitotypeError(f"{out_dir}: nothing to resume (needs config.yaml and checkpoints/last.ckpt)")
    saved, new = read_config(saved_path), cfg.to_dict()
    diffs = config_diff(saved, new, RESUMABLE)
    if diffs:
        raise MitotypeError(f"{saved_path}: --resume must keep the run's config; changed: {'; '.join(diffs)} "
                            f"(only train.{{{','.join(sorted(RESUMABLE))}}} may change)")
    if cfg.train.schedule == "onecycle" and new["train"]["epochs"] != saved["train"]["epochs"]:
        raise MitotypeError(f"{saved_path}: a one-cycle schedule cannot be extended to more epochs")
    run_json = out_dir / "run.json"
    if run_json.is_file():
        info = json.loads(run_json.read_text())
        if info.get("data_spec") != data_spec or info.get("val_spec") != val_spec:
            raise MitotypeError(f"{run_json}: --resume must use the run's data ({info.get('data_spec')!r}, "
                                f"val {info.get('val_spec')!r}), got {data_spec!r}, val {val_spec!r}")
