"""`mitotype distil`: the recipe file's checks, and a tiny teacher/student build on real AMi-Br figures that
writes every output, resumes by skipping what is done, and refuses a finished step trained otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mitotype.cli import main
from mitotype.errors import MitotypeError
from mitotype.experiment.recipe import load_recipe
from tests.train.test_run import small_spec  # noqa: F401 - the fixture

REPO = Path(__file__).resolve().parents[2]
TINY = ["model.pretrained=false", "model.input_size=64", "train.batch_size=8", "train.max_train_batches=2",
        "train.val_fraction=0.25", "train.epochs=1"]


def write_recipe(path: Path, **changes) -> Path:
    recipe = {"data": "amibr:DATA:split=train", "overrides": TINY,
              "teacher": {"base": str(REPO / "configs" / "cpu_stl.yaml"), "seeds": [0, 1], "tta": True},
              "student": {"base": str(REPO / "configs" / "cpu_mtl.yaml"), "seed": 0}}
    recipe.update(changes)
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_the_shipped_recipe_reads():
    recipe = load_recipe(REPO / "recipes" / "amibr_shipped.yaml")
    assert recipe.teacher.seeds == [0, 1, 2] and recipe.tta and recipe.student.seeds == [0]
    assert recipe.teacher.base.name == "cpu_stl.yaml" and "model.input_size=224" in recipe.teacher.overrides
    assert recipe.student.base.name == "cpu_mtl.yaml" and recipe.test.endswith("split=test")


@pytest.mark.parametrize("changes, message", [
    ({"teachers": {}}, "unknown key(s) ['teachers']"),
    ({"student": None}, "missing 'student'"),
    ({"teacher": {"base": "configs/cpu_stl.yaml", "seeds": [0, 0]}}, "distinct non-negative integer seeds"),
    ({"teacher": {"base": "configs/cpu_stl.yaml", "seeds": []}}, "distinct non-negative integer seeds"),
    ({"teacher": {"base": "configs/cpu_stl.yaml", "tta": "yes"}}, "tta must be true or false"),
    ({"teacher": {"base": "configs/cpu_stl.yaml", "epochs": 3}}, "teacher: unknown key(s) ['epochs']"),
    ({"student": {"base": "configs/cpu_mtl.yaml", "seed": [0, 1]}}, "seed must be one integer"),
    ({"student": {"base": "nowhere.yaml"}}, "base config 'nowhere.yaml' not found"),
    ({"overrides": ["train.epochs"]}, "KEY=VALUE"),
])
def test_bad_recipes_get_a_clear_error(tmp_path, capsys, changes, message):
    path = write_recipe(tmp_path / "recipe.yaml", **changes)
    with pytest.raises(MitotypeError, match=None) as err:
        load_recipe(path)
    assert message in str(err.value) and str(path) in str(err.value)
    # the command line says the same in one line, exit 2, no traceback
    assert main(["distil", "--recipe", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    captured = capsys.readouterr().err
    assert message in captured and "Traceback" not in captured


def test_dry_run_lists_the_steps_and_trains_nothing(tmp_path, capsys, amibr_root):
    path = write_recipe(tmp_path / "recipe.yaml", data=f"amibr:{amibr_root}:split=train",
                        test=f"amibr:{amibr_root}:split=test")
    assert main(["distil", "--recipe", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    listed = capsys.readouterr().out
    for step in ("train teacher/seed0", "train teacher/seed1", "join the teacher", "train student",
                 "calibrate the student", "evaluate the teacher", "evaluate the student"):
        assert step in listed
    assert not (tmp_path / "out" / "teacher").exists()
    # a data spec that names nothing is refused before any training, naming the path
    path = write_recipe(tmp_path / "recipe.yaml", data=f"amibr:{tmp_path / 'nowhere'}:split=train")
    assert main(["distil", "--recipe", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "nowhere" in capsys.readouterr().err and not (tmp_path / "out" / "teacher").exists()


def test_a_bad_override_is_caught_before_any_training(tmp_path, capsys):
    path = write_recipe(tmp_path / "recipe.yaml", overrides=["train.epochs=-1"])
    assert main(["distil", "--recipe", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "train.epochs" in capsys.readouterr().err
    assert not (tmp_path / "out" / "teacher").exists()


def test_a_tiny_build_end_to_end_then_resumed(tmp_path, small_spec, capsys):  # noqa: F811 - the fixture
    from mitotype.models.modelfile import load_model, read_payload

    out = tmp_path / "build"
    path = write_recipe(tmp_path / "recipe.yaml")
    args = ["distil", "--recipe", str(path), "--out", str(out), "--data", small_spec, "--no-progress"]
    assert main(args) == 0
    for name in ("teacher/seed0/model.pt", "teacher/seed1/model.pt", "teacher.pt", "student/model.pt",
                 "student.pt", "recipe.json"):
        assert (out / name).is_file(), name
    teacher = read_payload(out / "teacher.pt")
    assert len(teacher["members"]) == 2 and teacher["tta"] is True
    student = load_model(out / "student.pt")
    assert student.config.train.distil_teacher == str((out / "teacher.pt").resolve())
    assert student.config.model.segmentation.enabled  # the student is the recipe's multi-task config
    payload = read_payload(out / "student.pt")
    assert {"calibration", "conformal", "shift"} <= set(payload)  # the trust references travel with it
    record = json.loads((out / "recipe.json").read_text())
    assert [s["was"] for s in record["steps"]] == ["new"] * 5 and record["data"] == small_spec

    # rerun: everything is done, nothing is retrained or rewritten
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")}
    capsys.readouterr()
    assert main(args) == 0
    assert "done, skipped" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")} == stamps
    assert [s["was"] for s in json.loads((out / "recipe.json").read_text())["steps"]] == ["finished"] * 5

    # a finished member trained with another config must not enter the teacher silently
    assert main([*args, "--set", "model.head_dropout=0.5"]) == 2
    err = capsys.readouterr().err
    assert "teacher/seed0" in err and "head_dropout" in err
