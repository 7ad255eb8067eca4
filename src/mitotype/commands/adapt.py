"""Adapt a model to a lab's own scanner and stain from a folder of its unlabelled figure crops.

No labels are needed. The new model file gets:
  - batch-norm statistics re-estimated on the crops (AdaBN): the mean and variance every layer normalises
    with, which a new scanner or stain moves; no weight changes;
  - the lab's share of atypical figures, estimated by EM from the adapted model's P(atypical) (Saerens et
    al. 2002), and P(atypical) re-weighted to it, so that it reads as a probability for this lab; the
    threshold moves with it, so every decision stays the one the stored threshold makes;
  - with --tent, first a pass of test-time entropy minimisation over the batch-norm scale and shift (TENT;
    optional: measured in docs/TRUST.md, it can also hurt).
Everything done is recorded under `adaptation` in the file; predict, evaluate and challenge use it as any
model file. Give at least 64 crops (one per figure, centred, at the model's scale, e.g. 128 x 128 px at
0.25 um/px), ideally hundreds from many slides: the statistics follow whatever the folder holds. The
conformal and shift-score references of `mitotype calibrate` are dropped (fitted before adaptation).

Examples:
  mitotype adapt --model default --images lab_crops/ --out adapted.pt
  mitotype adapt --model runs/x/model.pt --images scanner_a/ scanner_b/ --out adapted.pt --tent --threads 1
"""

from __future__ import annotations

import argparse

from mitotype.commands.options import positive_int

MIN_IMAGES = 64  # models.adapt.MIN_IMAGES (not imported here: --help must not import numpy)


def _open_probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", metavar="M", help="model file, or 'default' (default)")
    parser.add_argument("--images", required=True, nargs="+", metavar="DIR",
                        help="folder(s) of the lab's unlabelled crops (searched recursively; PNG, JPEG, TIFF "
                             "and every page of a TIFF stack)")
    parser.add_argument("--out", required=True, metavar="FILE.pt", help="the adapted model file to write")
    parser.add_argument("--tent", action="store_true",
                        help="also minimise the prediction entropy over the batch-norm parameters (optional)")
    parser.add_argument("--source-prior", type=_open_probability, metavar="P",
                        help="share of atypical figures the model's P(atypical) assumes (default: 0.5 for a "
                             "model trained with balanced classes, else the training part's prevalence)")
    parser.add_argument("--min-images", type=positive_int, default=MIN_IMAGES, metavar="N",
                        help="refuse fewer crops than this (default %(default)s; fewer make noisy statistics)")
    parser.add_argument("--batch-size", type=positive_int, default=64, metavar="N",
                        help="crops per batch (default 64; batch-norm statistics are averaged over batches)")
    parser.add_argument("--threads", type=positive_int, metavar="N",
                        help="torch threads (default: $OMP_NUM_THREADS, else all cores)")


def run(args: argparse.Namespace) -> int:
    import sys

    from mitotype.io import check_output_file

    check_output_file(args.out)
    import torch

    from mitotype.models.adapt import adapt

    if args.threads:
        torch.set_num_threads(args.threads)
    record = adapt(args.model, args.images, args.out, use_tent=args.tent, batch_size=args.batch_size,
                   min_images=args.min_images, prior=args.source_prior, progress=sys.stderr.isatty())
    for warning in record["warnings"]:
        print(f"mitotype adapt: warning: {warning}", file=sys.stderr)
    print(f"{args.out}: {record['method']} on {record['n']} crops; {record['bn_layers_updated']} batch-norm "
          f"layers re-estimated\n"
          f"  share of atypical figures {record['prior_old']:.3f} ({record['prior_old_from']}) -> "
          f"{record['prior_new']:.3f} (EM, {record['em_iterations']} iterations)\n"
          f"  threshold {record['threshold_old']:.4f} -> {record['threshold_new']:.4f} (same decisions on "
          "the re-weighted P(atypical))")
    return 0
