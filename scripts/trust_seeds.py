"""The trust measurements of several seeds per held-out source (``scripts/trust_lodo.sh`` outputs), summarised.

    python scripts/trust_seeds.py results/trust_lodo/stl224

reads ROOT/SOURCE/seedN/eval_a01/metrics.json (shift detector, conformal coverage at alpha 0.1) and
ROOT/SOURCE/seedN/adapt/results.json (``scripts/adapt_lodo.py``: two folds per seed) and prints, per held-out
source, mean ± sd over seeds (and over the seeds' folds for adaptation) with the count of folds whose
paired slide-bootstrap interval lies above / below 0. Writes ROOT/summary.md and ROOT/summary.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

TRUST = {"detector AUROC": ("shift", "detector_auroc"), "shift median": ("shift", "median"),
         "crops > 1.0": ("shift", "share_above_1"), "coverage normal": ("conformal", "normal"),
         "coverage atypical": ("conformal", "atypical"), "flagged": ("conformal", "flagged")}
VARIANTS = ("adabn+em", "adabn+em+tent")


def mean_sd(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.3f}"


def summarise(root: Path) -> dict:
    out = {}
    for source_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        seeds = sorted(source_dir.glob("seed*"))
        evals = [json.loads((s / "eval_a01" / "metrics.json").read_text()) for s in seeds]
        adapts = [json.loads((s / "adapt" / "results.json").read_text()) for s in seeds]
        row = {"seeds": [s.name for s in seeds], "n": evals[0]["n"],
               "balanced_accuracy": [e["balanced_accuracy"] for e in evals], "auroc": [e["auroc"] for e in evals]}
        for name, (part, key) in TRUST.items():
            row[name] = [e["trust"][part]["all"][key] for e in evals]
        row["warning"] = [bool(e["trust"]["shift"].get("warning")) for e in evals]
        for variant in VARIANTS:
            folds = [f for a in adapts for f in a["folds"] if variant in f]
            for metric in ("balanced_accuracy", "auroc"):
                deltas = [f[variant][f"delta_{metric}"] for f in folds]
                row[f"{variant} Δ {metric}"] = {
                    "deltas": [d["delta"] for d in deltas],
                    "above": sum(d["ci"][0] > 0 for d in deltas), "below": sum(d["ci"][1] < 0 for d in deltas)}
        out[source_dir.name] = row
    return out


def table(summary: dict) -> str:
    lines = ["| held out | seeds | model BA | AUROC | " + " | ".join(TRUST) + " | warning |",
             "|---|---|---|---|" + "---|" * len(TRUST) + "---|"]
    for source, r in summary.items():
        lines.append(f"| {source} ({r['n']}) | {len(r['seeds'])} | {mean_sd(r['balanced_accuracy'])} | "
                     f"{mean_sd(r['auroc'])} | " + " | ".join(mean_sd(r[k]) for k in TRUST)
                     + f" | {sum(r['warning'])} of {len(r['warning'])} |")
    lines += ["", "| held out | adaptation | Δ bal. acc. (mean ± sd over folds) | folds above / below 0 | "
              "Δ AUROC | folds above / below 0 |", "|---|---|---|---|---|---|"]
    for source, r in summary.items():
        for v in VARIANTS:
            ba, au = r[f"{v} Δ balanced_accuracy"], r[f"{v} Δ auroc"]
            if not ba["deltas"]:
                continue
            lines.append(f"| {source} | {v} | {mean_sd(ba['deltas'])} (n = {len(ba['deltas'])}) | "
                         f"{ba['above']} / {ba['below']} | {mean_sd(au['deltas'])} | {au['above']} / {au['below']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder of SOURCE/seedN outputs of scripts/trust_lodo.sh")
    args = parser.parse_args()
    from mitotype.io import write_json, write_text

    summary = summarise(args.root)
    write_json(args.root / "summary.json", summary)
    write_text(args.root / "summary.md", table(summary))
    print(table(summary))


if __name__ == "__main__":
    main()
