"""Build a teacher/student pair end to end from a recipe YAML: train the teacher's members (e.g. three 224 px
networks), join them into one ensemble file (teacher.pt: the accurate, slower model), train one student
network on the teacher's soft P(atypical) and calibrate it on its validation part (student.pt: the fast
model to ship, carrying its calibration, conformal and shift references), then, if the recipe names a test
set, evaluate both on it.

Resumable: rerun the same command after an interruption; finished steps are skipped and a training step
continues from its last checkpoint. A finished step trained with another config than the recipe's is an
error (delete its folder to redo it). The recipe format and the output folder: docs/TRAINING.md.

Examples:
  mitotype distil --recipe recipes/amibr_shipped.yaml --out runs/shipped --dry-run
  mitotype distil --recipe recipes/amibr_shipped.yaml --out runs/shipped
  mitotype distil --recipe recipes/amibr_shipped.yaml --out runs/shipped --set train.threads=1
  mitotype evaluate --model runs/shipped/student.pt --data amibr:../shared/data/amibr:split=test
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", required=True, metavar="YAML",
                        help="recipe file: data, teacher (base, overrides, seeds, tta), student (base, "
                             "overrides, seed), optional test; e.g. recipes/amibr_shipped.yaml")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder (teacher/, teacher.pt, student/, student.pt, eval/, recipe.json); "
                             "rerun with the same --out to continue")
    parser.add_argument("--data", default=None, metavar="SPEC",
                        help="replace the recipe's training data spec (e.g. where the data lie elsewhere)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run after the recipe's own, e.g. train.threads=1; "
                             "repeatable")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the recipe and every config, list the steps and their state, train nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. in batch jobs)")


def run(args: argparse.Namespace) -> int:
    from mitotype.errors import MitotypeError
    from mitotype.experiment.recipe import build, load_recipe
    from mitotype.io import check_output_dir

    if args.data is not None and not args.data.strip():
        raise MitotypeError("--data: empty data spec; give one (e.g. amibr:PATH) or leave the option out")
    out = check_output_dir(args.out)
    recipe = load_recipe(args.recipe, data=args.data)
    record = build(recipe, out, args.overrides, dry_run=args.dry_run, progress=not args.no_progress)
    if not args.dry_run:
        print(f"teacher (accurate): {record['teacher_file']}\nstudent (fast, calibrated): {record['student_file']}")
    return 0
