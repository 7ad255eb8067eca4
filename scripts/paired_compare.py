"""Paired difference of two evaluations of the same figures (``mitotype evaluate`` output folders).

Each folder's ``predictions.csv`` and stored threshold (``metrics.json``) are read; the difference A - B of
balanced accuracy, AUROC, sensitivity and specificity is printed with its 95 % slide-bootstrap interval
(``metrics.paired_bootstrap``, resampling the slides/groups of the figures).

    python scripts/paired_compare.py EVAL_A EVAL_B [--n-boot 1000]
    python scripts/paired_compare.py ENSEMBLE SEED0 SEED1 SEED2   # A against each B, averaged

With several B folders (e.g. the seeds of a single network), A is paired with each of them (or, with as
many A folders as B folders given by ``--a-seeds``, seed s of A with seed s of B) and the interval covers
slide-to-slide and seed-to-seed variation (``paired_bootstrap``'s two-stage resampling).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from mitotype.metrics import paired_bootstrap


def read(folder: Path) -> tuple[pd.DataFrame, float]:
    table = pd.read_csv(folder / "predictions.csv")
    return table, float(json.loads((folder / "metrics.json").read_text())["threshold"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path, nargs="+")
    parser.add_argument("--a-seeds", type=Path, nargs="*", default=[],
                        help="further A folders, one per B folder after the first (seed s against seed s)")
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    a_dirs = [args.a, *args.a_seeds] if args.a_seeds else [args.a] * len(args.b)
    if len(a_dirs) != len(args.b):
        raise SystemExit(f"{len(a_dirs)} A folders but {len(args.b)} B folders")
    a_runs, b_runs = [read(d) for d in a_dirs], [read(d) for d in args.b]
    names = list(a_runs[0][0]["path"].map(lambda p: Path(p).name))
    for table, _ in a_runs + b_runs:
        if list(table["path"].map(lambda p: Path(p).name)) != names:
            raise SystemExit("the evaluations are not of the same figures in the same order")
    labels, groups = a_runs[0][0]["label"].to_numpy(), a_runs[0][0]["group"].tolist()
    pa = np.stack([t["p_atypical"].to_numpy() for t, _ in a_runs])
    pb = np.stack([t["p_atypical"].to_numpy() for t, _ in b_runs])
    ta = np.array([[t] for _, t in a_runs])
    tb = np.array([[t] for _, t in b_runs])
    for metric in ("balanced_accuracy", "auroc", "sensitivity", "specificity"):
        r = paired_bootstrap(labels, pa, pb, ta, tb, groups=groups, metric=metric, n_boot=args.n_boot)
        lo, hi = r["ci"]
        print(f"{metric:18s} {r['delta']:+.3f} [{lo:+.3f}, {hi:+.3f}]")


if __name__ == "__main__":
    main()
