"""A teacher/student recipe end to end (``mitotype distil``): train the teacher's members, join them into one
ensemble file (the slower, more accurate model), train one student network on the teacher's soft
P(atypical) (``train.distil_teacher``, :mod:`mitotype.train.distil`) and calibrate it on its validation part
(the fast model to ship, with its trust references). Each step is skipped when its output exists and a
training step continues from its last checkpoint, so rerunning the command after an interruption goes on
where it stopped.

The recipe YAML (``recipes/amibr_shipped.yaml``)::

    data: amibr:../shared/data/amibr:split=train
    overrides: [train.monitor=val_auroc, train.early_stopping_patience=0]   # every run
    teacher: {base: configs/cpu_stl.yaml, overrides: [model.input_size=224], seeds: [0, 1, 2], tta: true}
    student: {base: configs/cpu_mtl.yaml, seed: 0}
    test: amibr:../shared/data/amibr:split=test   # optional: evaluate both models at the end

The output folder::

    recipe.json          the recipe as read, the command's overrides, provenance, each step's state and time
    teacher/seedN/       a `mitotype train` run folder per member
    teacher.pt           the members as one ensemble file (8-fold TTA stored with ``tta: true``); with one
                         seed, the member's model.pt is the teacher
    student/             the student's run folder
    student.pt           the student calibrated on its validation part (``mitotype calibrate --data val``)
    eval/teacher/, eval/student/   `mitotype evaluate` of each on ``test``
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mitotype.errors import MitotypeError
from mitotype.experiment.spec import as_overrides, check_keys, find_base, read_mapping

TOP_KEYS = {"name", "data", "overrides", "teacher", "student", "test", "description"}
TEACHER_KEYS = {"base", "overrides", "seeds", "tta"}
STUDENT_KEYS = {"base", "overrides", "seed"}


@dataclass
class Stage:
    """One side of the recipe: a base run config, its overrides and the seeds to train it with."""

    base: Path | None
    overrides: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])


@dataclass
class Recipe:
    """A validated recipe file (``load_recipe``)."""

    path: Path
    name: str
    data: str
    teacher: Stage
    student: Stage
    tta: bool = True  # the teacher file averages the 8 dihedral views (and so do its soft labels)
    overrides: list[str] = field(default_factory=list)
    test: str | None = None


def _stage(raw: Any, keys: set[str], where: str, path: Path) -> dict[str, Any]:
    check_keys(raw, keys, where)
    return {"base": find_base(raw["base"], path) if raw.get("base") else None,
            "overrides": as_overrides(raw.get("overrides"), f"{where}: overrides")}


def _seeds(value: Any, where: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if (not isinstance(value, list) or not value or len(set(value)) != len(value)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)):
        raise MitotypeError(f"{where}: expected distinct non-negative integer seeds, e.g. [0, 1, 2]; got {value!r}")
    return value


def load_recipe(path: str | Path, data: str | None = None) -> Recipe:
    """Read and validate a recipe YAML; ``data`` replaces its training data spec."""
    path = Path(path)
    raw = read_mapping(path, "recipe file", TOP_KEYS)
    for key in ("teacher", "student", *([] if data else ["data"])):
        if not raw.get(key):
            raise MitotypeError(f"{path}: missing {key!r}")
    teacher_raw, student_raw = raw["teacher"], raw["student"]
    teacher = _stage(teacher_raw, TEACHER_KEYS, f"{path}: teacher", path)
    student = _stage(student_raw, STUDENT_KEYS, f"{path}: student", path)
    tta = teacher_raw.get("tta", True)
    if not isinstance(tta, bool):
        raise MitotypeError(f"{path}: teacher: tta must be true or false, got {tta!r}")
    test = raw.get("test")
    if test is not None and (not isinstance(test, str) or not test.strip()):
        raise MitotypeError(f"{path}: test must be a data spec (e.g. amibr:PATH:split=test), got {test!r}")
    teacher_seeds = _seeds(teacher_raw.get("seeds", [0, 1, 2]), f"{path}: teacher: seeds")
    student_seed = _seeds(student_raw.get("seed", 0), f"{path}: student: seed")
    if len(student_seed) != 1:
        raise MitotypeError(f"{path}: student: seed must be one integer (one student), got {student_seed}")
    return Recipe(path=path, name=str(raw.get("name", path.stem)), data=str(data or raw["data"]),
                  teacher=Stage(**teacher, seeds=teacher_seeds), student=Stage(**student, seeds=student_seed),
                  tta=tta, overrides=as_overrides(raw.get("overrides"), f"{path}: overrides"), test=test)


def stage_config(recipe: Recipe, stage: Stage, seed: int, cli_overrides: Sequence[str] = ()):
    """Base YAML <- the recipe's overrides <- the stage's <- the command line's <- the seed."""
    from mitotype.config import load_config

    return load_config(stage.base, [*recipe.overrides, *stage.overrides, *cli_overrides, f"train.seed={seed}"])


def teacher_file(recipe: Recipe, out: Path) -> Path:
    """The teacher model file: the ensemble of the members, or the one member's model.pt."""
    seeds = recipe.teacher.seeds
    return out / "teacher.pt" if len(seeds) > 1 else out / "teacher" / f"seed{seeds[0]}" / "model.pt"


@dataclass
class Step:
    """One step of the build: what it writes and how to make it."""

    name: str
    output: Path
    make: Callable[[], Any]
    state: Callable[[], str]


