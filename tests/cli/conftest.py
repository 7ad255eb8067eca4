"""A small world of good and bad inputs for the command-line tests, built once per session.

Everything is written under a temporary folder: a few real AMi-Br crops and the real track-2 stack
(copied, never modified in ../shared), and damaged versions of them: truncated TIFF stacks, corrupt and
truncated PNGs, manifests with conflicting labels, YAML files of the wrong shape, paths in the way of
outputs, read-only and unreadable folders, symbolic links and non-ASCII names. A tiny random model
(MobileNetV3-small at 64 px) keeps every successful prediction fast.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import stat
import traceback
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

# --- running one command line in-process ------------------------------------------------------------------

class WorkStarted(BaseException):
    """Raised where training or a benchmark would begin: everything before it was accepted."""


def _stop(*args, **kwargs):
    raise WorkStarted


@dataclass
class Outcome:
    rc: int | None
    out: str
    err: str
    exception: str | None = None  # the traceback of an exception that escaped main()
    started: bool = False


def run_cli(argv: list[str]) -> Outcome:
    """``mitotype ARGV`` in this process, with training and benchmarks stopped where they would start."""
    from mitotype.cli import main

    out, err = io.StringIO(), io.StringIO()
    rc, exc, started = None, None, False
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            mock.patch("lightning.pytorch.Trainer.fit", _stop), mock.patch("mitotype.bench.run_all", _stop):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse: usage errors exit 2, --help 0
            rc = e.code if isinstance(e.code, int) else 1
        except WorkStarted:
            started = True
        except Exception:  # noqa: BLE001 - the defect this harness looks for
            exc = traceback.format_exc()
    return Outcome(rc, out.getvalue(), err.getvalue(), exc, started)


# A root user reads and writes through any permission bit: the permission cases then expect success.
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

TINY_CONFIG = """\
model:
  encoder: mobilenetv3_small_050
  pretrained: false
  input_size: 64
  head_hidden: [16]
train:
  epochs: 1
  batch_size: 4
  max_train_batches: 1
  val_fraction: 0.3
  threads: 1
"""

EXPERIMENT = """\
name: tiny
data: folder:{folder}
seeds: [0]
protocols:
  kfold: {{k: 2}}
configs:
  stl: {{base: {config}}}
  mtl: {{base: {config}, overrides: [model.segmentation.enabled=true]}}
