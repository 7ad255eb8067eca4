"""``mitotype experiment``: a grid of model configs x seeds x protocols, trained and evaluated run by run,
resumable, and tabulated at the end.

An experiment YAML (see ``experiments/`` and docs/EVALUATION.md)::

    data: amibr:../shared/data/amibr:domain=source
    seeds: [0, 1, 2]
    protocols:                 # name -> options; ``kind`` defaults to the name
      published: {}            # the data set's own train/test split (AMi-Br)
      lodo: {by: source}       # leave one domain out (Figure.domain, or a Figure.meta key)
      kfold: {k: 5, split_seed: 0}
    configs:                   # name -> a base YAML (from configs/) plus overrides
      stl: {base: configs/cpu_stl.yaml}
      mtl: {base: configs/cpu_mtl.yaml, overrides: [model.segmentation.weight=0.5]}
    reference: stl             # paired differences are taken against this config
    overrides: [train.epochs=8]          # applied to every run
    evaluate: {n_boot: 1000, tta: false, batch_size: 128, device: auto, plots: true}
    metrics: [balanced_accuracy, auroc]  # tabulated; the first one is plotted
    subsample: null            # N: a fixed, label-stratified random subset of N figures (smoke tests)

Layout of ``--out``: ``runs/<config>/<protocol>/<part>/seed<k>/`` with ``train.csv`` / ``test.csv`` (the
manifests of the two parts), ``train/`` (``mitotype train`` outputs, ``model.pt``), ``eval/`` (``mitotype
evaluate`` outputs), ``run.log`` and ``status.json``; at the top ``experiment.log``, ``experiment.json``,
``results.md``, ``results.csv``, ``results.png``.

Resuming: a run whose ``eval/metrics.json`` exists is skipped; a run with a finished training
(``train/done.json``) is only evaluated; any other run is trained again with ``resume=True`` (the trainer
continues from its last checkpoint where it has one).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mitotype.config import read_yaml
from mitotype.errors import MitotypeError
from mitotype.evaluate import metrics as M
from mitotype.evaluate.report import fmt
from mitotype.io import absolute_path, atomic_write, provenance, write_json, write_text

KINDS = ("published", "kfold", "lodo")
TOP_KEYS = {"name", "data", "seeds", "protocols", "configs", "reference", "overrides", "evaluate", "metrics",
            "subsample", "description"}
EVAL_KEYS = {"n_boot", "tta", "batch_size", "device", "seed", "plots"}
_OWN_HANDLER_LOGGERS = ("lightning.pytorch", "lightning.fabric")


# --- the experiment file --------------------------------------------------------------------------------

@dataclass
class Experiment:
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


def _as_overrides(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, dict):  # {train.epochs: 3} is accepted too
        return [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                for k, v in value.items()]
    if isinstance(value, list) and all(isinstance(v, str) and "=" in v for v in value):
        return list(value)
    raise MitotypeError(f"{where}: overrides must be a list of KEY=VALUE strings, e.g. [train.epochs=3]")


def _find_base(name: str, yaml_path: Path) -> Path:
    """A config path as written, else relative to the experiment file's folder or its parent (repo root)."""
    p = Path(name)
    for candidate in ([p] if p.is_absolute() else [p, yaml_path.parent / p, yaml_path.parent.parent / p]):
        if candidate.is_file():
            return candidate
    raise MitotypeError(f"{yaml_path}: base config {name!r} not found (looked in the current folder, "
                        f"{yaml_path.parent} and {yaml_path.parent.parent})")


def load_experiment(path: str | Path, data: str | None = None) -> Experiment:
    """Read and validate an experiment YAML; ``data`` replaces its data spec."""
    path = Path(path)
    raw = read_yaml(path, "experiment file")
    if not isinstance(raw, dict):
        raise MitotypeError(f"{path}: expected a mapping at the top")
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise MitotypeError(f"{path}: unknown key(s) {sorted(unknown)}; known: {sorted(TOP_KEYS)}")
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
        base = _find_base(spec["base"], path) if spec.get("base") else None
        configs[str(name)] = {"base": base,
                              "overrides": _as_overrides(spec.get("overrides"), f"{path}: config {name!r}")}
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
                      overrides=_as_overrides(raw.get("overrides"), f"{path}: overrides"),
                      evaluate=evaluate, metrics=metrics, subsample=subsample)


