"""Re-score an experiment's finished runs with their LAST epoch instead of the chosen checkpoint.

Checkpoint choice on a few hundred validation figures is noisy (docs/RESULTS.md section 3): this takes every
run's ``train/checkpoints/last.ckpt`` (all runs trained the same number of epochs), predicts its test part
and tabulates AUROC (threshold-free: a checkpoint has no tuned threshold) with the paired difference to
reference configs, 95 % interval resampling test slides and seeds, as `mitotype experiment` does.

    python3 experiments/last_epoch.py --config experiments/amibr_levers.yaml --out results/amibr_levers \
        --reference stl --reference mtl

Writes ``last_epoch.csv`` (one row per config and reference) into --out and prints it as Markdown, and
each run's last-epoch P(atypical) to ``eval/last_epoch_p_atypical.csv`` (reused by the next call). Weights are
not committed, so a first call runs where the experiment ran; later ones need only the cached files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from mitotype.data.images import load_images
from mitotype.data.spec import load_figures
from mitotype.evaluate import experiment as E
from mitotype.io import atomic_write
from mitotype.models.inference import predict_proba
from mitotype.models.modelfile import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="experiment YAML")
    parser.add_argument("--out", required=True, help="the experiment's output folder")
    parser.add_argument("--reference", action="append", default=[], help="config to take differences against")
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    exp = E.load_experiment(args.config)
    runs = E.plan_runs(exp, E.load_data(exp))
    out = Path(args.out)
    ready = {}
    for run in runs:
        d = out / "runs" / run.id
        ckpt = d / "train" / "checkpoints" / "last.ckpt"
        cached = d / "eval" / "last_epoch_p_atypical.csv"  # small, committed; reused while last.ckpt is unchanged
        if E.run_state(d) != "done" or not (ckpt.is_file() or cached.is_file()):
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
        ready[key] = E.pooled_predictions(pd.DataFrame({
            "path": [f.path for f in figures], "page": [f.page for f in figures],
            "label": [f.label for f in figures], "group": [f.group for f in figures],
            "p_atypical": probs, "threshold": 0.5}))
        print(f"{run.id}: last-epoch AUROC {float(E._seed_metric(ready[key], 'auroc')[0]):.3f}", flush=True)
    rows = []
    for test_set in dict.fromkeys(r.test_set for r in runs):
        for config in exp.configs:
            seeds = [s for s in exp.seeds if (test_set, config, s) in ready]
            if not seeds:
                continue
            values = [float(E._seed_metric(ready[(test_set, config, s)], "auroc")[0]) for s in seeds]
            row = {"test_set": test_set, "config": config, "n_seeds": len(seeds), "auroc": float(np.mean(values)),
                   "values": ";".join(f"{v:.4f}" for v in values)}
            for ref in args.reference:
                common = [s for s in seeds if (test_set, ref, s) in ready]
                if ref != config and common:
                    p = E._paired(ready, test_set, config, ref, common, "auroc", args.n_boot, 0)
                    row[f"delta_vs_{ref}"] = f"{p['delta']:+.3f} [{p['delta_ci_low']:+.3f}, {p['delta_ci_high']:+.3f}]"
            rows.append(row)
    table = pd.DataFrame(rows)
    with atomic_write(out / "last_epoch.csv", newline="") as fh:
        table.to_csv(fh, index=False)
    print("| " + " | ".join(table.columns) + " |")
    print("|" + "---|" * len(table.columns))
    for row in table.itertuples(index=False):
        print("| " + " | ".join("" if pd.isna(v) else (f"{v:.3f}" if isinstance(v, float) else str(v))
                                for v in row) + " |")


if __name__ == "__main__":
    main()
