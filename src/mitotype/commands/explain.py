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
    from mitotype.commands.options import positive_float, positive_int

    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="figure crops, folders of them (recursive) or multi-page TIFF stacks")
    parser.add_argument("--model", default="default", metavar="M",
                        help="model file (.pt) or 'default' (the model shipped with mitotype; the default)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument("--limit", type=positive_int, default=100, metavar="N",
                        help="explain at most the first N figures (default 100)")
    parser.add_argument("--batch-size", type=positive_int, default=16, metavar="N",
                        help="figures per batch (default 16)")
    parser.add_argument("--device", default="auto", metavar="D",
                        help="torch device: auto (default: cuda if available, else cpu), cpu, cuda, cuda:1, mps")
    parser.add_argument("--slide", metavar="SLIDE", help="a whole-slide image (with --coords)")
    parser.add_argument("--coords", metavar="CSV", help="with --slide: CSV with columns x, y (level-0 pixels)")
    parser.add_argument("--slide-mpp", type=positive_float, metavar="UM",
                        help="with --slide: microns per pixel at level 0 when the slide lacks the metadata")
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