# --- runs ------------------------------------------------------------------------------------------------

@dataclass
class Run:
    config: str
    protocol: str
    part: str  # fold0, the held-out domain, or "test"
    test_set: str  # what the table pools over: "published", "kfold" (all folds), "lodo:TUPAC16"
    seed: int
    train_idx: np.ndarray
    test_idx: np.ndarray

    @property
    def id(self) -> str:
        return f"{self.config}/{self.protocol}/{_safe(self.part)}/seed{self.seed}"


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text))


def subsample_figures(figures: list, n: int, seed: int = 0) -> list:
    """A fixed random subset of about ``n`` figures, stratified by (label, published split, domain)."""
    if n >= len(figures):
        return figures
    rng = np.random.default_rng(seed)
    strata: dict[tuple, list[int]] = {}
    for i, f in enumerate(figures):
        strata.setdefault((f.label, f.split, f.domain), []).append(i)
    keep: list[int] = []
    for members in strata.values():
        take = max(1, round(n * len(members) / len(figures)))
        keep.extend(rng.choice(members, size=min(take, len(members)), replace=False).tolist())
    return [figures[i] for i in sorted(keep)]


def protocol_parts(figures: list, name: str, opts: dict[str, Any]) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(part, test_set, train_idx, test_idx) for one protocol, from ``mitotype.data.splits``."""
    from mitotype.data import splits

    kind = opts["kind"]
    if kind == "published":
        train, test = splits.published_split(figures)
        return [("test", name, train, test)]
    if kind == "kfold":
        folds = splits.group_kfold(figures, int(opts.get("k", 5)), int(opts.get("split_seed", 0)))
        return [(f"fold{i}", name, tr, te) for i, (tr, te) in enumerate(folds)]
    parts = splits.leave_one_domain_out(figures, by=opts.get("by"))
    wanted = opts.get("domains")
    if wanted is not None:
        missing = set(map(str, wanted)) - set(parts)
        if missing:
            raise MitotypeError(f"protocol {name!r}: domain(s) {sorted(missing)} not in the data "
                                f"(it has {sorted(parts)})")
        parts = {d: parts[d] for d in map(str, wanted)}
    return [(d, f"{name}:{d}", tr, te) for d, (tr, te) in parts.items()]


def plan_runs(exp: Experiment, figures: list) -> list[Run]:
    runs = []
    for pname, opts in exp.protocols.items():
        for part, test_set, tr, te in protocol_parts(figures, pname, opts):
            if len(tr) == 0 or len(te) == 0:
                raise MitotypeError(f"protocol {pname!r} part {part!r}: empty train or test part "
                                    f"({len(tr)} / {len(te)} figures)")
            for config in exp.configs:
                for seed in exp.seeds:
                    runs.append(Run(config, pname, part, test_set, seed, tr, te))
    return runs


def run_state(run_dir: Path) -> str:
    if (run_dir / "eval" / "metrics.json").is_file():
        return "done"
    if (run_dir / "train" / "done.json").is_file():
        return "trained"
    if run_dir.exists():
        return "partial"
    return "todo"


def write_manifest(path: Path, figures: Sequence) -> None:
    """A ``manifest:`` CSV of the figures (path, label, domain, group, page, slide, x, y)."""
    import pandas as pd

    table = pd.DataFrame({
        "path": [absolute_path(f.path) for f in figures], "label": [f.label for f in figures],
        "domain": [f.domain for f in figures], "group": [f.group for f in figures],
        "page": pd.array([f.page for f in figures], dtype="Int64"),
        "slide": [f.slide or "" for f in figures],
        "x": [("" if f.x is None else f.x) for f in figures], "y": [("" if f.y is None else f.y) for f in figures]})
    with atomic_write(path, newline="") as fh:
        table.to_csv(fh, index=False)


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


class _Tee(io.TextIOBase):
    """Writes to the run's log file and to the console."""

    def __init__(self, console, log_file):
        self.console, self.log_file = console, log_file

    def write(self, text: str) -> int:
        self.console.write(text)
        if not self.log_file.closed:  # a library may keep this stream after the run ended
            self.log_file.write(text)
        return len(text)

    def flush(self) -> None:
        self.console.flush()
        if not self.log_file.closed:
            self.log_file.flush()

    def isatty(self) -> bool:  # no carriage-return progress bars into log files
        return False

    def fileno(self) -> int:  # for libraries that ask (faulthandler, subprocess): the console's
        return self.console.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.console, "encoding", "utf-8")