reference: stl
evaluate: {{n_boot: 0, batch_size: 8}}
"""


@dataclass
class World:
    root: Path
    model: Path  # the tiny model file
    crops: list[Path]  # good single crops
    stack: Path  # the real 16-page track-2 stack
    truncated_stack: Path  # the same stack cut to a third: only the first pages are complete
    folder: Path  # ROOT/Atypical, ROOT/Normal: N_FOLDER labelled crops
    manifest: Path  # the folder's crops as path,label rows
    config: Path  # a tiny, valid training config
    experiment: Path  # a tiny, valid experiment file (kfold k=2 over the folder)
    n_folder: int

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)


N_PER_CLASS = 6


def _build(root: Path, amibr: Path, track2: Path, model: Path) -> World:
    atypical = sorted((amibr / "patches" / "atypical").glob("*.png"))[:N_PER_CLASS]
    normal = sorted((amibr / "patches" / "normal").glob("*.png"))[:N_PER_CLASS]
    crops = root / "crops"
    crops.mkdir()
    for p in (atypical[0], normal[0]):
        shutil.copy(p, crops / p.name)
    folder = root / "labelled"
    for name, files in (("Atypical", atypical), ("Normal", normal)):
        (folder / name).mkdir(parents=True)
        for p in files:
            shutil.copy(p, folder / name / p.name)
    lines = ["path,label"] + [f"labelled/{c}/{p.name},{c.lower()}" for c, fs in
                              (("Atypical", atypical), ("Normal", normal)) for p in fs]
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    stack = root / "stack.tiff"
    shutil.copy(track2 / "input" / "stack_5.tiff", stack)
    stack.chmod(0o644)
    data = stack.read_bytes()
    truncated = root / "truncated.tiff"
    truncated.write_bytes(data[: len(data) // 3])
    config = root / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    experiment = root / "tiny_experiment.yaml"
    experiment.write_text(EXPERIMENT.format(folder=folder, config=config))
    world = World(root=root, model=model, crops=sorted(crops.iterdir()), stack=stack, truncated_stack=truncated,
                  folder=folder, manifest=manifest, config=config, experiment=experiment,
                  n_folder=2 * N_PER_CLASS)
    _damaged_files(world, data)
    return world


def _damaged_files(w: World, stack_bytes: bytes) -> None:
    """Bad inputs next to the good ones (names used by the strategies in test_cli_fuzz.py)."""
    png = w.crops[0].read_bytes()
    w.path("corrupt.png").write_bytes(bytes(range(256)) * 8)
    w.path("truncated.png").write_bytes(png[: len(png) // 2])
    w.path("empty.png").write_bytes(b"")
    w.path("not_a_model.pt").write_bytes(png)
    w.path("a_file").write_text("a regular file where a folder is expected\n")
    w.path("empty_dir").mkdir()
    (w.path("links")).mkdir()
    os.symlink(w.crops[0], w.path("links", "link.png"))
    os.symlink(w.path("nowhere.png"), w.path("links", "dangling.png"))
    unicode_dir = w.path("crops_ünï 文字")
    unicode_dir.mkdir()
    shutil.copy(w.crops[0], unicode_dir / "figür 1.png")
    _odd_images(w)
    # a folder of crops with one corrupt member: an error, never a silent drop
    bad_folder = w.path("folder_with_corrupt")
    bad_folder.mkdir()
    shutil.copy(w.crops[0], bad_folder / "good.png")
    (bad_folder / "bad.png").write_bytes(png[:100])
    # a folder whose sub-folder cannot be listed (a root user can list it anyway)
    nested = w.path("nested_unreadable")
    (nested / "open").mkdir(parents=True)
    (nested / "closed").mkdir()
    shutil.copy(w.crops[0], nested / "open" / "a.png")
    shutil.copy(w.crops[1], nested / "closed" / "b.png")
    (nested / "closed").chmod(0)
    closed_class = w.path("labelled_closed")
    shutil.copytree(w.folder, closed_class)
    (closed_class / "Normal").chmod(0)
    unreadable = w.path("unreadable_dir")
    unreadable.mkdir()
    shutil.copy(w.crops[0], unreadable / "a.png")
    unreadable.chmod(0)
    readonly = w.path("readonly_dir")
    readonly.mkdir()
    readonly.chmod(stat.S_IRUSR | stat.S_IXUSR)
    # manifests: the same image twice with conflicting labels; a listed file that is missing
    rows = w.manifest.read_text().splitlines()
    first_path = rows[1].split(",")[0]
    w.path("manifest_conflict.csv").write_text("\n".join([*rows, f"{first_path},normal"]) + "\n")
    w.path("manifest_missing.csv").write_text("\n".join([*rows, "labelled/Normal/nope.png,normal"]) + "\n")
    # YAML of the wrong shape
    w.path("list.yaml").write_text("- train.epochs=1\n- model.pretrained=false\n")
    w.path("broken.yaml").write_text("train: {epochs: [1\n")
    w.path("unknown_key.yaml").write_text("train: {epochz: 1}\n")
    # challenge jobs
    from mitotype.predict.challenge import INPUT_FOLDER

    for job, stacks in (("job_good", [w.stack]), ("job_truncated", [w.truncated_stack]),
                        ("job_corrupt", [w.path("corrupt.png")]), ("job_two", [w.stack, w.stack]),
                        ("job_empty", [])):
        folder = w.path(job) / INPUT_FOLDER
        folder.mkdir(parents=True)
        for i, s in enumerate(stacks):
            shutil.copy(s, folder / f"stack_{i}.tiff")


def _odd_images(w: World) -> None:
    """Odd modes and sizes: all readable crops (converted as docs/DATA.md says) but the too-large image and
    the stack whose pages differ in size."""
    import numpy as np
    import tifffile
    from PIL import Image

    odd = w.path("odd")
    odd.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (1, 1, 3), dtype=np.uint8)).save(odd / "one_pixel.png")
    Image.fromarray(rng.integers(0, 65535, (128, 128), dtype=np.uint16)).save(odd / "gray16.png")
    Image.fromarray(rng.integers(0, 255, (100, 140, 4), dtype=np.uint8)).save(odd / "rgba_100x140.png")
    Image.fromarray(rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8)).save(w.path("huge.png"))
    tifffile.imwrite(w.path("mixed_sizes.tiff"), rng.integers(0, 255, (128, 128, 3), dtype=np.uint8))
    tifffile.imwrite(w.path("mixed_sizes.tiff"), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), append=True)


def _tiny_model(path: Path) -> Path:
    import torch

    from mitotype.config import RunConfig
    from mitotype.models import create_model
    from mitotype.models.modelfile import save_model

    torch.manual_seed(0)
    cfg = RunConfig()
    cfg.model.encoder = "mobilenetv3_small_050"
    cfg.model.pretrained = False
    cfg.model.input_size = 64
    cfg.model.head_hidden = (16,)
    cfg.model.segmentation.enabled = cfg.model.pixel_classes.enabled = True
    save_model(path, create_model(cfg.model).eval(), cfg, threshold=0.5, extra={"purpose": "tests/cli"})
    return path


@pytest.fixture(scope="session")
def world(tmp_path_factory, amibr_root, track2_root) -> World:
    root = tmp_path_factory.mktemp("cli-world")
    model = _tiny_model(root / "tiny.pt")
    w = _build(root, amibr_root, track2_root, model)
    yield w
    for p in (w.path("nested_unreadable", "closed"), w.path("labelled_closed", "Normal"), w.path("unreadable_dir"),
              w.path("readonly_dir")):
        p.chmod(0o755)  # so that pytest can delete the folder
