"""Join trained model files into one ensemble model file: P(atypical) is the mean of the members'.

The file loads wherever a model file does (predict, evaluate, challenge, explain, export), so an ensemble
ships and runs as one model. Members must share their preprocessing (crop size, input size, µm/px,
mean/std). The threshold is the mean of the members' tuned thresholds unless --threshold gives one. With
--tta the file asks for 8-fold dihedral test-time augmentation wherever it runs (no --tta needed later).

Examples:
  mitotype ensemble runs/seed0/model.pt runs/seed1/model.pt runs/seed2/model.pt --out ensemble.pt
  mitotype ensemble runs/seed0/model.pt runs/seed1/model.pt --tta --out accurate.pt
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
    parser.add_argument("--tta", action="store_true",
                        help="store 8-fold dihedral test-time augmentation in the file: every run of it "
                             "averages the flips and 90-degree rotations (8x the time)")


def run(args: argparse.Namespace) -> int:
    from mitotype.io import check_output_file
    from mitotype.models.modelfile import load_model, save_ensemble

    check_output_file(args.out)
    path = save_ensemble(args.out, args.models, threshold=args.threshold, tta=args.tta)
    loaded = load_model(path)  # proves it loads before saying so
    print(f"{path}: ensemble of {len(args.models)} models, threshold {loaded.threshold:.4f}"
          f"{', 8-fold TTA stored' if args.tta else ''}")
    return 0
