"""Which decision threshold holds on held-out data: the one tuned on the validation part, or 0.5?

Reads every committed experiment run under results/ (its ``eval/predictions.csv`` and the stored threshold in
``eval/metrics.json``) and prints the held-out balanced accuracy at both, per protocol, with the mean paired
difference. Leave-one-source-out runs answer the question without the AMi-Br test split.

    python scripts/threshold_rules.py [results]
"""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def balanced_accuracy(labels: np.ndarray, probs: np.ndarray, threshold: float) -> float:
    called = probs >= threshold
    return 0.5 * (called[labels == 1].mean() + (~called[labels == 0]).mean())


def main(root: Path) -> None:
    by_protocol: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for predictions in sorted(root.glob("*/runs/**/eval/predictions.csv")):
        metrics = predictions.with_name("metrics.json")
        if not metrics.is_file():
            continue
        rows = list(csv.DictReader(predictions.open()))
        labels = np.array([int(r["label"]) for r in rows])
        probs = np.array([float(r["p_atypical"]) for r in rows])
        stored = float(json.loads(metrics.read_text())["threshold"])
        run = predictions.parent.parent.relative_to(root)
        protocol = "published" if "/published/" in str(run) else "leave-one-source-out"
        tuned, half = balanced_accuracy(labels, probs, stored), balanced_accuracy(labels, probs, 0.5)
        by_protocol[protocol].append((tuned, half))
        print(f"{str(run):60s} stored {stored:.3f}  BA {tuned:.3f}  at 0.5 {half:.3f}  {half - tuned:+.3f}")
    for protocol, pairs in by_protocol.items():
        a = np.array(pairs)
        d = a[:, 1] - a[:, 0]
        print(f"{protocol}: {len(a)} runs, BA at stored {a[:, 0].mean():.4f}, at 0.5 {a[:, 1].mean():.4f}, "
              f"mean difference {d.mean():+.4f} (sd {d.std(ddof=1):.4f}), 0.5 better in {(d > 0).mean():.0%}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "results"))
