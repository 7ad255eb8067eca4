"""The MIDOG 2025 track-2 algorithm interface, as the grand-challenge container runs it.

Reads INPUT/images/stacked-histopathology-roi-cropouts/*.tiff (one multi-page stack, one figure per page)
and writes OUTPUT/multiple-mitotic-figure-classification.json: one entry per page, in page order,
{"class": "normal"|"atypical", "confidence": P(atypical)}.

Example (the challenge's own example input laid out as in the container):
  mkdir -p /tmp/in/images/stacked-histopathology-roi-cropouts
  cp ../shared/data/midog25-track2-example/input/stack_5.tiff /tmp/in/images/stacked-histopathology-roi-cropouts/
  mitotype challenge --input /tmp/in --output /tmp/out
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mitotype.commands.options import add_backend_arguments, add_model_arguments, add_tta_argument

    parser.add_argument("--input", required=True, metavar="DIR",
                        help="the job's input folder (/input in the container)")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="where multiple-mitotic-figure-classification.json goes (/output in the container)")
    add_model_arguments(parser)
    add_backend_arguments(parser)
    add_tta_argument(parser)


def run(args: argparse.Namespace) -> int:
    from mitotype.commands.options import check_device
    from mitotype.io import check_output_dir
    from mitotype.predict.challenge import run_challenge

    check_output_dir(args.output, "--output")
    check_device(args.device)
    path = run_challenge(args.input, args.output, args.model or ["default"], tta=args.tta,
                         batch_size=args.batch_size, device=args.device, backend=args.backend,
                         threads=args.threads)
    print(f"wrote {path}")  # stdout: grand-challenge shows stderr as warnings
    return 0
