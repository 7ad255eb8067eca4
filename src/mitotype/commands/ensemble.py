"""Join trained model files into one ensemble model file: P(atypical) is the mean of the members'.

The file loads wherever a model file does (predict, evaluate, challenge, explain, export), so an ensemble
ships and runs as one model. Members must share their preprocessing (crop size, input size, µm/px,
mean/std). The threshold is the mean of the members' tuned thresholds unless --threshold gives one.

Examples:
  mitotype ensemble runs/seed0/model.pt runs/seed1/model.pt runs/seed2/model.pt --out ensemble.pt
  mitotype evaluate --model ensemble.pt --data amibr:../shared/data/amibr:split=test --tta
"""

from __future__ import annotations

import argparse

from mitotype.commands.options import probability


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", metavar="MODEL", help="member model files (model.pt), two or more")
    parser.add_argument("--out", required=True, metavar="FILE.pt", help="the ensemble model file to write")
    parser.add_argument("--threshold", type=probability, default=None, metavar="T",
                        help="its decision threshold (default: the mean of the members' thresholds)")


def run(args: argparse.Namespace) -> int:
    from mitotype.io import check_output_file
    from mitotype.models.modelfile import load_model, save_ensemble

    check_output_file(args.out)
    path = save_ensemble(args.out, args.models, threshold=args.threshold)
    loaded = load_model(path)  # proves it loads before saying so
    print(f"{path}: ensemble of {len(args.models)} models, threshold {loaded.threshold:.4f}")
    return 0
