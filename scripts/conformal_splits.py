"""Coverage of class-conditional conformal sets when the calibration figures are exchangeable with the test
figures: the slides of one evaluation's ``predictions.csv`` split at random into a calibration half and a
test half, the sets calibrated on the first (``models.calibration``, the code the model file's reference
uses) and their coverage per class measured on the second, repeated over many splits.

This separates what the method guarantees (coverage >= 1 - alpha on average when calibration and test
figures come from the same slides' population) from what one model file's stored reference gives on one
test set (its validation part is a different, smaller population: docs/TRUST.md).

    python scripts/conformal_splits.py EVAL_DIR [--alpha 0.1 0.2] [--splits 500] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from mitotype.models.calibration import conformal_scores, coverage, prediction_sets


def split_coverage(table: pd.DataFrame, alpha: float, splits: int, seed: int) -> pd.DataFrame:
    """One row per split: coverage normal / atypical and the share flagged on the held-out half."""
    rng = np.random.default_rng(seed)
    slides = table["group"].unique()
    rows = []
    for _ in range(splits):
        cal = set(rng.permutation(slides)[: len(slides) // 2])
        in_cal = table["group"].isin(cal).to_numpy()
        a, b = table[in_cal], table[~in_cal]
        scores = conformal_scores(a["label"], a["p_atypical"])
        rows.append(coverage(b["label"], prediction_sets(b["p_atypical"], scores, alpha)))
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eval_dir", type=Path, help="a `mitotype evaluate --out` folder (predictions.csv)")
    parser.add_argument("--alpha", type=float, nargs="+", default=[0.1, 0.2])
    parser.add_argument("--splits", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    table = pd.read_csv(args.eval_dir / "predictions.csv")
    print(f"{args.eval_dir}: {len(table)} figures, {table['group'].nunique()} slides, {args.splits} splits "
          "(half the slides calibrate, the other half is tested)")
    print("| alpha | coverage normal: mean [5 %, 95 %] | coverage atypical: mean [5 %, 95 %] | flagged (mean) |")
    print("|---|---|---|---|")
    for alpha in args.alpha:
        c = split_coverage(table, alpha, args.splits, args.seed)

        def cell(col: str) -> str:
            v = c[col].dropna()
            return f"{v.mean():.3f} [{v.quantile(0.05):.3f}, {v.quantile(0.95):.3f}]"

        print(f"| {alpha} | {cell('normal')} | {cell('atypical')} | {c['flagged'].mean():.1%} |")


if __name__ == "__main__":
    main()
