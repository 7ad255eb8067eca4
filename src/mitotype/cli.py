"""The ``mitotype`` command line: one subcommand per job.

Each subcommand lives in ``mitotype/commands/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``. Those modules import only the standard library at the top (heavy libraries inside
``run``), so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

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
    "adapt": "adapt a model to a lab's unlabelled crops (batch-norm statistics, class prior)",
    "ensemble": "join trained model files into one ensemble model file (mean P(atypical))",
    "distil": "build a teacher ensemble and its distilled, calibrated student from a recipe YAML",
    "bench": "speed and memory benchmarks",
}


DEBUG_HELP = "show the full traceback of an error (for bug reports)"
# exit status of an unexpected error (a bug); a MitotypeError (bad input) exits 2, like a usage error
INTERNAL_ERROR = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mitotype",
        description="Tell atypical from normal mitotic figures in H&E images, robust to domain shift. "
        "Data sets are given as specs, e.g. amibr:PATH[:split=train], folder:PATH, manifest:CSV, "
        "midog25:CSV:IMAGEDIR, stack:FILE_OR_DIR, joined with '+'.",
    )
    parser.add_argument("--version", action="version", version=f"mitotype {__version__}")
    parser.add_argument("--debug", action="store_true", default=False, help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"mitotype.commands.{name.replace('-', '_')}")
        cmd = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip(),
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(cmd)
        _add_debug(cmd)
        cmd.set_defaults(_module=module)
    return parser


def _add_debug(parser: argparse.ArgumentParser) -> None:
    """``--debug`` also after the command and its actions (mitotype weights check --debug); SUPPRESS keeps
    a ``--debug`` given before the command."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_debug(child)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except MitotypeError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"mitotype {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mitotype {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last net: a bug, reported in one line, not a traceback
        if args.debug:
            raise
        text = " ".join(str(exc).split())[:300]
        print(f"mitotype {args.command}: error: unexpected {type(exc).__name__}: {text} -- this is a bug in "
              f"mitotype; re-run with --debug for the traceback and report it", file=sys.stderr)
        return INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