def plan(recipe: Recipe, out: Path, cli_overrides: Sequence[str] = (), progress: bool = True) -> list[Step]:
    """The build's steps in order; every config is read (and checked) here, before any training."""
    from mitotype.train.resume import config_changes, run_progress

    members = {s: stage_config(recipe, recipe.teacher, s, cli_overrides) for s in recipe.teacher.seeds}
    student_cfg = stage_config(recipe, recipe.student, recipe.student.seeds[0], cli_overrides)
    seeds, teacher = recipe.teacher.seeds, teacher_file(recipe, out)
    student_cfg.train.distil_teacher = str(teacher.resolve())
    student_cfg.train.distil_tta = recipe.tta

    def training(cfg: Any, run_dir: Path) -> Step:
        def make() -> Path:
            from mitotype.train.run import train

            state = run_progress(run_dir)
            if state == "finished":
                return run_dir / "model.pt"
            return train(cfg, recipe.data, run_dir, resume=state == "resumable", progress=progress)

        def state() -> str:
            stale = config_changes(run_dir, cfg)
            if stale:  # a finished member trained otherwise would silently enter the teacher
                raise MitotypeError(f"{run_dir}: trained with another config ({stale}); delete the folder to "
                                    "retrain it, or give another --out")
            return run_progress(run_dir)

        return Step(f"train {run_dir.relative_to(out)}", run_dir / "model.pt", make, state)

    def done_if(path: Path) -> Callable[[], str]:
        return lambda: "finished" if path.is_file() else "new"

    def ensemble() -> Path:
        from mitotype.models.modelfile import load_model, save_ensemble

        member_files = [out / "teacher" / f"seed{s}" / "model.pt" for s in seeds]
        save_ensemble(teacher, member_files, tta=recipe.tta, extra={"recipe": str(recipe.path)})
        load_model(teacher)  # proves it loads
        return teacher

    def calibrated() -> Path:
        from mitotype.models.calibrate import VALIDATION, calibrate

        calibrate(str(out / "student" / "model.pt"), VALIDATION, out / "student.pt", progress=progress)
        return out / "student.pt"

    steps = [training(cfg, out / "teacher" / f"seed{s}") for s, cfg in members.items()]
    if len(seeds) > 1:
        steps.append(Step("join the teacher", teacher, ensemble, done_if(teacher)))
    steps.append(training(student_cfg, out / "student"))
    steps.append(Step("calibrate the student", out / "student.pt", calibrated, done_if(out / "student.pt")))
    if recipe.test:
        for who, model in (("teacher", teacher), ("student", out / "student.pt")):
            steps.append(_evaluation(recipe.test, who, model, out))
    return steps


def _evaluation(spec: str, who: str, model: Path, out: Path) -> Step:
    metrics = out / "eval" / who / "metrics.json"

    def make() -> Path:
        from mitotype.evaluate.run import evaluate

        result = evaluate([model], spec, out / "eval" / who)
        print(f"  {who}: balanced accuracy {result['balanced_accuracy']:.3f}, AUROC {result['auroc']:.3f} "
              f"on {spec}", flush=True)
        return metrics

    return Step(f"evaluate the {who}", metrics, make, lambda: "finished" if metrics.is_file() else "new")


def build(recipe: Recipe, out: str | Path, cli_overrides: Sequence[str] = (), dry_run: bool = False,
          progress: bool = True) -> dict[str, Any]:
    """Run (or continue) every step of the recipe into ``out``; returns what ``recipe.json`` records."""
    from mitotype.data.spec import load_figures
    from mitotype.io import provenance, write_json

    out = Path(out)
    steps = plan(recipe, out, cli_overrides, progress=progress)
    for spec in (recipe.data, recipe.test):  # a wrong path fails now, not after hours of training
        if spec:
            load_figures(spec)
    states = [step.state() for step in steps]
    print(f"recipe {recipe.name}: {len(steps)} steps in {out}")
    for i, (step, state) in enumerate(zip(steps, states), 1):
        print(f"  [{i}/{len(steps)}] {step.name:32s} [{state}]")
    record = provenance(recipe=str(recipe.path), data=recipe.data, test=recipe.test, tta=recipe.tta,
                        overrides=recipe.overrides, cli_overrides=list(cli_overrides),
                        teacher={"base": str(recipe.teacher.base), "overrides": recipe.teacher.overrides,
                                 "seeds": recipe.teacher.seeds},
                        student={"base": str(recipe.student.base), "overrides": recipe.student.overrides,
                                 "seed": recipe.student.seeds[0]},
                        teacher_file=str(teacher_file(recipe, out)), student_file=str(out / "student.pt"),
                        steps=[])
    if dry_run:
        return record
    out.mkdir(parents=True, exist_ok=True)
    for i, (step, state) in enumerate(zip(steps, states), 1):
        t0 = time.time()
        if state == "finished":
            print(f"[{i}/{len(steps)}] {step.name}: done, skipped", flush=True)
        else:
            print(f"[{i}/{len(steps)}] {step.name}: {'resuming' if state == 'resumable' else 'start'}", flush=True)
            step.make()
        record["steps"].append({"step": step.name, "output": str(step.output), "was": state,
                                "seconds": round(time.time() - t0, 1)})
        write_json(out / "recipe.json", record)  # after every step: an interrupted build says how far it got
    return record
