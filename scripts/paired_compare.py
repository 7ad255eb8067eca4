"""Paired difference of two evaluations of the same figures (``mitotype evaluate`` output folders).

Each folder's ``predictions.csv`` and stored threshold (``metrics.json``) are read; the difference A - B of
balanced accuracy, AUROC, sensitivity and specificity is printed with its 95 % slide-bootstrap interval
(``metrics.paired_bootstrap``, resampling the slides/groups of the figures).

    python scripts/paired_compare.py EVAL_A EVAL_B [--n-boot 1000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from mitotype.metrics import paired_bootstrap


def read(folder: Path) -> tuple[pd.DataFrame, float]:
    table = pd.read_csv(folder / "predictions.csv")
    return table, float(json.loads((folder / "metrics.json").read_text())["threshold"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    (a, ta), (b, tb) = read(args.a), read(args.b)
    if list(a["path"].map(lambda p: Path(p).name)) != list(b["path"].map(lambda p: Path(p).name)):
        raise SystemExit("the two evaluations are not of the same figures in the same order")
    for metric in ("balanced_accuracy", "auroc", "sensitivity", "specificity"):
        r = paired_bootstrap(a["label"].to_numpy(), a["p_atypical"].to_numpy()[None], b["p_atypical"].to_numpy()[None],
                             ta, tb, groups=a["group"].tolist(), metric=metric, n_boot=args.n_boot)
        lo, hi = r["ci"]
        print(f"{metric:18s} {r['delta']:+.3f} [{lo:+.3f}, {hi:+.3f}]")


if __name__ == "__main__":
    main()
