"""Run a grid of model configs x seeds x protocols (published split, grouped k-fold, leave-one-domain-out):
train each run on its train part, evaluate it on its held-out part, then tabulate mean ± sd over seeds and
the paired difference to the reference config with a bootstrap 95% interval (results.md, results.csv,
results.png in --out).

Runs resume: rerun the same command after an interruption; finished runs (eval/metrics.json) are skipped.
The experiment YAML format is described in docs/EVALUATION.md.

Examples:
  mitotype experiment --config experiments/smoke.yaml --dry-run
  mitotype experiment --config experiments/amibr_mtl_vs_stl.yaml --out runs/exp/mtl_vs_stl
  mitotype experiment --config experiments/amibr_mtl_vs_stl.yaml --set train.accelerator=gpu --set train.num_workers=8
  mitotype experiment --config experiments/amibr_mtl_vs_stl.yaml train.accelerator=gpu   (same as --set)
  mitotype experiment --config experiments/amibr_mtl_vs_stl.yaml --out runs/exp/mtl_vs_stl --table-only
  mitotype experiment --config experiments/amibr_levers.yaml --out runs/exp/levers --table-only --reference mtl
  mitotype experiment --config experiments/amibr_levers.yaml --out runs/exp/levers --table-only --last-epoch
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="YAML",
                        help="experiment file, e.g. experiments/amibr_mtl_vs_stl.yaml")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output folder (runs/, results.md, ...). Default: runs/experiments/<name>")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the runs (train/test sizes, done/partial/todo) and exit without training")
    parser.add_argument("--set", dest="set_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to every run after the experiment's own, e.g. "
                             "train.accelerator=gpu or train.epochs=1; repeatable")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="more overrides, written as for `mitotype train` (same effect as --set)")
    parser.add_argument("--data", default=None, metavar="SPEC",
                        help="replace the experiment's data spec (e.g. where the data lie elsewhere)")
    parser.add_argument("--only", default=None, metavar="TEXT",
                        help="run only the runs whose id (config/protocol/part/seedN) contains TEXT; the table "
                             "still covers every finished run")
    parser.add_argument("--table-only", action="store_true",
                        help="train nothing: rewrite results.md/.csv/.png from the finished runs in --out (e.g. "
                             "after runs made on several machines were copied there)")
    parser.add_argument("--reference", default=None, metavar="CONFIG",
                        help="take the paired differences against this config instead of the experiment's "
                             "reference, into results_vs_CONFIG.md/.csv/.png (e.g. --table-only --reference mtl)")
    parser.add_argument("--last-epoch", action="store_true",
                        help="also score every finished run at its last epoch (train/checkpoints/last.ckpt, or "
                             "the cached eval/last_epoch_p_atypical.csv) into last_epoch.csv: AUROC and the "
                             "paired difference to the experiment's reference and to --reference")


def run(args: argparse.Namespace) -> int:
    import shlex
    import sys

    from mitotype.errors import MitotypeError
    from mitotype.experiment import run_experiment
    from mitotype.io import check_output_dir

    if args.data is not None and not args.data.strip():
        raise MitotypeError("--data: empty data spec; give one (e.g. amibr:PATH) or leave the option out")
    if args.out:
        check_output_dir(args.out)

    # results.md shows the command that reproduces the runs, so --table-only and --last-epoch are left out
    argv = [a for a in sys.argv[1:] if a not in ("--table-only", "--last-epoch")]
    command = "mitotype " + shlex.join(argv) if "experiment" in argv else None
    run_experiment(args.config, args.out, dry_run=args.dry_run, overrides=[*args.set_overrides, *args.overrides],
                   data=args.data, only=args.only, command=command, table_only=args.table_only,
                   reference=args.reference, last_epoch=args.last_epoch)
    return 0
