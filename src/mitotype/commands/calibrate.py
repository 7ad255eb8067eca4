"""Calibrate a model's P(atypical) and give it conformal prediction sets, on held-out labelled figures.

Temperature scaling is fitted by maximum likelihood and baked into the network's last layer (the ranking
and the decision are unchanged; the threshold is mapped with it); the class-conditional conformal
reference (nonconformity scores per class) and the shift reference (a PCA of the figures' pooled encoder
features, for the shift score and warning of predict/evaluate) are stored beside it, so that `predict` can
add a prediction set per figure (normal, atypical, or both = uncertain) with a guaranteed per-class
coverage of 1 - alpha, and a shift score.
Use data the model was not trained on: `--data val` rebuilds the model's own validation part.

Examples:
  mitotype calibrate --model runs/x/model.pt --data val --out runs/x/model_calibrated.pt
  mitotype calibrate --model default --data val --out calibrated.pt --alpha 0.05
"""

from __future__ import annotations

import argparse

from mitotype.commands.options import positive_int


def _alpha(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", metavar="M", help="model file, or 'default' (default)")
    parser.add_argument("--data", required=True, metavar="SPEC",
                        help="held-out labelled data spec, or 'val' for the model's own validation part")
    parser.add_argument("--out", required=True, metavar="FILE.pt", help="the calibrated model file to write")
    parser.add_argument("--alpha", type=_alpha, default=0.1, metavar="A",
                        help="default error level of the prediction sets (coverage 1 - A per class). "
                             "Default: %(default)s")
    parser.add_argument("--batch-size", type=positive_int, default=64, metavar="N",
                        help="figures per batch (default 64)")


def run(args: argparse.Namespace) -> int:
    import sys

    from mitotype.io import check_output_file
    from mitotype.models.calibrate import calibrate

    check_output_file(args.out)
    fitted = calibrate(args.model, args.data, args.out, alpha=args.alpha, batch_size=args.batch_size,
                       progress=sys.stderr.isatty())
    print(f"{args.out}: temperature {fitted['temperature']:.3f} fitted on {fitted['n']} figures "
          f"({fitted['n_atypical']} atypical) of {fitted['fitted_on']}\n"
          f"  log-loss {fitted['log_loss_before']:.4f} -> {fitted['log_loss_after']:.4f}, "
          f"ECE {fitted['ece_before']:.3f} -> {fitted['ece_after']:.3f}, "
          f"threshold {fitted['threshold_before']:.4f} -> {fitted['threshold_after']:.4f}\n"
          f"  shift reference: PCA of the pooled features of {len(fitted['shift_channels'])} encoder stages "
          f"({'+'.join(map(str, fitted['shift_channels']))} channels, ranks "
          f"{'/'.join(map(str, fitted['shift_ranks']))})")
    return 0
