"""P(atypical) for mitotic figure crops, folders, MIDOG TIFF stacks or positions on a whole-slide image.

Examples:
  mitotype predict --example          (16 AMi-Br test crops shipped with mitotype, as a track-2 stack)
  mitotype predict ../shared/data/midog25-track2-example/input/stack_5.tiff
  mitotype predict crops/ --out predictions.csv --tta
  mitotype predict crops/ --model a.pt --model b.pt --out predictions.json     (ensemble: mean probability)
  mitotype predict --slide slide.svs --coords figures.csv --out figures.geojson  (QuPath import)
  mitotype predict crops/ --threads 1 --shard 3/8 --out part-3.csv      (part 3 of 8, e.g. one Slurm array task)

One row per figure: source, index (page of a stack, or row of the coordinates CSV), x, y (slide positions,
level-0 pixels), p_atypical, class (p_atypical against the model's stored threshold); with a calibrated
model file (the shipped default is one) also prediction_set (normal / atypical / both = uncertain, review
it / none, at error level --alpha) and shift_score (1.0 = the in-domain 95th percentile; a batch whose
median is above 1.0 gets a warning on stderr). See docs/TRUST.md. Without --out a table is printed.
"""

from __future__ import annotations

import argparse

from mitotype.commands.options import (
    add_backend_arguments,
    add_model_arguments,
    add_slide_arguments,
    add_tta_argument,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="figure crops (PNG/JPEG/TIFF), folders of them (searched recursively) or multi-page "
                             "TIFF stacks (one figure per page)")
    add_model_arguments(parser)
    parser.add_argument("--out", metavar="FILE",
                        help="write FILE.csv, FILE.json (with models, threshold and provenance) or FILE.geojson "
                             "(slides only: QuPath point detections) instead of printing a table")
    add_tta_argument(parser)
    add_backend_arguments(parser)
    add_slide_arguments(parser)
    parser.add_argument("--shape", choices=("point", "square"), default="point",
                        help="GeoJSON output: each figure as a point (default) or as the square of the crop the "
                             "model saw (level-0 pixels), so reviewers see its field of view in QuPath")
    parser.add_argument("--example", action="store_true",
                        help="add the example shipped with mitotype to the inputs: a 16-page stack of AMi-Br "
                             "test-split crops (5 atypical, 11 normal)")
    parser.add_argument("--shard", metavar="I/N",
                        help="only part I of N (0-based) of the figures, a contiguous block of the input order: "
                             "one process or array task per part, e.g. --shard $SLURM_ARRAY_TASK_ID/8; the parts' "
                             "CSVs concatenated in order are the unsharded CSV")
    parser.add_argument("--alpha", type=float, metavar="A",
                        help="error level of the prediction_set column, in (0, 1): each class's figures are "
                             "covered with probability >= 1 - A in-domain (default 0.1; needs a calibrated "
                             "model file, see `mitotype calibrate`)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import sys

    from mitotype.commands.options import check_device
    from mitotype.errors import MitotypeError
    from mitotype.io import check_output_file
    from mitotype.models.trust import check_alpha
    from mitotype.predict.run import check_output, parse_shard, predict, table_text, write_output

    check_alpha(args.alpha)
    if args.slide_mpp is not None and args.slide is None:
        raise MitotypeError("--slide-mpp needs --slide")
    if args.shape == "square" and not (args.out and args.out.lower().endswith(".geojson")):
        raise MitotypeError("--shape square applies to GeoJSON output (--out FILE.geojson)")
    if args.out:
        check_output(args.out, args.slide is not None)
        check_output_file(args.out)
    check_device(args.device)
    shard = parse_shard(args.shard) if args.shard else None
    inputs = list(args.inputs)
    if args.example:
        from mitotype.data.example import EXAMPLE_STACK

        inputs.append(str(EXAMPLE_STACK))
    rows, info = predict(inputs, args.model or ["default"], tta=args.tta, batch_size=args.batch_size,
                         device=args.device, backend=args.backend, slide=args.slide, coords=args.coords,
                         slide_mpp=args.slide_mpp, progress=False if args.quiet else None,
                         threads=args.threads, shard=shard, alpha=args.alpha)
    if info.get("shift_warning"):
        print(info["shift_warning"], file=sys.stderr)
    if args.shape == "square":
        from mitotype.predict.slide import field_of_view

        info["square_side"] = field_of_view(args.slide, info["crop_size"], info["mpp"], args.slide_mpp)
    if args.out:
        write_output(args.out, rows, info)
        n_atyp = sum(r["class"] == "atypical" for r in rows)
        print(f"{len(rows)} figures ({n_atyp} atypical) -> {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(table_text(rows, info["threshold"]))
    return 0