@contextlib.contextmanager
def _logged(path: Path) -> Iterator[None]:
    """Copy stdout, stderr and logging records into ``path`` (appending) for the duration of one run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        # Lightning's loggers do not propagate to the root logger when it had no handler at import time.
        loggers = [logging.getLogger(name) for name in ("", *_OWN_HANDLER_LOGGERS)]
        for logger in loggers:
            logger.addHandler(handler)
        try:
            with contextlib.redirect_stdout(_Tee(sys.stdout, fh)), contextlib.redirect_stderr(_Tee(sys.stderr, fh)):
                yield
        finally:
            for logger in loggers:
                logger.removeHandler(handler)


def _say(log_path: Path, text: str) -> None:
    """A progress line on the console and, time-stamped, in ``experiment.log``."""
    print(text, flush=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as fh:
        fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")


HARDWARE_KEYS = {"accelerator", "devices", "strategy", "num_nodes", "num_workers", "precision"}


def config_changes(run_dir: Path, cfg: Any) -> str:
    """What differs between the config a finished run was trained with and the current one ('' = nothing);
    hardware settings do not count."""
    saved_path = run_dir / "train" / "config.yaml"
    if not saved_path.is_file():
        return ""
    from mitotype.config import config_from_dict

    try:
        saved = config_from_dict(yaml.safe_load(saved_path.read_text()), str(saved_path)).to_dict()
    except (MitotypeError, yaml.YAMLError):
        return f"{saved_path} unreadable"
    new = cfg.to_dict()
    diffs = [f"{sec}.{key}: {saved[sec].get(key)!r} -> {value!r}" for sec, section in new.items()
             for key, value in section.items()
             if saved.get(sec, {}).get(key) != value and not (sec == "train" and key in HARDWARE_KEYS)]
    return "; ".join(diffs)


def execute_run(exp: Experiment, run: Run, figures: list, run_dir: Path, cli_overrides: Sequence[str] = ()
                ) -> dict[str, Any]:
    """Train on the run's train part, evaluate on its test part; resumable at both steps."""
    from mitotype.evaluate.run import evaluate
    from mitotype.train.run import train

    run_dir = Path(absolute_path(run_dir))  # the trainer's resume check compares the data spec verbatim
    state = run_state(run_dir)
    cfg = run_config(exp, run.config, run.seed, cli_overrides)
    train_figs = [figures[i] for i in run.train_idx]
    test_figs = [figures[i] for i in run.test_idx]
    write_manifest(run_dir / "train.csv", train_figs)
    write_manifest(run_dir / "test.csv", test_figs)
    t0 = time.time()
    train_dir = run_dir / "train"
    model_path = train_dir / "model.pt"
    if state != "trained" and model_path.is_file():  # stopped after the model file, before done.json
        state = "trained"
    if state != "trained":
        # The trainer resumes from its last checkpoint; without one (stopped in the first epoch) it restarts.
        resume = (train_dir / "checkpoints" / "last.ckpt").is_file() and (train_dir / "config.yaml").is_file()
        print(f"[{run.id}] training on {len(train_figs)} figures ({'resuming' if resume else 'from scratch'})")
        model_path = Path(train(cfg, f"manifest:{run_dir / 'train.csv'}", train_dir, resume=resume,
                                progress=False))
    if not (train_dir / "done.json").is_file():
        write_json(train_dir / "done.json", {"model": str(model_path), "seconds": round(time.time() - t0, 1)})
    t1 = time.time()
    ev = exp.evaluate
    result = evaluate([model_path], f"manifest:{run_dir / 'test.csv'}", run_dir / "eval", figures=test_figs,
                      tta=bool(ev.get("tta", False)), batch_size=int(ev.get("batch_size", 64)),
                      device=eval_device(exp, cfg), n_boot=int(ev.get("n_boot", 1000)),
                      seed=int(ev.get("seed", 0)), plots_and_report=bool(ev.get("plots", True)))
    status = {"run": run.id, "config": run.config, "protocol": run.protocol, "part": run.part,
              "test_set": run.test_set, "seed": run.seed, "n_train": len(train_figs), "n_test": len(test_figs),
              "train_seconds": json.loads((train_dir / "done.json").read_text())["seconds"],
              "eval_seconds": round(time.time() - t1, 1),
              **{k: result[k] for k in M.METRICS}}
    write_json(run_dir / "status.json", status)
    return status


