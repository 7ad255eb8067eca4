"""The runs of an experiment and where they live: the grid (``plan_runs``: configs x seeds x the parts of
each protocol, from ``mitotype.data.splits``), the state of a run's folder (``run_state``) and the
train/test manifests a run is trained and evaluated on (``write_manifest``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mitotype.errors import MitotypeError
from mitotype.experiment.spec import Experiment
from mitotype.io import absolute_path, atomic_write


@dataclass
class Run:
    """One cell of the grid: a config trained with one seed on one part of one protocol."""

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
    """Every run of the experiment: protocols x their parts x configs x seeds, in that order."""
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
    """'done' (evaluated), 'trained' (training finished), 'partial' (started) or 'todo'."""
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


def load_data(exp: Experiment) -> list:
    """The experiment's figures (its subsample, if it has one); every figure must be labelled."""
    from mitotype.data.spec import load_figures

    figures = load_figures(exp.data)
    if exp.subsample:
        figures = subsample_figures(figures, exp.subsample)
    unlabelled = sum(f.label is None for f in figures)
    if unlabelled:
        raise MitotypeError(f"{exp.data}: {unlabelled} figures have no label; an experiment needs labelled data")
    return figures
