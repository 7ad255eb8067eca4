"""Every finished run re-scored with its LAST epoch instead of the checkpoint it chose
(``mitotype experiment --last-epoch``).

Checkpoint choice on a few hundred validation figures is noisy (docs/RESULTS.md section 3): this takes every
run's ``train/checkpoints/last.ckpt`` (all runs trained the same number of epochs), predicts its test part
and tabulates AUROC (threshold-free: a checkpoint has no tuned threshold) with the paired difference to
reference configs (95% interval resampling test slides and seeds, as the main table).

Each run's last-epoch P(atypical) is kept in ``eval/last_epoch_p_atypical.csv`` and reused while it is newer
than ``last.ckpt`` (or the checkpoint is gone): weights are not committed, so a first call runs where the
experiment ran, later ones need only the cached files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mitotype.experiment.plan import Run, run_state
from mitotype.experiment.spec import Experiment
from mitotype.experiment.table import paired_difference, pooled_predictions, seed_metric
from mitotype.io import atomic_write

CACHE = Path("eval") / "last_epoch_p_atypical.csv"  # in a run's folder


def last_epoch_predictions(runs: list[Run], runs_dir: Path) -> dict[tuple[str, str, int], dict[str, np.ndarray]]:
    """(test_set, config, seed) -> ``pooled_predictions`` of the run's last epoch (threshold 0.5), for every
    finished run with a ``last.ckpt`` or a cached ``eval/last_epoch_p_atypical.csv``."""
    import pandas as pd

    from mitotype.data.images import load_images
    from mitotype.data.spec import load_figures
    from mitotype.models.inference import predict_proba
    from mitotype.models.modelfile import load_model

    ready = {}
    for run in runs:
        d = runs_dir / run.id
        ckpt, cached = d / "train" / "checkpoints" / "last.ckpt", d / CACHE
        if run_state(d) != "done" or not (ckpt.is_file() or cached.is_file()):
            continue
        figures = load_figures(f"manifest:{d / 'test.csv'}")
        if cached.is_file() and (not ckpt.is_file() or cached.stat().st_mtime > ckpt.stat().st_mtime):
            probs = pd.read_csv(cached)["p_atypical"].to_numpy(float)
        else:
            model = load_model(ckpt)
            probs = predict_proba([model], load_images(figures, model.config.model.crop_size), batch_size=128)
            with atomic_write(cached, newline="") as fh:
                pd.DataFrame({"path": [f.path for f in figures], "p_atypical": probs}).to_csv(fh, index=False)
        key = (run.test_set, run.config, run.seed)
        ready[key] = pooled_predictions(pd.DataFrame({
            "path": [f.path for f in figures], "page": [f.page for f in figures],
            "label": [f.label for f in figures], "group": [f.group for f in figures],
            "p_atypical": probs, "threshold": 0.5}))
        print(f"{run.id}: last-epoch AUROC {seed_metric(ready[key], 'auroc'):.3f}", flush=True)
    return ready


def last_epoch_rows(exp: Experiment, runs: list[Run], ready: dict, references: Sequence[str], n_boot: int = 1000,
                    seed: int = 0) -> list[dict]:
    """One row per (test set, config) with a last-epoch result: its mean AUROC over seeds, the per-seed
    values, and ``delta_vs_<reference>`` ("+0.012 [-0.001, +0.030]") for each of ``references``."""
    rows = []
    for test_set in dict.fromkeys(r.test_set for r in runs):
        for config in exp.configs:
            seeds = [s for s in exp.seeds if (test_set, config, s) in ready]
            if not seeds:
                continue
            values = [seed_metric(ready[(test_set, config, s)], "auroc") for s in seeds]
            row = {"test_set": test_set, "config": config, "n_seeds": len(seeds), "auroc": float(np.mean(values)),
                   "values": ";".join(f"{v:.4f}" for v in values)}
            for ref in references:
                common = [s for s in seeds if (test_set, ref, s) in ready]
                if ref != config and common:
                    p = paired_difference(ready, test_set, config, ref, common, "auroc", n_boot, seed)
                    defined = p["delta"] is not None and p["delta_ci_low"] is not None
                    row[f"delta_vs_{ref}"] = (f"{p['delta']:+.3f} [{p['delta_ci_low']:+.3f}, "
                                              f"{p['delta_ci_high']:+.3f}]" if defined else "—")
            rows.append(row)
    return rows


def write_last_epoch(exp: Experiment, runs: list[Run], out: Path, references: Sequence[str], n_boot: int = 1000,
                     seed: int = 0) -> Path:
    """``last_epoch.csv`` in ``out`` (``last_epoch_rows`` of the runs in ``out/runs``), also printed as a
    Markdown table; returns its path."""
    import pandas as pd

    ready = last_epoch_predictions(runs, out / "runs")
    table = pd.DataFrame(last_epoch_rows(exp, runs, ready, references, n_boot, seed))
    path = out / "last_epoch.csv"
    with atomic_write(path, newline="") as fh:
        table.to_csv(fh, index=False)
    print("| " + " | ".join(table.columns) + " |")
    print("|" + "---|" * len(table.columns))
    for row in table.itertuples(index=False):
        print("| " + " | ".join("" if pd.isna(v) else (f"{v:.3f}" if isinstance(v, float) else str(v))
                                for v in row) + " |")
    return path
