"""``mitotype adapt`` under leave-one-source-out: does adapting to a new lab's unlabelled crops help?

For a model trained without one AMi-Br source (MIDOG21 or TUPAC16), the held-out source's slides are split
in two halves (deterministically: slides by decreasing figure count, each to the half with fewer figures).
``mitotype adapt`` runs on one half's crops (labels unused) and both models are tested on the other half;
then the halves swap. Per fold: balanced accuracy and AUROC of the unadapted and the adapted model with
paired slide-bootstrap 95 % intervals of the difference (``metrics.paired_bootstrap``), the
prevalence EM estimated on the adaptation half against its true one, and the log-loss / ECE of
P(atypical) on the test half. Also shown: the adapted model with its decision kept at the old threshold on
the re-weighted P (the prior-aware Bayes rule for the error rate, which balanced accuracy does not reward).

    python scripts/adapt_lodo.py --model /tmp/lodo_MIDOG21.pt --source MIDOG21 --out results/adapt_lodo/MIDOG21
    python scripts/adapt_lodo.py ... --tent          # also the TENT variant

Writes OUT/results.json and OUT/results.md (the table printed at the end); the adapted model files are
temporary.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np


def split_slides(figures: list) -> tuple[list[int], list[int]]:
    """Two halves of the figures, whole slides each, balanced in figure count; no randomness."""
    counts = Counter(f.group for f in figures)
    halves: tuple[set, set] = (set(), set())
    sizes = [0, 0]
    for slide, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        k = int(sizes[1] < sizes[0])
        halves[k].add(slide)
        sizes[k] += n
    return ([i for i, f in enumerate(figures) if f.group in halves[0]],
            [i for i, f in enumerate(figures) if f.group in halves[1]])


def metrics_of(labels, probs, threshold) -> dict:
    from mitotype.metrics import calibration, point_metrics
    from mitotype.models.calibration import log_loss

    out = point_metrics(labels, probs, threshold)
    return {**{k: out[k] for k in ("balanced_accuracy", "auroc", "sensitivity", "specificity")},
            "log_loss": log_loss(labels, probs), "ece": calibration(labels, probs)["ece"], "threshold": threshold}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a model file trained without --source")
    parser.add_argument("--source", required=True, help="the held-out AMi-Br source (MIDOG21 or TUPAC16)")
    parser.add_argument("--data", default="amibr:../shared/data/amibr:domain=source")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--tent", action="store_true", help="also adapt with --tent")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from mitotype.cli import main as mitotype
    from mitotype.data.images import load_images
    from mitotype.data.spec import load_figures
    from mitotype.io import write_json, write_text
    from mitotype.metrics import paired_bootstrap
    from mitotype.models.inference import predict_proba
    from mitotype.models.modelfile import load_model, read_payload

    torch.set_num_threads(args.threads)
    figures = [f for f in load_figures(args.data) if f.domain == args.source]
    if not figures:
        raise SystemExit(f"no figures of source {args.source!r} in {args.data}")
    base = load_model(args.model)
    crop = base.config.model.crop_size
    images = load_images(figures, size=crop)
    labels = np.array([f.label for f in figures])
    groups = np.array([f.group for f in figures])
    halves = split_slides(figures)
    variants = ["adabn+em"] + (["adabn+em+tent"] if args.tent else [])
    args.out.mkdir(parents=True, exist_ok=True)
    folds = []
    for k, (adapt_idx, test_idx) in enumerate([halves, halves[::-1]]):
        fold = {"fold": f"{'AB'[k]}->{'BA'[k]}", "n_adapt": len(adapt_idx), "n_test": len(test_idx),
                "slides_adapt": len(set(groups[adapt_idx])), "slides_test": len(set(groups[test_idx])),
                "prevalence_adapt": float(labels[adapt_idx].mean()), "prevalence_test": float(labels[test_idx].mean())}
        y, g = labels[test_idx], groups[test_idx].tolist()
        p0 = predict_proba([base], images[test_idx], backend="torch")
        fold["unadapted"] = metrics_of(y, p0, base.threshold)
        with tempfile.TemporaryDirectory() as tmp:
            crops = Path(tmp) / "crops"
            crops.mkdir()
            for i in adapt_idx:  # the command reads a folder: links to the half's crops, labels left behind
                os.symlink(os.path.abspath(figures[i].path), crops / f"{i}_{Path(figures[i].path).name}")
            for variant in variants:
                out = Path(tmp) / f"fold{k}_{variant}.pt"  # a model file per fold: not kept
                argv = ["adapt", "--model", args.model, "--images", str(crops), "--out", str(out),
                        "--threads", str(args.threads)] + (["--tent"] if "tent" in variant else [])
                if mitotype(argv) != 0:
                    raise SystemExit(f"mitotype {' '.join(argv)} failed")
                adapted = load_model(out)
                record = read_payload(out)["adaptation"]
                p1 = predict_proba([adapted], images[test_idx], backend="torch")
                result = metrics_of(y, p1, adapted.threshold)
                result["prior_estimate"] = record["prior_new"]
                # the same network, decided at the unmoved threshold on the re-weighted P (Bayes for the error
                # rate under the new prior): what a prior-aware threshold would do to balanced accuracy
                result["old_threshold_rule"] = metrics_of(y, p1, base.threshold)
                for metric in ("balanced_accuracy", "auroc"):
                    r = paired_bootstrap(y, p1[None], p0[None], adapted.threshold, base.threshold, groups=g,
                                         metric=metric, n_boot=args.n_boot)
                    result[f"delta_{metric}"] = {"delta": r["delta"], "ci": r["ci"]}
                fold[variant] = result
        folds.append(fold)
        print(json.dumps(fold, indent=1))
    summary = {"model": args.model, "source": args.source, "data": args.data, "n_figures": len(figures),
               "n_boot": args.n_boot, "folds": folds}
    write_json(args.out / "results.json", summary)
    write_text(args.out / "results.md", table(summary, variants))
    print(table(summary, variants))


def table(summary: dict, variants: list[str]) -> str:
    def ci(d: dict) -> str:
        lo, hi = d["ci"] or (float("nan"), float("nan"))
        return f"{d['delta']:+.3f} [{lo:+.3f}, {hi:+.3f}]"

    lines = [f"held out: {summary['source']} ({summary['n_figures']} figures), model {summary['model']}", "",
             "| fold (adapt->test) | model | bal. acc. | AUROC | Δ bal. acc. [95 % CI] | Δ AUROC [95 % CI] | "
             "sens. / spec. | log-loss | ECE | prevalence: EM / true |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for f in summary["folds"]:
        u = f["unadapted"]
        lines.append(f"| {f['fold']} ({f['n_adapt']}->{f['n_test']}) | unadapted | {u['balanced_accuracy']:.3f} | "
                     f"{u['auroc']:.3f} | | | {u['sensitivity']:.3f} / {u['specificity']:.3f} | {u['log_loss']:.3f} | "
                     f"{u['ece']:.3f} | |")
        for v in variants:
            a = f[v]
            lines.append(f"| | {v} | {a['balanced_accuracy']:.3f} | {a['auroc']:.3f} | "
                         f"{ci(a['delta_balanced_accuracy'])} | {ci(a['delta_auroc'])} | "
                         f"{a['sensitivity']:.3f} / {a['specificity']:.3f} | "
                         f"{a['log_loss']:.3f} | {a['ece']:.3f} | {a['prior_estimate']:.3f} / "
                         f"{f['prevalence_adapt']:.3f} |")
            o = a["old_threshold_rule"]
            lines.append(f"| | {v}, old threshold | {o['balanced_accuracy']:.3f} | | | | "
                         f"{o['sensitivity']:.3f} / {o['specificity']:.3f} | | | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
