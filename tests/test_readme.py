"""Every `mitotype ...` command shown in README.md runs (or, where it needs the internet or many minutes,
parses with the real argument parser), so that the README cannot go stale. Commands that train are run
on tiny real data; outputs go to a temporary folder. A README command without a plan here fails the test:
add one when you add a command to the README."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mitotype.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """Lines of shell blocks that start with ``mitotype`` and inline `mitotype ...` code spans (joined across
    a line break, as the README wraps them)."""
    text = (REPO / "README.md").read_text()
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        found += [line.split("#")[0].strip() for line in block.splitlines() if line.startswith("mitotype ")]
    outside = re.sub(r"```.*?```", "", text, flags=re.S).replace("\n", " ")
    found += [span.strip() for span in re.findall(r"`(mitotype [^`]+)`", outside)]
    return list(dict.fromkeys(c for c in found if c))


def key(command: str) -> str:
    words = shlex.split(command)[1:]
    return " ".join(words[:2]) if words[0] in ("data", "weights") else words[0]


def _replace(argv: list[str], old: str, new: str) -> list[str]:
    assert old in argv, f"{old!r} not in {argv}: update the plan in tests/test_readme.py"
    return [new if a == old else a for a in argv]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, amibr_root):
    """16 real AMi-Br train-split figures as a manifest and as a folder of crops."""
    from mitotype.data.spec import load_figures

    root = tmp_path_factory.mktemp("tiny")
    figures = load_figures(f"amibr:{amibr_root}:split=train")
    pick = [f for f in figures if f.label == 1][:8] + [f for f in figures if f.label == 0][:8]
    pd.DataFrame({"path": [f.path for f in pick], "label": [f.label for f in pick],
                  "domain": [f.domain for f in pick], "group": [f.group for f in pick]}).to_csv(
        root / "tiny.csv", index=False)
    (root / "crops").mkdir()
    for f in pick[6:10]:
        shutil.copy(f.path, root / "crops" / Path(f.path).name)
    return root


TINY_TRAIN = ["model.pretrained=false", "model.input_size=64", "train.epochs=1", "train.batch_size=8",
              "train.val_fraction=0.25"]
PARSE_ONLY = {
    "data download": "needs the internet",
    "bench": "minutes of benchmarking (docs/PERFORMANCE.md gives its output)",
}


def plan(command: str, tmp: Path, tiny: Path) -> list[str] | None:
    """The argv to run for a README command, or None to only parse it."""
    argv = shlex.split(command)[1:]
    k = key(command)
    if k in PARSE_ONLY:
        return None
    if k == "predict":
        argv = [a.replace("predictions.csv", str(tmp / "predictions.csv")) for a in argv]
        return argv + ["--quiet"]
    if k in ("data summary", "weights install"):
        return argv
    if k == "masks":
        argv = _replace(argv, "amibr:../shared/data/amibr", f"manifest:{tiny / 'tiny.csv'}")
        return _replace(argv, "masks/", str(tmp / "masks"))
    if k == "train":
        if "..." in argv:  # the foundation-model row elides its data: the config must at least load
            from mitotype.config import load_config

            load_config(argv[argv.index("--config") + 1], [])
            return None
        argv = _replace(argv, "amibr:../shared/data/amibr:split=train", f"manifest:{tiny / 'tiny.csv'}")
        return argv + ["--out", str(tmp / "run"), "--no-progress", *TINY_TRAIN]
    if k == "evaluate":
        argv = _replace(argv, "runs/X/model.pt", str(tmp / "run" / "model.pt"))
        argv = _replace(argv, "amibr:../shared/data/amibr:split=test", f"manifest:{tiny / 'tiny.csv'}")
        return argv + ["--out", str(tmp / "eval"), "--n-boot", "20"]
    if k == "ensemble":
        argv = _replace(argv, "runs/A/model.pt", str(tmp / "run" / "model.pt"))
        argv = _replace(argv, "runs/B/model.pt", str(tmp / "run" / "model.pt"))
        return _replace(argv, "ensemble.pt", str(tmp / "ensemble.pt"))
    if k == "calibrate":
        argv = _replace(argv, "runs/X/model.pt", str(tmp / "run" / "model.pt"))
        argv = _replace(argv, "val", f"manifest:{tiny / 'tiny.csv'}")  # the tiny run's own part is too small
        return _replace(argv, "calibrated.pt", str(tmp / "calibrated.pt"))
    if k == "adapt":  # the tiny run and its 4 crops: far below the 64 a real target needs
        argv = _replace(argv, "runs/X/model.pt", str(tmp / "run" / "model.pt"))
        argv = _replace(argv, "lab_crops/", str(tiny / "crops"))
        return _replace(argv, "adapted.pt", str(tmp / "adapted.pt")) + ["--min-images", "4"]
    if k == "experiment":
        return argv + ["--dry-run", "--out", str(tmp / "exp")]
    if k == "distil":  # hours of training: the recipe and every config are read and checked
        return _replace(argv, "runs/shipped", str(tmp / "shipped")) + ["--dry-run"]
    if k == "challenge":
        from mitotype.data.example import EXAMPLE_STACK

        folder = tmp / "input" / "images" / "stacked-histopathology-roi-cropouts"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(EXAMPLE_STACK, folder)
        return _replace(_replace(argv, "/input", str(tmp / "input")), "/output", str(tmp / "output"))
    if k == "explain":
        return _replace(_replace(argv, "crops/", str(tiny / "crops")), "explain/", str(tmp / "explain")) + ["--quiet"]
    if k == "export":
        return _replace(argv, "model.onnx", str(tmp / "model.onnx"))
    raise AssertionError(f"README command {command!r} has no plan in tests/test_readme.py")


def test_readme_lists_the_commands_we_plan_for():
    keys = {key(c) for c in readme_commands()}
    assert {"predict", "train", "evaluate", "challenge"} <= keys


def test_every_readme_command_runs(tmp_path, tiny, monkeypatch):
    monkeypatch.chdir(REPO)  # the README's paths are relative to the clone
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # weights install: never the user's cache
    import torch

    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    parser = build_parser()
    # train before the commands that use the trained model
    commands = sorted(readme_commands(), key=lambda c: key(c) in ("evaluate", "ensemble", "calibrate", "adapt"))
    from mitotype.cli import COMMANDS

    for command in commands:
        words = shlex.split(command)[1:]
        if len(words) == 1 and words[0] not in ("weights",):  # a command named in prose: it must exist
            assert words[0] in COMMANDS, f"README names `{command}`, which is not a command"
            continue
        argv = plan(command, tmp_path, tiny)
        if argv is None:
            words = [w for w in shlex.split(command)[1:] if w != "..."]
            parser.parse_args(words)  # exits (SystemExit) on an unknown option
            continue
        assert main(argv) == 0, command
    assert (tmp_path / "run" / "model.pt").is_file() and (tmp_path / "eval" / "report.md").is_file()
    assert (tmp_path / "output" / "multiple-mitotic-figure-classification.json").is_file()