# --- the table -------------------------------------------------------------------------------------------

def _collect(runs: list[Run], runs_dir: Path) -> dict[tuple[str, str, int], dict[str, np.ndarray]]:
    """(test_set, config, seed) -> pooled predictions of its runs (k folds pooled into one), only where
    every run (fold) of that triple has finished."""
    import pandas as pd

    from mitotype.evaluate.run import read_predictions

    tables: dict[tuple[str, str, int], list] = {}
    need: dict[tuple[str, str, int], int] = {}
    for run in runs:
        key = (run.test_set, run.config, run.seed)
        need[key] = need.get(key, 0) + 1
        d = runs_dir / run.id
        if run_state(d) != "done":
            continue
        table = read_predictions(d / "eval" / "predictions.csv")
        table["threshold"] = json.loads((d / "eval" / "metrics.json").read_text())["threshold"]
        tables.setdefault(key, []).append(table)
    return {key: pooled_predictions(pd.concat(parts, ignore_index=True))
            for key, parts in tables.items() if len(parts) == need[key]}


def pooled_predictions(t) -> dict[str, np.ndarray]:
    """The arrays the table is computed from, sorted by figure, from a DataFrame with columns path, page,
    label, group, p_atypical and threshold (one row per test figure)."""
    import pandas as pd

    # identity of a figure: path and page (pandas' NA must not leak into the key: NA != NA)
    t = t.assign(key=[f"{path}#{'' if pd.isna(page) else int(page)}" for path, page in zip(t["path"], t["page"])])
    t = t.sort_values("key", kind="mergesort").reset_index(drop=True)
    return {"key": t["key"].to_numpy(), "labels": t["label"].to_numpy(np.int64),
            "probs": t["p_atypical"].to_numpy(float), "threshold": t["threshold"].to_numpy(float),
            "groups": t["group"].astype(str).to_numpy()}


def _seed_metric(p: dict[str, np.ndarray], metric: str, weights: np.ndarray | None = None) -> np.ndarray:
    w = np.ones((1, len(p["labels"]))) if weights is None else weights
    return M.weighted_metrics(p["labels"], p["probs"], p["threshold"], w)[metric]


