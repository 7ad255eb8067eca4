"""Compute the auxiliary targets (figure mask; pixel classes and centre heatmap derive from it) with a report.

  mitotype masks SPEC --out DIR [--limit N]

Writes into DIR:
  masks/NAME.png      one mask per figure, named after the figure: palette PNG whose pixel values are
                      0 background, 1 figure, 255 ignore (black zero-padding); viewers show black/white/grey
  masks.csv           per figure: name, path, label, domain, area, fallback, centre_hit, com_distance, pieces
  masks_report.json   n, n_fallback, fallback_rate, centre_hit_rate, area percentiles (pixels), and the same
                      per class and per domain; parameters and provenance
  masks_report.md     the same as tables
  gallery.png         crops with mask contours: random atypical and normal figures, fallbacks,
                      masks missing the centre region, the largest and the smallest masks

The masks are also cached (mitotype.data.cache_dir('masks')), which is what training reads. The report itself:
mitotype.data.mask_report. The method and what it gets wrong: docs/MASKS.md.
"""

from __future__ import annotations

import argparse

from mitotype.commands.options import int_range, positive_int, random_seed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="data-set spec, e.g. amibr:../shared/data/amibr")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument("--limit", type=positive_int, metavar="N",
                        help="only a random sample of N figures (seeded by --seed), for a quick look")
    parser.add_argument("--size", type=int_range(16, 1024), default=128, metavar="PX",
                        help="crop size in pixels that images are brought to, 16 to 1024 (default 128)")
    parser.add_argument("--policy", choices=["center-crop", "resize", "error"], default="center-crop",
                        help="what to do with images of another size (default center-crop)")
    parser.add_argument("--gallery", type=positive_int, default=16, metavar="K",
                        help="random atypical and random normal figures each in the gallery (default 16)")
    parser.add_argument("--seed", type=random_seed, default=0,
                        help="seed of --limit and of the gallery sample (default 0)")
    parser.add_argument("--workers", type=positive_int, metavar="N",
                        help="processes for the segmentation (default: the CPUs available, at most 8)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from mitotype.data.mask_report import write_mask_report
    from mitotype.io import check_output_dir

    out = check_output_dir(args.out)
    report = write_mask_report(args.spec, out, limit=args.limit, size=args.size, policy=args.policy,
                               gallery=args.gallery, seed=args.seed, workers=args.workers,
                               progress=not args.no_progress)
    print(f"{report['n']} masks in {report['seconds']['masks']:.1f} s: {report['n_fallback']} fallback "
          f"({100 * report['fallback_rate']:.1f}%), "
          f"{100 * report['centre_hit_rate']:.1f}% from the image and covering the centre region; "
          f"median area {report['area_px']['p50']:.0f} px. Report: {out / 'masks_report.md'}")
    return 0
