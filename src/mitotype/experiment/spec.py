"""The experiment YAML: reading and validating it (``load_experiment`` -> ``Experiment``), and what one of
its config names means for one run (``run_config``: the training config, ``eval_device``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mitotype import metrics as M
from mitotype.config import read_yaml
from mitotype.errors import MitotypeError

KINDS = ("published", "kfold", "lodo")
TOP_KEYS = {"name", "data", "seeds", "protocols", "configs", "reference", "overrides", "evaluate", "metrics",
            "subsample", "description"}
EVAL_KEYS = {"n_boot", "tta", "batch_size", "device", "seed", "plots"}


@dataclass
class Experiment:
    """A validated experiment file (``load_experiment``)."""

    path: Path
    name: str
    data: str
    seeds: list[int]
    protocols: dict[str, dict[str, Any]]
    configs: dict[str, dict[str, Any]]  # name -> {"base": Path | None, "overrides": [...]}
    reference: str
    overrides: list[str] = field(default_factory=list)
    evaluate: dict[str, Any] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=lambda: ["balanced_accuracy", "auroc"])
    subsample: int | None = None


def as_overrides(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, dict):  # {train.epochs: 3} is accepted too
        return [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                for k, v in value.items()]
    if isinstance(value, list) and all(isinstance(v, str) and "=" in v for v in value):
        return list(value)
    raise MitotypeError(f"{where}: overrides must be a list of KEY=VALUE strings, e.g. [train.epochs=3]")


def find_base(name: str, yaml_path: Path) -> Path:
    """A config path as written, else relative to the experiment file's folder or its parent (repo root)."""
    p = Path(name)
    for candidate in ([p] if p.is_absolute() else [p, yaml_path.parent / p, yaml_path.parent.parent / p]):
        if candidate.is_file():
            return candidate
    raise MitotypeError(f"{yaml_path}: base config {name!r} not found (looked in the current folder, "
                        f"{yaml_path.parent} and {yaml_path.parent.parent})")


def read_mapping(path: Path, what: str, keys: set[str]) -> dict[str, Any]:
    """The YAML file ``path`` as a mapping holding only ``keys`` at the top (else an error naming the file)."""
    return check_keys(read_yaml(path, what), keys, str(path))


def check_keys(raw: Any, keys: set[str], where: str) -> dict[str, Any]:
    """``raw`` if it is a mapping holding only ``keys``, else an error saying ``where``."""
    if not isinstance(raw, dict):
        raise MitotypeError(f"{where}: expected a mapping with {sorted(keys)}")
    unknown = set(raw) - keys
    if unknown:
        raise MitotypeError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(keys)}")
    return raw


def load_experiment(path: str | Path, data: str | None = None) -> Experiment:
    """Read and validate an experiment YAML; ``data`` replaces its data spec."""
    path = Path(path)
    raw = read_mapping(path, "experiment file", TOP_KEYS)
    for key in ("data", "configs", "protocols"):
        if not raw.get(key) and not (key == "data" and data):
            raise MitotypeError(f"{path}: missing {key!r}")
    seeds = raw.get("seeds", [0])
    if isinstance(seeds, int):
        seeds = list(range(seeds))
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise MitotypeError(f"{path}: seeds must be a list of integers (or a count), got {seeds!r}")

    protocols: dict[str, dict[str, Any]] = {}
    raw_protocols = raw["protocols"]
    if isinstance(raw_protocols, list):  # [published, lodo] is accepted too
        raw_protocols = {p: {} for p in raw_protocols} if all(isinstance(p, str) for p in raw_protocols) else None
    if not isinstance(raw_protocols, dict):
        raise MitotypeError(f"{path}: protocols must map a name to its options, e.g. {{published: {{}}}}")
    for name, opts in raw_protocols.items():
        opts = dict(opts or {})
        kind = opts.pop("kind", name)
        if kind not in KINDS:
            raise MitotypeError(f"{path}: protocol {name!r}: unknown kind {kind!r}; valid: {', '.join(KINDS)}")
        allowed = {"published": set(), "kfold": {"k", "split_seed"}, "lodo": {"by", "domains"}}[kind]
        if set(opts) - allowed:
            raise MitotypeError(f"{path}: protocol {name!r} ({kind}): unknown option(s) "
                                f"{sorted(set(opts) - allowed)}; valid: {sorted(allowed) or 'none'}")
        protocols[str(name)] = {"kind": kind, **opts}

    configs: dict[str, dict[str, Any]] = {}
    if not isinstance(raw["configs"], dict):
        raise MitotypeError(f"{path}: configs must map a name to {{base: YAML, overrides: [...]}}")
    for name, spec in raw["configs"].items():
        spec = {"base": spec} if isinstance(spec, str) or spec is None else dict(spec)
        if set(spec) - {"base", "overrides"}:
            raise MitotypeError(f"{path}: config {name!r}: unknown key(s) {sorted(set(spec) - {'base', 'overrides'})}")
        base = find_base(spec["base"], path) if spec.get("base") else None
        configs[str(name)] = {"base": base,
                              "overrides": as_overrides(spec.get("overrides"), f"{path}: config {name!r}")}
    reference = str(raw.get("reference", next(iter(configs))))
    if reference not in configs:
        raise MitotypeError(f"{path}: reference {reference!r} is not one of the configs {list(configs)}")
    evaluate = dict(raw.get("evaluate") or {})
    if set(evaluate) - EVAL_KEYS:
        raise MitotypeError(f"{path}: evaluate: unknown key(s) {sorted(set(evaluate) - EVAL_KEYS)}; "
                            f"known: {sorted(EVAL_KEYS)}")
    metrics = list(raw.get("metrics") or ["balanced_accuracy", "auroc"])
    if set(metrics) - set(M.METRICS):
        raise MitotypeError(f"{path}: metrics: unknown {sorted(set(metrics) - set(M.METRICS))}; valid: {M.METRICS}")
    subsample = raw.get("subsample")
    if subsample is not None and (not isinstance(subsample, int) or subsample < 10):
        raise MitotypeError(f"{path}: subsample must be an integer >= 10 (a number of figures), got {subsample!r}")
    return Experiment(path=path, name=str(raw.get("name", path.stem)), data=data or str(raw["data"]),
                      seeds=seeds, protocols=protocols, configs=configs, reference=reference,
                      overrides=as_overrides(raw.get("overrides"), f"{path}: overrides"),
                      evaluate=evaluate, metrics=metrics, subsample=subsample)


def run_config(exp: Experiment, config: str, seed: int, cli_overrides: Sequence[str] = ()):
    """Base YAML <- experiment overrides <- config overrides <- command-line overrides <- the run's seed."""
    from mitotype.config import load_config

    spec = exp.configs[config]
    # the accelerator is checked where runs start (run_experiment), so that a GPU grid can be planned anywhere
    return load_config(spec["base"], [*exp.overrides, *spec["overrides"], *cli_overrides, f"train.seed={seed}"],
                       check_devices=False)


def eval_device(exp: Experiment, cfg: Any) -> str:
    """The experiment's ``evaluate.device``, else the trainer's accelerator (gpu -> cuda), else auto."""
    if exp.evaluate.get("device"):
        return str(exp.evaluate["device"])
    return {"gpu": "cuda", "cuda": "cuda", "cpu": "cpu"}.get(str(cfg.train.accelerator), "auto")