def tabulate(exp: Experiment, runs: list[Run], runs_dir: Path, n_boot: int = 1000, seed: int = 0
             ) -> list[dict[str, Any]]:
    """One row per (test set, config, metric): mean and sd over seeds, the per-seed values, and the paired
    difference to the reference config (same seeds, same test figures) with a bootstrap 95% interval
    resampling the test set's groups (slides) and the seeds."""
    ready = _collect(runs, runs_dir)
    rows = []
    test_sets = list(dict.fromkeys(r.test_set for r in runs))
    for test_set in test_sets:
        for config in exp.configs:
            seeds = [s for s in exp.seeds if (test_set, config, s) in ready]
            ref_seeds = [s for s in seeds if (test_set, exp.reference, s) in ready]
            for metric in exp.metrics:
                values = [float(_seed_metric(ready[(test_set, config, s)], metric)[0]) for s in seeds]
                finite = [v for v in values if np.isfinite(v)]
                row = {"test_set": test_set, "config": config, "metric": metric, "n_seeds": len(seeds),
                       "n_test": len(ready[(test_set, config, seeds[0])]["labels"]) if seeds else 0,
                       "mean": float(np.mean(finite)) if finite else None,
                       "sd": float(np.std(finite, ddof=1)) if len(finite) > 1 else None,
                       "values": [None if not np.isfinite(v) else v for v in values],
                       "delta": None, "delta_ci_low": None, "delta_ci_high": None, "paired_seeds": 0,
                       "delta_values": []}
                if config != exp.reference and ref_seeds:
                    row.update(_paired(ready, test_set, config, exp.reference, ref_seeds, metric, n_boot, seed))
                rows.append(row)
    return rows


def _paired(ready, test_set, config, reference, seeds, metric, n_boot, seed) -> dict[str, Any]:
    """Mean over seeds of metric(config) - metric(reference), the per-seed differences, and a 95% interval
    from a two-stage bootstrap: resample the test set's groups (slides) and, independently, the seeds.
    Resampling seeds too makes the interval cover seed-to-seed variation (with one seed it is the slide
    interval alone)."""
    pairs = [(ready[(test_set, config, s)], ready[(test_set, reference, s)]) for s in seeds]
    for a, b in pairs:
        if not np.array_equal(a["key"], b["key"]):
            raise MitotypeError(f"{test_set}: {config} and {reference} were tested on different figures; "
                                "delete the stale runs and rerun")
    groups = pairs[0][0]["groups"]
    per_seed = [float(_seed_metric(a, metric)[0] - _seed_metric(b, metric)[0]) for a, b in pairs]
    delta = float(np.mean(per_seed))
    rng = np.random.default_rng(seed)
    reps = []
    units, _ = M.bootstrap_units(pairs[0][0]["labels"], groups)
    for start in range(0, n_boot, 256):
        w = M.bootstrap_weights(units, min(256, n_boot - start), rng)
        d = np.stack([_seed_metric(a, metric, w) - _seed_metric(b, metric, w) for a, b in pairs])  # seeds x B
        picks = rng.integers(0, len(pairs), size=d.shape)  # a seed drawn with replacement per slot
        reps.append(np.take_along_axis(d, picks, axis=0).mean(axis=0))
    ci = M.percentile_interval(np.concatenate(reps)) if reps else None
    return {"delta": delta if np.isfinite(delta) else None, "delta_ci_low": None if ci is None else ci[0],
            "delta_ci_high": None if ci is None else ci[1], "paired_seeds": len(seeds),
            "delta_values": [v if np.isfinite(v) else None for v in per_seed]}


def _cell(row: dict[str, Any]) -> str:
    if row["mean"] is None:
        return "—"
    text = f"{row['mean']:.3f}" + (f" ± {row['sd']:.3f}" if row["sd"] is not None else "")
    if row["delta"] is not None:
        text += f" (Δ {row['delta']:+.3f} [{row['delta_ci_low']:+.3f}, {row['delta_ci_high']:+.3f}])"
    return text + f" n={row['n_seeds']}"


