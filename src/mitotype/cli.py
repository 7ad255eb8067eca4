"""The ``mitotype`` command line: one subcommand per job.

Each subcommand lives in ``mitotype/commands/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``. Those modules import only the standard library at the top (heavy libraries inside
``run``), so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mitotype import __version__
from mitotype.errors import MitotypeError

# name -> one-line help; the module is mitotype.commands.<name with - as _>
COMMANDS: dict[str, str] = {
    "data": "summarise or download data sets (data summary SPEC, data download amibr)",
    "masks": "compute the auxiliary targets (figure mask, pixel classes, centre heatmap) with a report",
    "weights": "place or check offline ImageNet weights in the torch hub cache",
    "train": "train a single- or multi-task model from a YAML config",
    "evaluate": "metrics, plots and a report of a model on labelled data",
    "experiment": "run a grid of configs x seeds x protocols and tabulate it",
    "predict": "P(atypical) for crops, folders, TIFF stacks or slide positions",
    "challenge": "the MIDOG 2025 track-2 container interface (--input DIR --output DIR)",
    "explain": "crop, predicted figure mask, pixel classes and class-activation map per figure",
    "export": "export the classification path to ONNX",
    "calibrate": "fit temperature scaling and conformal prediction sets on held-out figures",
    "ensemble": "join trained model files into one ensemble model file (mean P(atypical))",
    "bench": "speed and memory benchmarks",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mitotype",
        description="Tell atypical from normal mitotic figures in H&E images, robust to domain shift. "
        "Data sets are given as specs, e.g. amibr:PATH[:split=train], folder:PATH, manifest:CSV, "
        "midog25:CSV:IMAGEDIR, stack:FILE_OR_DIR, joined with '+'.",
    )
    parser.add_argument("--version", action="version", version=f"mitotype {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"mitotype.commands.{name.replace('-', '_')}")
        cmd = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip(),
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(cmd)
        cmd.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except MitotypeError as exc:
        print(f"mitotype {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mitotype {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
