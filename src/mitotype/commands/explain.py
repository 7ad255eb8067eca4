"""Show what the model looks at: per figure the crop, the predicted figure mask, the pixel-class map and
the class-activation map (Grad-CAM for "atypical"), plus a contact sheet of all figures sorted by P(atypical).

Writes DIR/figures/NNNN_<name>.png, DIR/contact_sheet.png, DIR/explain.csv (the predictions, with each
figure's PNG) and DIR/run.json (provenance).

Examples:
  mitotype explain ../shared/data/midog25-track2-example/input/stack_5.tiff --out explain/
  mitotype explain crops/ --model run/model.pt --out explain/ --limit 40
  mitotype explain --slide slide.svs --coords figures.csv --out explain/
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mitotype.commands.options import add_model_arguments, add_slide_arguments, positive_int

    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="figure crops, folders of them (recursive) or multi-page TIFF stacks")
    add_model_arguments(parser, ensemble=False, batch_size=16)
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument("--limit", type=positive_int, default=100, metavar="N",
                        help="explain at most the first N figures (default 100)")
    add_slide_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import sys

    from mitotype.commands.options import check_device
    from mitotype.io import check_output_dir
    from mitotype.predict.explain import explain

    check_output_dir(args.out)
    check_device(args.device)
    out = explain(args.inputs, args.out, args.model, limit=args.limit, batch_size=args.batch_size,
                  device=args.device, slide=args.slide, coords=args.coords, slide_mpp=args.slide_mpp,
                  progress=False if args.quiet else None)
    print(f"wrote {out}/contact_sheet.png, {out}/figures/*.png and {out}/explain.csv", file=sys.stderr)
    return 0