def results_markdown(exp: Experiment, rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    test_sets = list(dict.fromkeys(r["test_set"] for r in rows))
    out = [f"# Experiment {exp.name}", "",
           f"Data: `{exp.data}`; seeds {exp.seeds}; reference config: `{exp.reference}`.  ",
           ("Cells: mean ± sd over seeds (n = seeds finished); Δ = mean paired difference to the reference "
            "(same seeds, same test figures) with a 95% bootstrap interval resampling the test set's slides "
            "and the seeds (results.csv has the per-seed values and differences).  "),
           ("`kfold` pools the out-of-fold predictions of all folds per seed; `lodo:X` is trained without "
            "domain X and tested on X."), ""]
    for metric in exp.metrics:
        out += [f"## {metric}", "", "| config | " + " | ".join(test_sets) + " |",
                "|---|" + "---|" * len(test_sets)]
        for config in exp.configs:
            cells = [next((_cell(r) for r in rows if r["test_set"] == t and r["config"] == config
                           and r["metric"] == metric), "—") for t in test_sets]
            out.append(f"| {config} | " + " | ".join(cells) + " |")
        out.append("")
    out += ["![results](results.png)", "", "## Runs", "",
            (f"{info['done']} of {info['total']} runs finished; {info['failed']} failed this time; "
             f"wall time of this invocation {info['seconds']:.0f} s."), "",
            f"Reproduce: `{info['command']}`", ""]
    return "\n".join(out)


def write_results(exp: Experiment, runs: list[Run], out: Path, info: dict[str, Any], stem: str = "results"
                  ) -> Path:
    """``stem``.md/.csv/.png in ``out``: the table of every finished run against ``exp.reference``."""
    import pandas as pd

    from mitotype.evaluate.plots import experiment_plot

    n_boot = int(exp.evaluate.get("n_boot", 1000))
    rows = tabulate(exp, runs, out / "runs", n_boot=n_boot, seed=int(exp.evaluate.get("seed", 0)))
    table = pd.DataFrame(rows)
    if not table.empty:
        for column in ("values", "delta_values"):  # per seed, in the order of the experiment's seeds
            table[column] = table[column].map(lambda v: ";".join("" if x is None else f"{x:.6f}" for x in v))
    with atomic_write(out / f"{stem}.csv", newline="") as fh:
        table.to_csv(fh, index=False)
    primary = exp.metrics[0]
    experiment_plot([r for r in rows if r["metric"] == primary], out / f"{stem}.png", metric=primary,
                    reference=exp.reference)
    path = out / f"{stem}.md"
    write_text(path, results_markdown(exp, rows, info))
    return path


# --- the command ------------------------------------------------------------------------------------------

def load_data(exp: Experiment) -> list:
    from mitotype.data.spec import load_figures

    figures = load_figures(exp.data)
    if exp.subsample:
        figures = subsample_figures(figures, exp.subsample)
    unlabelled = sum(f.label is None for f in figures)
    if unlabelled:
        raise MitotypeError(f"{exp.data}: {unlabelled} figures have no label; an experiment needs labelled data")
    return figures


def describe(exp: Experiment, runs: list[Run], out: Path) -> str:
    lines = [(f"{len(runs)} runs ({len(exp.configs)} configs x {len(exp.seeds)} seeds x parts of "
              f"{len(exp.protocols)} protocols) in {out / 'runs'}:")]
    for run in runs:
        lines.append(f"  {run.id:48s} train {len(run.train_idx):5d}  test {len(run.test_idx):5d}  "
                     f"[{run_state(out / 'runs' / run.id)}]")
    return "\n".join(lines)


def run_experiment(path: str | Path, out_dir: str | Path | None = None, dry_run: bool = False,
                   overrides: Sequence[str] = (), data: str | None = None, only: str | None = None,
                   command: str | None = None, table_only: bool = False, reference: str | None = None) -> Path:
    """Run (or resume) every run of the experiment, then write the table; returns ``results.md``.

    ``overrides`` (``KEY=VALUE``) apply to every run after the experiment's own (e.g. ``train.accelerator=gpu``);
    ``only`` restricts this invocation to runs whose id contains it (the table still covers all finished runs).
    ``command``: the command line to print as "Reproduce" in results.md. ``table_only``: train nothing, only
    rewrite the table from the finished runs. ``reference``: take the paired differences against this config
    instead of the file's (e.g. each lever against the full multi-task model); the table is then written as
    ``results_vs_<reference>.md/.csv/.png`` beside the file's own.
    """
    exp = load_experiment(path, data=data)
    stem = "results"
    if reference is not None and reference != exp.reference:
        if reference not in exp.configs:
            raise MitotypeError(f"--reference {reference!r} is not one of the configs {list(exp.configs)}")
        stem = f"results_vs_{reference}"
    out = Path(out_dir) if out_dir else Path("runs") / "experiments" / exp.name
    for config in exp.configs:  # fail early on a bad config or override, before hours of training
        try:
            run_config(exp, config, exp.seeds[0], overrides)
        except MitotypeError as exc:
            raise MitotypeError(f"{exp.path}: config {config!r}: {exc}") from None
    figures = load_data(exp)
    runs = plan_runs(exp, figures)
    todo = [] if table_only else [r for r in runs if only is None or only in r.id]
    print(describe(exp, todo, out))
    if dry_run:
        return out / "results.md"
    if table_only and not any(run_state(out / "runs" / r.id) == "done" for r in runs):
        # most likely a mistyped --out: an empty table would look like an experiment that ran
        raise MitotypeError(f"{out}: no finished runs to tabulate ({len(runs)} planned); give the --out of an "
                            "experiment that ran, or run it first")
    if todo:
        from mitotype.config import check_accelerator

        for config in exp.configs:
            check_accelerator(run_config(exp, config, exp.seeds[0], overrides), f"{exp.path}: config {config!r}")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "experiment.json", provenance(
        experiment=str(exp.path), data=exp.data, seeds=exp.seeds, protocols=exp.protocols, reference=exp.reference,
        configs={k: {"base": str(v["base"]) if v["base"] else None, "overrides": v["overrides"]}
                 for k, v in exp.configs.items()},
        overrides=exp.overrides, cli_overrides=list(overrides), evaluate=exp.evaluate, subsample=exp.subsample,
        n_figures=len(figures)))
    import mitotype.train.run  # noqa: F401 - Lightning binds its log handler to stderr at import: the real one

    t0, failed = time.time(), []
    log_path = out / "experiment.log"
    _say(log_path, f"experiment {exp.name}: {len(todo)} runs, out {out}")
    for i, run in enumerate(todo, 1):
        run_dir = out / "runs" / run.id
        if run_state(run_dir) == "done":
            stale = config_changes(run_dir, run_config(exp, run.config, run.seed, overrides))
            _say(log_path, f"[{i}/{len(todo)}] {run.id}: done, skipped" + (
                f" -- WARNING: trained with another config ({stale}); delete {run_dir} to redo it" if stale else ""))
            continue
        _say(log_path, f"[{i}/{len(todo)}] {run.id}: start ({run_state(run_dir)})")
        try:
            with _logged(run_dir / "run.log"):
                status = execute_run(exp, run, figures, run_dir, overrides)
            _say(log_path, f"[{i}/{len(todo)}] {run.id}: balanced_accuracy {fmt(status['balanced_accuracy'])}, "
                           f"auroc {fmt(status['auroc'])}, train {status['train_seconds']} s, "
                           f"eval {status['eval_seconds']} s")
        except Exception as exc:  # noqa: BLE001 - one failed run must not stop the grid; it is reported
            failed.append(run.id)
            with (run_dir / "run.log").open("a") as fh:
                traceback.print_exc(file=fh)
            _say(log_path, f"[{i}/{len(todo)}] {run.id}: FAILED ({type(exc).__name__}: {exc}); "
                           f"see {run_dir / 'run.log'}")
    done = sum(run_state(out / "runs" / r.id) == "done" for r in runs)
    info = {"done": done, "total": len(runs), "failed": len(failed), "seconds": time.time() - t0,
            "command": command or f"run_experiment({str(path)!r}, out_dir={str(out)!r})"}
    table_exp = exp if stem == "results" else replace(exp, reference=reference)
    path = write_results(table_exp, runs, out, info, stem=stem)
    _say(log_path, f"{done}/{len(runs)} runs finished; table: {path}")
    if failed:
        raise MitotypeError(f"{len(failed)} run(s) failed: {', '.join(failed)} (logs in {out / 'runs'}); "
                            "rerun the same command to retry them")
    return path
