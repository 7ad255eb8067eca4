"""A fuzz harness over every command of the CLI: random argument values, path kinds and damaged inputs.

Each example builds one command line from symbolic choices (a number, a path kind, an input kind, ...),
materialises it in a fresh folder, runs it in-process through ``mitotype.cli.main`` and checks the outcome:

- no exception may escape, and the CLI's catch-all for unexpected errors counts as a defect too;
- a refusal is a one-line ``mitotype ...: error: ...`` naming the bad file, option or key;
- a success gives as many rows as the inputs hold, and only valid command lines may succeed;
- a valid command line must not be refused.

Training and benchmarks are not run: the harness stops them where the real work would start (Lightning's
``Trainer.fit``, ``bench.run_all``), so for ``train``/``experiment``/``bench`` it checks everything that is
refused before. ``pytest --slow`` (or MITOTYPE_FUZZ_SLOW=1) runs ten times the examples.
``MITOTYPE_FUZZ_SURVEY=FILE`` records every defect as a JSON line instead of failing at the first one
(how the defects listed in docs/ROBUSTNESS.md were counted).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mitotype.cli import COMMANDS
from tests.cli.conftest import ROOT, Outcome, World, run_cli

HAS_CUDA = False
with contextlib.suppress(ImportError):
    import torch

    HAS_CUDA = torch.cuda.is_available()

SLOW = os.environ.get("MITOTYPE_FUZZ_SLOW") == "1"
SURVEY = os.environ.get("MITOTYPE_FUZZ_SURVEY")


def examples(n: int):
    """Hypothesis settings for ``n`` examples (ten times more in the slow variant)."""
    return settings(max_examples=n * (10 if SLOW else 1), deadline=None, derandomize=not SLOW,
                    suppress_health_check=list(HealthCheck), print_blob=False)


# --- running one command line ----------------------------------------------------------------------------

@dataclass
class Case:
    """One command line; ``culprits``: the bad parts (an error must name one); empty = all valid."""

    argv: list[str]
    culprits: list[str] = field(default_factory=list)
    rows: int | None = None  # rows a success must produce
    count: Callable[[Outcome], int] | None = None  # how many rows a success produced


def problems(case: Case, o: Outcome) -> list[str]:
    if o.exception:
        return [f"traceback: {o.exception.strip().splitlines()[-1]}"]
    if "re-run with --debug" in o.err:
        return [f"unexpected error (catch-all): {o.err.strip().splitlines()[-1]}"]
    if o.started or o.rc == 0:
        if case.culprits:
            return [f"accepted bad input {case.culprits} ({'work started' if o.started else 'exit 0'})"]
        if o.rc == 0 and case.count is not None and case.rows is not None:
            got = case.count(o)
            if got != case.rows:
                return [f"exit 0 with {got} rows for {case.rows} inputs"]
        return []
    if o.rc == 1 and case.argv[:2] == ["weights", "check"] and not case.culprits:
        return []  # 'weights check' reports missing weights on stdout with exit 1, by design
    last = o.err.strip().splitlines()[-1] if o.err.strip() else ""
    if not re.match(r"^mitotype( [\w-]+)*: (error|interrupted)", last):
        return [f"exit {o.rc} without a clean error line: {last!r}"]
    if not case.culprits:
        return [f"refused valid input: {last}"]
    if not any(c in o.err for c in case.culprits):
        return [f"error names none of {case.culprits}: {last}"]
    return []


def check(case: Case) -> None:
    o = run_cli(case.argv)
    found = problems(case, o)
    if SURVEY and found:
        with open(SURVEY, "a") as fh:
            fh.write(json.dumps({"argv": case.argv, "culprits": case.culprits, "problems": found}) + "\n")
        return
    assert not found, f"mitotype {' '.join(case.argv)}\n{found}\nstderr: {o.err[-2000:]}\n{o.exception or ''}"


def fresh(world: World) -> Path:
    return Path(tempfile.mkdtemp(dir=world.root, prefix="case-"))


# --- one or two bad parts per command line ------------------------------------------------------------------

class Draft:
    """Chooses which parts of a command line are bad (none in about a third of the cases, rarely two), so that
    a refusal can be checked to name the one bad part, and valid command lines are common enough to check
    their results."""

    def __init__(self, draw, aspects: list[str]):
        self.draw = draw
        n_bad = draw(st.sampled_from([0, 0, 1, 1, 1, 1, 2]))
        self.bad = set(draw(st.lists(st.sampled_from(aspects), min_size=min(n_bad, len(aspects)),
                                     max_size=min(n_bad, len(aspects)), unique=True)))
        self.culprits: list[str] = []

    def pick(self, aspect: str, good: list, bad: list):
        """An element of ``bad`` if this aspect was chosen to be bad (and has bad values), else of ``good``."""
        return self.draw(st.sampled_from(bad if aspect in self.bad and bad else good))

    def blame(self, ok: bool, culprit: str) -> None:
        if not ok:
            self.culprits.append(culprit)

    def choice_option(self, option: str, good: list, bad: str) -> list[str]:
        """``[option, value]`` with a value of ``good`` (``None``: the option left out) or the one ``bad``
        value, which is then the culprit."""
        value = self.pick(option, good, [bad])
        if value is None:
            return []
        self.blame(value != bad, bad)
        return [option, value]


# --- argument values ----------------------------------------------------------------------------------------

NUMBERS = ["-1", "0", "1", "2", "3", "16", "64", "abc", "", "1.5", "nan", "inf", "-inf", "1e3", " 2", "0x10",
           "99999999999999999999"]


def as_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def int_valid(text: str, low: int = 1, high: int | None = None) -> bool:
    v = as_int(text)
    return v is not None and v >= low and (high is None or v <= high)


def threshold_valid(text: str) -> bool:
    v = as_float(text)
    return v is not None and 0 <= v <= 1


def number_option(draft: Draft, name: str, valid: Callable[[str], bool], values: list[str] = NUMBERS,
                  optional: bool = True) -> list[str]:
    """``[name, VALUE]`` (or nothing when optional and good); a bad value blames ``name``."""
    good = [v for v in values if valid(v)] + ([None] if optional else [])
    text = draft.pick(name, good, [v for v in values if not valid(v)])
    if text is None:
        return []
    draft.blame(valid(text), name)
    return [name, text]


DEVICES = ["cpu", "auto", "cuda", "cuda:7", "mps", "tpu", "", "CPU", "cuda:-1"]


def device_valid(text: str) -> bool:
    if text in ("cpu", "auto"):
        return True
    if text == "cuda":
        return HAS_CUDA
    if text == "cuda:7":
        return HAS_CUDA and torch.cuda.device_count() > 7
    return False


def device_option(draft: Draft) -> list[str]:
    text = draft.pick("--device", [None, "cpu", "auto"], [d for d in DEVICES if not device_valid(d)])
    if text is None:
        return []
    draft.blame(device_valid(text), "--device")
    return ["--device", text]


# --- paths of every kind ------------------------------------------------------------------------------------

# input kind -> figures it holds (None: a bad input), relative to the world's folder
INPUTS: dict[str, tuple[str, int | None]] = {
    "crop": ("crops/MIDOG21_10.png", 1), "crops_dir": ("crops", 2), "stack": ("stack.tiff", 16),
    "labelled_dir": ("labelled", 12), "link": ("links/link.png", 1), "unicode_dir": ("crops_ünï 文字", 1),
    "truncated_stack": ("truncated.tiff", None), "corrupt": ("corrupt.png", None),
    "truncated_png": ("truncated.png", None), "empty_png": ("empty.png", None), "missing": ("missing.png", None),
    "empty_dir": ("empty_dir", None), "under_file": ("a_file/x.png", None), "dangling": ("links/dangling.png", None),
    "links_dir": ("links", None), "folder_with_corrupt": ("folder_with_corrupt", None),
    "nested_unreadable": ("nested_unreadable", 2 if ROOT else None),
    "unreadable_dir": ("unreadable_dir", 1 if ROOT else None), "odd_dir": ("odd", 3),
    "one_pixel": ("odd/one_pixel.png", 1), "huge": ("huge.png", None), "mixed_sizes": ("mixed_sizes.tiff", None),
}
INPUT_CULPRIT = {"links_dir": "dangling.png", "folder_with_corrupt": "bad.png", "nested_unreadable": "closed",
                 "under_file": "a_file"}
GOOD_INPUTS = [k for k, (_, n) in INPUTS.items() if n is not None]
BAD_INPUTS = [k for k, (_, n) in INPUTS.items() if n is None]


def input_path(kind: str, w: World) -> tuple[str, int | None, str]:
    rel, n = INPUTS[kind]
    return str(w.path(rel)), n, INPUT_CULPRIT.get(kind, Path(rel).name)


# output kinds: name -> usable; materialised by out_path
OUT_FILES = {"new": True, "new_subdir": True, "existing": True, "unicode": True, "is_dir": False,
             "under_file": False, "readonly": ROOT, "symlink_to_dir": False}
OUT_DIRS = {"new": True, "new_subdir": True, "existing": True, "unicode": True, "symlink_to_dir": True,
            "is_file": False, "under_file": False, "readonly": ROOT}


def out_path(kind: str, w: World, d: Path, suffix: str, folder: bool) -> tuple[str, str]:
    """Create what the kind needs; (the output path, the name an error must mention)."""
    path = {"new": d / f"out{suffix}", "new_subdir": d / "a" / "b" / f"out{suffix}",
            "existing": d / f"existing{suffix}", "unicode": d / f"ünï 文字{suffix}", "is_dir": d / f"is_dir{suffix}",
            "is_file": d / "is_file", "under_file": w.path("a_file", f"out{suffix}"),
            "readonly": w.path("readonly_dir", f"out{suffix}"), "symlink_to_dir": d / f"link{suffix}"}[kind]
    if kind == "is_dir" or kind == "existing" and folder:
        path.mkdir()
    elif kind in ("existing", "is_file"):
        path.write_text("old\n")
    elif kind == "symlink_to_dir":
        (d / "target").mkdir()
        os.symlink(d / "target", path)
    culprit = {"under_file": "a_file", "readonly": "readonly_dir"}.get(kind, path.name)
    return str(path), culprit


def output_option(draft: Draft, w: World, d: Path, name: str, kinds: dict[str, bool], suffix: str = "",
                  optional: bool = False) -> tuple[list[str], str | None]:
    good = [k for k, ok in kinds.items() if ok] + ([None] if optional else [])
    kind = draft.pick(name, good, [k for k, ok in kinds.items() if not ok])
    if kind is None:
        return [], None
    path, culprit = out_path(kind, w, d, suffix, folder=kinds is OUT_DIRS)
    draft.blame(kinds[kind], culprit)
    return [name, path], path


MODELS = {"tiny": True, "default": True, "missing": False, "dir": False, "corrupt": False, "crop": False}


def model_option(draft: Draft, w: World, d: Path, repeat: int = 1) -> list[str]:
    argv = []
    # the tiny model nearly always: the shipped one is right but slow on a busy CPU
    for _ in range(draft.draw(st.integers(1, repeat))):
        kind = draft.pick("--model", ["tiny"] * 8 + ["default"], [k for k, ok in MODELS.items() if not ok])
        path, culprit = {"tiny": (str(w.model), ""), "default": ("default", ""),
                         "missing": (str(d / "nope.pt"), "nope.pt"), "dir": (str(w.path("empty_dir")), "empty_dir"),
                         "corrupt": (str(w.path("not_a_model.pt")), "not_a_model.pt"),
                         "crop": (str(w.crops[0]), w.crops[0].name)}[kind]
        draft.blame(MODELS[kind], culprit)
        argv += ["--model", path]
    return argv


# data-set spec kinds: -> (figures it holds, or None when bad; labelled)
SPECS: dict[str, tuple[int | None, bool]] = {
    "folder": (12, True), "manifest": (12, True), "stack": (16, False), "stack_truncated": (None, False),
    "manifest_conflict": (None, True), "manifest_missing": (None, True), "folder_missing": (None, True),
    "folder_empty": (None, True), "folder_closed_class": (12 if ROOT else None, True),
    "unknown_reader": (None, True), "bare_path": (None, True), "empty": (None, True),
}


def spec_text(kind: str, w: World) -> tuple[str, str]:
    """(spec, the name an error must mention)."""
    return {"folder": (f"folder:{w.folder}", ""), "manifest": (f"manifest:{w.manifest}", ""),
            "stack": (f"stack:{w.stack}", "label"), "stack_truncated": (f"stack:{w.truncated_stack}", "truncated.tiff"),
            "manifest_conflict": (f"manifest:{w.path('manifest_conflict.csv')}", "manifest_conflict.csv"),
            "manifest_missing": (f"manifest:{w.path('manifest_missing.csv')}", "manifest_missing.csv"),
            "folder_missing": (f"folder:{w.path('no_such_folder')}", "no_such_folder"),
            "folder_empty": (f"folder:{w.path('empty_dir')}", "empty_dir"),
            "folder_closed_class": (f"folder:{w.path('labelled_closed')}", "Normal"),
            "unknown_reader": ("nonsense:x", "nonsense"), "bare_path": (str(w.folder), "reader"),
            "empty": ("", "spec")}[kind]


def spec_option(draft: Draft, w: World, name: str | None, labelled: bool) -> tuple[list[str], int | None]:
    def ok(kind: str) -> bool:
        n, has_labels = SPECS[kind]
        return n is not None and (has_labels or not labelled)

    kind = draft.pick(name or "SPEC", [k for k in SPECS if ok(k)], [k for k in SPECS if not ok(k)])
    spec, culprit = spec_text(kind, w)
    draft.blame(ok(kind), culprit)
    return ([name] if name else []) + [spec], SPECS[kind][0] if ok(kind) else None


# config overrides: (text, valid)
OVERRIDES = [
    ("train.lr=0.01", True), ("train.lr=1e-4", True), ("train.lr=-0.001", False), ("train.lr=0", False),
    ("train.lr=abc", False), ("train.lr=.nan", False), ("train.lr=.inf", False), ("train.lr=[0.1", False),
    ("train.epochs=1", True), ("train.epochs=0", False), ("train.epochs=-1", False), ("train.epochs=1.5", False),
    ("train.batch_size=2", True), ("train.batch_size=0", False), ("train.val_fraction=0.3", True),
    ("train.val_fraction=1.5", False), ("train.val_fraction=-0.1", False), ("train.accelerator=cpu", True),
    ("train.accelerator=cuda", HAS_CUDA), ("train.accelerator=tpu", False), ("train.schedule=linear", False),
    ("train.num_workers=-1", False), ("train.warmup_epochs=-1", False), ("train.label_smoothing=1.5", False),
    ("train.precision=64", False), ("train.monitor=foo", False), ("train.max_train_batches=0", False),
    ("train.ema_decay=1.5", False), ("train.focal_gamma=-1", False), ("train.seed=-1", False),
    ("train.weight_decay=-1", False), ("train.threads=-2", False), ("train.devices=0", False),
    ("model.head_dropout=1.5", False), ("model.mpp=0", False), ("model.crop_size=0", False),
    ("model.input_size=-1", False), ("model.finetune=half", False), ("augment.blur_prob=2", False),
    ("augment.stain_normalise=foo", False), ("model.lora_rank=0", False), ("train.class_loss=hinge", False),
    ("train.epochs.x=3", False), ("noequals", False), ("=3", False), ("train.=3", False),
    ("model.segmentation.weight=-1", False), ("train.epochs=3", True), ("model.head_hidden=[8]", True),
    ("train.schedule=onecycle", True), ("model.segmentation=true", True), ("train.aux_schedule=linear", False),
]


def override_culprit(text: str) -> str:
    """The section.key an error must name (train.epochs for train.epochs.x), or the whole override."""
    parts = text.split("=", 1)[0].split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 and all(parts[:2]) else text


def overrides_of(draft: Draft, planning: bool = False) -> list[str]:
    """One or two overrides; ``planning`` (experiment --dry-run): a GPU grid may be planned on any machine."""
    valid = dict(OVERRIDES) | ({"train.accelerator=cuda": True} if planning else {})
    good = [t for t, ok in valid.items() if ok]
    chosen = [draft.pick("override", [None, *good], [t for t, ok in valid.items() if not ok])]
    # a second, good one for another key (one for the same key would replace the first)
    key = (chosen[0] or "=").split("=")[0]
    chosen.append(draft.draw(st.sampled_from([None, *[t for t in good if t.split("=")[0] != key]])))
    texts = [t for t in dict.fromkeys(chosen) if t is not None]
    for t in texts:
        draft.blame(valid[t], override_culprit(t))
    return texts


CONFIGS = {"tiny": True, "missing": False, "dir": False, "list": False, "broken": False, "unknown_key": False}


def config_option(draft: Draft, w: World, good_path: Path, name: str = "--config") -> list[str]:
    """``name`` and a YAML file: ``good_path`` or one of the damaged or misshapen YAML files."""
    kind = draft.pick(name, ["tiny"], [k for k, ok in CONFIGS.items() if not ok])
    path, culprit = {"tiny": (good_path, ""), "missing": (w.path("none.yaml"), "none.yaml"),
                     "dir": (w.path("empty_dir"), "empty_dir"), "list": (w.path("list.yaml"), "list.yaml"),
                     "broken": (w.path("broken.yaml"), "broken.yaml"),
                     "unknown_key": (w.path("unknown_key.yaml"), "unknown_key.yaml")}[kind]
    draft.blame(CONFIGS[kind], culprit)
    return [name, str(path)]


# --- counting the rows of a success -------------------------------------------------------------------------

def count_table(o: Outcome) -> int:
    m = re.search(r"^(\d+) figures", o.out, re.M)
    return int(m.group(1)) if m else -1


def count_csv(path: str | Path) -> Callable[[Outcome], int]:
    def count(o: Outcome) -> int:
        with open(path, newline="") as fh:
            return len(list(csv.DictReader(fh)))
    return count


def count_predictions(path: str) -> Callable[[Outcome], int]:
    if path.endswith(".json"):
        return lambda o: len(json.loads(Path(path).read_text())["predictions"])
    return count_csv(path)


# --- a strategy per command ---------------------------------------------------------------------------------

@st.composite
def predict_case(draw, w: World) -> Case:
    d = fresh(w)
    draft = Draft(draw, ["INPUT", "--model", "--batch-size", "--device", "--out", "format", "--slide-mpp"])
    kinds = draw(st.lists(st.sampled_from(GOOD_INPUTS), min_size=1, max_size=3))
    if "INPUT" in draft.bad:
        bad = draw(st.sampled_from(BAD_INPUTS + ["none"]))
        if bad == "none":  # no input at all (a bad one among good ones is the other case)
            kinds = []
        else:
            kinds[draw(st.integers(0, len(kinds) - 1))] = bad
    argv, rows = ["predict"], 0
    if not kinds:
        draft.blame(False, "input")
    for kind in kinds:
        path, n, culprit = input_path(kind, w)
        argv.append(path)
        rows += n or 0
        draft.blame(n is not None, culprit)
    argv += model_option(draft, w, d, repeat=2)
    argv += number_option(draft, "--batch-size", int_valid) + device_option(draft)
    suffix = draft.pick("format", [".csv", ".json", None], [".txt", ".geojson", ""])
    count = count_table
    if suffix is not None:
        opt, path = output_option(draft, w, d, "--out", OUT_FILES, suffix)
        argv += opt
        draft.blame(suffix in (".csv", ".json"), path if suffix else "format")
        count = count_predictions(path)
    if "--slide-mpp" in draft.bad:
        argv += ["--slide-mpp", draw(st.sampled_from(["0.25", "0", "-1", "abc"]))]
        draft.blame(False, "--slide")
    argv += draw(st.sampled_from([[], [], [], ["--tta"], ["--backend", "onnx"]]))
    return Case(argv + ["--quiet"], draft.culprits, rows, count)


JOBS = {"good": (True, ""), "truncated": (False, "stack_0.tiff"), "corrupt": (False, "stack_0.tiff"),
        "two": (False, "stacks"), "empty": (False, "stacked-histopathology-roi-cropouts"),
        "missing": (False, "no_job"), "file": (False, "a_file")}


@st.composite
def challenge_case(draw, w: World) -> Case:
    d = fresh(w)
    draft = Draft(draw, ["--input", "--output", "--model", "--batch-size", "--device"])
    job = draft.pick("--input", ["good"], [k for k, (ok, _) in JOBS.items() if not ok])
    draft.blame(*JOBS[job])
    job_path = {"missing": d / "no_job", "file": w.path("a_file")}.get(job, w.path(f"job_{job}"))
    opt, output = output_option(draft, w, d, "--output", OUT_DIRS)
    argv = ["challenge", "--input", str(job_path), *opt, *model_option(draft, w, d)]
    argv += number_option(draft, "--batch-size", int_valid) + device_option(draft)

    def count(o: Outcome) -> int:
        return len(json.loads((Path(output) / "multiple-mitotic-figure-classification.json").read_text()))
    return Case(argv, draft.culprits, 16, count)


@st.composite
def evaluate_case(draw, w: World) -> Case:
    d = fresh(w)
    draft = Draft(draw, ["--data", "--out", "--model", "--batch-size", "--device", "--n-boot", "--threshold",
                         "--seed"])
    spec, n = spec_option(draft, w, "--data", labelled=True)
    opt, out = output_option(draft, w, d, "--out", OUT_DIRS)
    argv = ["evaluate", *spec, *opt, *model_option(draft, w, d, repeat=2)]
    argv += number_option(draft, "--batch-size", int_valid) + device_option(draft)
    argv += number_option(draft, "--n-boot", lambda t: int_valid(t, 0), ["0", "20", "-1", "abc", "1.5"], False)
    argv += number_option(draft, "--threshold", threshold_valid, ["0.5", "0", "1", "1.5", "-0.1", "nan", "inf", "abc"])
    argv += number_option(draft, "--seed", lambda t: int_valid(t, 0), ["0", "7", "-1", "abc"])
    return Case(argv, draft.culprits, n, lambda o: json.loads((Path(out) / "metrics.json").read_text())["n"])


@st.composite
def explain_case(draw, w: World) -> Case:
    d = fresh(w)
    draft = Draft(draw, ["INPUT", "--out", "--model", "--limit", "--batch-size", "--device"])
    kind = draft.pick("INPUT", ["crop", "crops_dir", "link", "unicode_dir"], BAD_INPUTS)
    path, rows, culprit = input_path(kind, w)
    draft.blame(rows is not None, culprit)
    opt, out = output_option(draft, w, d, "--out", OUT_DIRS)
    argv = ["explain", path, *opt, *model_option(draft, w, d)]
    limit = number_option(draft, "--limit", int_valid, ["4", "1", "2", "0", "-1", "abc"], optional=False)
    argv += limit + number_option(draft, "--batch-size", int_valid) + device_option(draft)
    n = as_int(limit[1])
    expected = min(rows, n) if rows is not None and n is not None and n > 0 else None
    return Case(argv + ["--quiet"], draft.culprits, expected, count_csv(Path(out) / "explain.csv"))


@st.composite
def export_case(draw, w: World) -> Case:
    d = fresh(w)
    draft = Draft(draw, ["--onnx", "--model", "--opset"])
    opt, _ = output_option(draft, w, d, "--onnx", OUT_FILES, ".onnx")
    argv = ["export", *model_option(draft, w, d), *opt]
    argv += number_option(draft, "--opset", lambda t: int_valid(t, 13, 23), ["17", "12", "24", "abc", "-1"])
    return Case(argv, draft.culprits)


@st.composite
def train_case(draw, w: World) -> Case:
    d = fresh(w)
    draft = Draft(draw, ["--config", "--data", "--out", "override", "--resume"])
    argv = ["train", *config_option(draft, w, w.config), *spec_option(draft, w, "--data", labelled=True)[0]]
    argv += output_option(draft, w, d, "--out", OUT_DIRS)[0] + ["--no-progress", *overrides_of(draft)]
    if "--resume" in draft.bad:
        argv.append("--resume")
        draft.blame(False, "resume")
    return Case(argv, draft.culprits)


@st.composite
def experiment_case(draw, w: World) -> Case:
    d = fresh(w)
    draft = Draft(draw, ["--config", "--out", "override", "--data", "--reference"])
    argv = ["experiment", *config_option(draft, w, w.experiment), "--dry-run"]
    argv += output_option(draft, w, d, "--out", OUT_DIRS)[0]
    argv += [a for t in overrides_of(draft, planning=True) for a in ("--set", t)]
    if draw(st.booleans()) or "--data" in draft.bad:
        argv += spec_option(draft, w, "--data", labelled=True)[0]
    argv += draft.choice_option("--reference", [None, "stl", "mtl"], "nope")
    return Case(argv, draft.culprits)


@st.composite
def distil_case(draw, w: World) -> Case:
    d = fresh(w)
    draft = Draft(draw, ["--recipe", "--out", "override", "--data"])
    recipe = d / "recipe.yaml"
    recipe.write_text(f"data: manifest:{w.manifest}\nteacher: {{base: {w.config}, seeds: [0, 1]}}\n"
                      f"student: {{base: {w.config}}}\n")
    argv = ["distil", *config_option(draft, w, recipe, "--recipe"), "--dry-run"]
    argv += output_option(draft, w, d, "--out", OUT_DIRS)[0]
    argv += [a for t in overrides_of(draft) for a in ("--set", t)]
    if draw(st.booleans()) or "--data" in draft.bad:
        argv += spec_option(draft, w, "--data", labelled=True)[0]
    return Case(argv, draft.culprits)


@st.composite
def data_case(draw, w: World) -> Case:
    d = fresh(w)
    if draw(st.integers(0, 3)) == 0:  # download: only offline, from archives that cannot be AMi-Br
        draft = Draft(draw, ["--to"])
        opt, _ = output_option(draft, w, d, "--to", OUT_DIRS)
        archive = draw(st.sampled_from([w.path("corrupt.png"), d / "none.zip", w.path("empty_dir"), w.stack]))
        draft.blame(False, archive.name)
        return Case(["data", "download", "amibr", *opt, "--archive", str(archive), "--no-progress"], draft.culprits)
    draft = Draft(draw, ["SPEC", "--out"])
    spec, n = spec_option(draft, w, None, labelled=False)
    argv = ["data", "summary", *spec, "--json"]
    argv += output_option(draft, w, d, "--out", OUT_FILES, ".json", optional=True)[0]
    return Case(argv, draft.culprits, n, lambda o: json.loads(o.out)["n_figures"])


@st.composite
def masks_case(draw, w: World) -> Case:
    d = fresh(w)
    draft = Draft(draw, ["SPEC", "--out", "--limit", "--size", "--gallery", "--seed", "--workers"])
    spec, n = spec_option(draft, w, None, labelled=False)
    opt, out = output_option(draft, w, d, "--out", OUT_DIRS)
    argv = ["masks", *spec, *opt, "--no-progress"]
    limit = number_option(draft, "--limit", int_valid, ["3", "1", "0", "-1", "abc"], optional=False)
    argv += limit + number_option(draft, "--size", lambda t: int_valid(t, 16, 1024), ["128", "64", "0", "-1", "1"])
    argv += number_option(draft, "--gallery", int_valid, ["2", "1", "0", "-1"])
    argv += number_option(draft, "--seed", lambda t: int_valid(t, 0), ["0", "-1", "abc"])
    argv += number_option(draft, "--workers", lambda t: t == "1", ["1", "0", "-1", "abc"], optional=False)
    k = as_int(limit[1])
    rows = min(n, k) if n is not None and k is not None and k > 0 else None
    return Case(argv, draft.culprits, rows, count_csv(Path(out) / "masks.csv"))


@st.composite
def weights_case(draw, w: World) -> Case:
    d = fresh(w)
    if draw(st.booleans()):
        return Case(["weights", "check"])
    source = draw(st.sampled_from([d / "none.pth", w.path("empty_dir"), w.path("corrupt.png"), w.model]))
    return Case(["weights", "install", "--from", str(source)], [source.name])


@st.composite
def bench_case(draw, w: World) -> Case:
    d = fresh(w)
    draft = Draft(draw, ["--out", "--sections"])
    argv = ["bench", "--quick", *output_option(draft, w, d, "--out", OUT_FILES, ".json", optional=True)[0]]
    argv += draft.choice_option("--sections", [None, "inference", "flops"], "bogus")
    return Case(argv, draft.culprits)


@st.composite
def ensemble_case(draw, w: World) -> Case:
    d = fresh(w)
    draft = Draft(draw, ["MODEL", "--out", "--threshold"])
    kind = draft.pick("MODEL", ["tiny"], ["missing", "corrupt", "crop"])
    second = {"tiny": str(w.model), "missing": str(d / "nope.pt"), "corrupt": str(w.path("not_a_model.pt")),
              "crop": str(w.crops[0])}[kind]
    draft.blame(kind == "tiny", Path(second).name)
    opt, _ = output_option(draft, w, d, "--out", OUT_FILES, ".pt")
    argv = ["ensemble", str(w.model), second, *opt]
    argv += number_option(draft, "--threshold", threshold_valid, ["0.5", "0", "1", "1.5", "-0.1", "nan", "abc"])
    return Case(argv, draft.culprits)


@st.composite
def calibrate_case(draw, w: World) -> Case:
    d = fresh(w)
    draft = Draft(draw, ["--data", "--out", "--alpha", "--batch-size"])
    argv = ["calibrate", "--model", str(w.model), *spec_option(draft, w, "--data", labelled=True)[0]]
    argv += output_option(draft, w, d, "--out", OUT_FILES, ".pt")[0]
    argv += number_option(draft, "--alpha", lambda t: (as_float(t) or 0) > 0 and (as_float(t) or 1) < 1,
                          ["0.1", "0.05", "0", "1", "1.5", "nan", "abc"])
    argv += number_option(draft, "--batch-size", int_valid)
    return Case(argv, draft.culprits)


# folders adapt accepts -> crops they hold; the other input kinds are not folders of crops
ADAPT_FOLDERS = {"crops_dir": 2, "unicode_dir": 1, "labelled_dir": 12, "odd_dir": 3,
                 "nested_unreadable": 2 if ROOT else None, "unreadable_dir": 1 if ROOT else None}
ADAPT_BAD = ["empty_dir", "missing", "crop", "stack", "links_dir", "folder_with_corrupt", "under_file"]
ADAPT_LISTED = {"folder_with_corrupt": 2}  # files a bad folder lists: too few of them is refused first


@st.composite
def adapt_case(draw, w: World) -> Case:
    d = fresh(w)
    draft = Draft(draw, ["--images", "--out", "--model", "--min-images", "--batch-size", "--source-prior"])
    kind = draft.pick("--images", [k for k, n in ADAPT_FOLDERS.items() if n], ADAPT_BAD)
    path, _, culprit = input_path(kind, w)
    n = ADAPT_FOLDERS.get(kind)
    draft.blame(n is not None, culprit)
    argv = ["adapt", *model_option(draft, w, d), "--images", path]
    argv += output_option(draft, w, d, "--out", OUT_FILES, ".pt")[0]
    # the default minimum (64) is above every folder here: mostly a small one, sometimes one too large
    minimum = number_option(draft, "--min-images", int_valid, ["1", "2", "1", "13", "0", "-1", "abc"], optional=False)
    listed = n if n is not None else ADAPT_LISTED.get(kind)
    if listed is not None and int_valid(minimum[1]) and int(minimum[1]) > listed:
        draft.blame(False, Path(path).name)
    argv += minimum + number_option(draft, "--batch-size", int_valid)
    argv += number_option(draft, "--source-prior", lambda t: 0 < (as_float(t) or 0) < 1,
                          ["0.3", "0.5", "0", "1", "1.5", "nan", "abc"])
    argv += draw(st.sampled_from([[], [], ["--tent"], ["--threads", "1"]]))
    return Case(argv, draft.culprits)


# command -> (strategy, examples): a few hundred in all, most of them refused before any work
STRATEGIES = {"predict": (predict_case, 60), "challenge": (challenge_case, 25), "evaluate": (evaluate_case, 25),
              "explain": (explain_case, 12), "export": (export_case, 8), "train": (train_case, 50),
              "experiment": (experiment_case, 30), "data": (data_case, 40), "masks": (masks_case, 15),
              "weights": (weights_case, 6), "bench": (bench_case, 10), "ensemble": (ensemble_case, 12),
              "calibrate": (calibrate_case, 15), "adapt": (adapt_case, 15), "distil": (distil_case, 20)}


def test_every_command_is_fuzzed():
    assert set(STRATEGIES) == set(COMMANDS)


@pytest.fixture(autouse=True)
def _sandbox(world, tmp_path, monkeypatch):
    """Relative default outputs and the torch hub cache stay inside the test's folders."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    yield
    for case_dir in world.root.glob("case-*"):
        shutil.rmtree(case_dir, ignore_errors=True)


@pytest.mark.parametrize("command", list(STRATEGIES))
def test_fuzz_command(command, world):
    strategy, n = STRATEGIES[command]

    @examples(n)
    @given(case=strategy(world))
    def run(case: Case) -> None:
        check(case)

    run()
