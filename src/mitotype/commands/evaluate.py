"""Evaluate a model (or an ensemble) on labelled data: MIDOG 2025 track-2 metrics with bootstrap 95%
intervals (resampling slides where known), per domain, plus plots and a Markdown report.

Writes to --out: metrics.json, predictions.csv, roc.png, confusion.png, domains.png, reliability.png,
errors.png (the false positives and negatives, most wrong first), report.md, run.json.  Several --model
options make an ensemble: the mean P(atypical) of the models, with the mean of their stored thresholds (or
--threshold).

Examples:
  mitotype evaluate --model runs/mtl/model.pt --data amibr:../shared/data/amibr:split=test
  mitotype evaluate --model fold0.pt --model fold1.pt --data folder:external/ROOT --out eval/ext --tta
"""

from __future__ import annotations

import argparse

from mitotype.commands.options import (
    add_model_arguments,
    add_tta_argument,
    non_negative_int,
    positive_int,
    probability,
    random_seed,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, required=True)  # --model (repeat: an ensemble), --batch-size, --device
    parser.add_argument("--data", required=True, metavar="SPEC",
                        help="labelled data set spec, e.g. amibr:PATH:split=test, folder:PATH, manifest:CSV, "
                             "midog25:CSV:IMAGEDIR:domain=scanner, stack:FILE:gt=JSON ('+' joins several)")
    parser.add_argument("--out", default="runs/evaluate", metavar="DIR",
                        help="output folder (created; existing files are replaced). Default: %(default)s")
    add_tta_argument(parser)
    parser.add_argument("--n-boot", type=non_negative_int, default=1000, metavar="N",
                        help="bootstrap resamples for the 95%% intervals (0 = no intervals). Default: %(default)s")
    parser.add_argument("--threshold", type=probability, default=None, metavar="T",
                        help="call a figure atypical when P(atypical) >= T; default: the model file's tuned "
                             "threshold (the mean of them for an ensemble)")
    parser.add_argument("--size-policy", choices=("center-crop", "resize", "error"), default="center-crop",
                        help="crops whose size differs from the model's: center-crop (pad/crop around the "
                             "centre, keeps the scale), resize, or error. Default: %(default)s")
    parser.add_argument("--seed", type=random_seed, default=0, help="bootstrap seed. Default: %(default)s")
    parser.add_argument("--alpha", type=float, default=None, metavar="A",
                        help="error level of the prediction sets whose coverage is reported, in (0, 1) "
                             "(default 0.1; needs a calibrated model file, see `mitotype calibrate`)")
    parser.add_argument("--threads", type=positive_int, metavar="N",
                        help="threads of the network (default: $OMP_NUM_THREADS, else all cores)")


def run(args: argparse.Namespace) -> int:
    import sys

    from mitotype.commands.options import check_device
    from mitotype.evaluate.report import fmt
    from mitotype.evaluate.run import evaluate
    from mitotype.io import check_output_dir
    from mitotype.models.trust import check_alpha

    check_alpha(args.alpha)
    check_output_dir(args.out)
    check_device(args.device)

    result = evaluate(args.model, args.data, args.out, tta=args.tta, batch_size=args.batch_size,
                      device=args.device, n_boot=args.n_boot, threshold=args.threshold,
                      size_policy=args.size_policy, seed=args.seed, progress=sys.stderr.isatty(),
                      alpha=args.alpha, threads=args.threads)
    ci = result["ci95"]
    print(f"{result['n']} figures ({result['n_atypical']} atypical), threshold {result['threshold']:.4f}")
    for name in ("balanced_accuracy", "auroc", "sensitivity", "specificity", "accuracy"):
        print(f"  {name:18s} {fmt(result[name], ci.get(name))}")
    for domain, m in result["per_domain"].items():
        print(f"  [{domain}] balanced_accuracy {fmt(m['balanced_accuracy'], m['ci95'].get('balanced_accuracy'))}"
              f"  auroc {fmt(m['auroc'])}  n={m['n']}")
    trust = result.get("trust", {})
    if "conformal" in trust:
        c = trust["conformal"]["all"]
        print(f"  prediction sets (alpha {trust['conformal']['alpha']:g}): coverage normal {fmt(c['normal'])}, "
              f"atypical {fmt(c['atypical'])}; flagged {fmt(c['flagged'])}")
    if "shift" in trust:
        sh = trust["shift"]["all"]
        print(f"  shift score: median {sh['median']:.2f}, {sh['share_above_1']:.1%} above 1.0, AUROC vs in-domain "
              f"validation {fmt(sh['detector_auroc'])}")
        if trust["shift"]["warning"]:
            print(trust["shift"]["warning"], file=sys.stderr)
    print(f"wrote {args.out}/report.md, metrics.json, predictions.csv and plots")
    return 0
