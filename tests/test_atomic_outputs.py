"""Every output file is written atomically: a temporary sibling, then ``os.replace``.

Two halves: (1) a writer that crashes midway (while writing, at fsync, at the rename) leaves the previous
file untouched -- or none -- and no temporary file, for mitotype.io and for the real writers of model
files, prediction tables, GeoJSON, challenge JSON and figures; (2) a static check that no module under
src/mitotype writes a file any other way (append-only logs excepted).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pytest

from mitotype import io as mio

SRC = Path(__file__).resolve().parents[1] / "src" / "mitotype"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp")


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("where", ["while writing", "at fsync", "at rename"])
def test_atomic_write_crash_keeps_old_file(tmp_path, monkeypatch, where):
    target = tmp_path / "result.json"
    target.write_text('{"old": true}\n')
    if where == "at fsync":
        monkeypatch.setattr(mio.os, "fsync", lambda fd: (_ for _ in ()).throw(Boom()))
    if where == "at rename":
        monkeypatch.setattr(mio.os, "replace", lambda a, b: (_ for _ in ()).throw(Boom()))
    with pytest.raises(Boom), mio.atomic_write(target) as handle:
        handle.write('{"new": ')
        handle.flush()
        if where == "while writing":
            raise Boom()
    assert target.read_text() == '{"old": true}\n'
    assert leftovers(tmp_path) == []


def test_atomic_write_success_replaces(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    mio.write_text(target, "new")
    assert target.read_text() == "new" and leftovers(tmp_path) == []


def _crash_on_rename(monkeypatch):
    monkeypatch.setattr(mio.os, "replace", lambda a, b: (_ for _ in ()).throw(Boom()))


def tiny_model_file(path: Path) -> Path:
    from mitotype.config import RunConfig
    from mitotype.models import create_model
    from mitotype.models.modelfile import save_model

    cfg = RunConfig()
    cfg.model.encoder, cfg.model.pretrained = "test_resnet", False
    return save_model(path, create_model(cfg.model), cfg)


def test_model_file_crash_leaves_nothing(tmp_path, monkeypatch):
    _crash_on_rename(monkeypatch)
    with pytest.raises(Boom):
        tiny_model_file(tmp_path / "model.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_prediction_table_crash_leaves_nothing(tmp_path, monkeypatch, suffix):
    from mitotype.predict.run import make_rows, write_output

    rows = make_rows(["a.png", "b.png"], [0, 0], np.array([0.25, 0.75]), 0.5)
    _crash_on_rename(monkeypatch)
    with pytest.raises(Boom):
        write_output(tmp_path / f"predictions{suffix}", rows, {"models": []})
    assert list(tmp_path.iterdir()) == []


def test_geojson_and_figure_crash_leave_nothing(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mitotype.predict.geojson import write_geojson

    fig = plt.figure()
    _crash_on_rename(monkeypatch)
    with pytest.raises(Boom):
        write_geojson(tmp_path / "f.geojson", [{"x": 1.0, "y": 2.0, "p_atypical": 0.9, "class": "atypical"}], "s")
    with pytest.raises(Boom):
        mio.save_figure(fig, tmp_path / "plot.png")
    plt.close(fig)
    assert list(tmp_path.iterdir()) == []


def test_challenge_output_crash_leaves_nothing(tmp_path, monkeypatch, track2_root):
    """The grand-challenge container's one output file, through the real command path."""
    from mitotype.predict.challenge import run_challenge

    model = tiny_model_file(tmp_path / "model.pt")
    from mitotype.predict.challenge import INPUT_FOLDER

    job = tmp_path / "input" / INPUT_FOLDER
    job.mkdir(parents=True)
    (job / "stack_5.tiff").symlink_to(track2_root / "input" / "stack_5.tiff")
    out = tmp_path / "output"
    out.mkdir()
    _crash_on_rename(monkeypatch)
    with pytest.raises(Boom):
        run_challenge(tmp_path / "input", out, model_paths=[str(model)], device="cpu", progress=False)
    assert list(out.iterdir()) == []


# --- static check: nobody writes around mitotype.io --------------------------------------------------------

WRITERS = {"to_csv", "savefig", "save", "savez", "savez_compressed", "dump", "imwrite", "write_text",
           "write_bytes"}


def _atomic_handles(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.With):
            for item in node.items:
                call = item.context_expr
                if (isinstance(call, ast.Call) and getattr(call.func, "id", getattr(call.func, "attr", None))
                        == "atomic_write" and isinstance(item.optional_vars, ast.Name)):
                    names.add(item.optional_vars.id)
    return names


def _violations(path: Path) -> list[str]:
    """Calls in ``path`` that write a file other than through an ``atomic_write`` handle."""
    tree = ast.parse(path.read_text(), str(path))
    handles = _atomic_handles(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = getattr(func, "attr", getattr(func, "id", ""))
        where = f"{path.name}:{node.lineno}" if SRC not in path.parents else \
            f"{path.relative_to(SRC.parent)}:{node.lineno}"
        if name == "open":
            mode = node.args[1] if len(node.args) > 1 and name == "open" and isinstance(func, ast.Name) else (
                node.args[0] if node.args and isinstance(func, ast.Attribute) else None)
            for kw in node.keywords:
                if kw.arg == "mode":
                    mode = kw.value
            if isinstance(mode, ast.Constant) and isinstance(mode.value, str) and set(mode.value) & set("wx"):
                found.append(f"{where}: open(..., {mode.value!r})")
        elif name in WRITERS and isinstance(func, ast.Attribute):
            receiver = func.value
            if name in ("write_text", "write_bytes") and getattr(receiver, "id", "") not in ("mio", "io"):
                found.append(f"{where}: .{name}() on a path")
            elif name not in ("write_text", "write_bytes"):
                first = 1 if getattr(receiver, "id", "") in ("torch", "json", "pickle") else 0
                target = node.args[first] if len(node.args) > first else next((k.value for k in node.keywords
                                                                if k.arg in ("f", "file", "fname", "path_or_buf")),
                                                               None)
                if isinstance(target, ast.Name) and target.id in handles:
                    continue
                if name == "save" and isinstance(target, ast.Name) and target.id == "buffer":
                    continue  # an in-memory buffer, then write_bytes
                if name == "dump" and getattr(receiver, "id", "") in ("yaml",) and target is not None \
                        and not node.args[1:]:
                    continue  # yaml.dump(obj) returns a string
                found.append(f"{where}: .{name}({ast.unparse(target) if target is not None else ''})")
    return found


def test_no_module_writes_around_mitotype_io():
    allowed = {SRC / "io.py"}
    problems = [v for path in sorted(SRC.rglob("*.py")) if path not in allowed for v in _violations(path)]
    assert problems == [], "writes that bypass mitotype.io.atomic_write:\n" + "\n".join(problems)


def test_static_check_catches_a_plain_write(tmp_path):
    """The checker itself: direct writes are flagged, writes through atomic_write are not."""
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\ndef f(p, t, fig, m):\n    open(p, 'w').write('x')\n    p.write_text('x')\n"
                   "    t.to_csv(p)\n    fig.savefig(p)\n    torch.save(m, p)\n"
                   "    with atomic_write(p) as h:\n        t.to_csv(h)\n        torch.save(m, h)\n")
    assert len(_violations(bad)) == 5


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_respect_the_umask(tmp_path, umask, mode):
    """mkstemp creates 0600 files; outputs must be readable as any new file is (a container's non-root
    user writes the challenge JSON that the host reads)."""
    old = os.umask(umask)
    try:
        mio.write_json(tmp_path / "out.json", {"a": 1})
        mio.write_bytes(tmp_path / "model.onnx", b"x")
    finally:
        os.umask(old)
    for name in ("out.json", "model.onnx"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode


def test_absolute_path_keeps_symbolic_links(tmp_path, monkeypatch):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    assert mio.absolute_path("link/a.png") == str(tmp_path / "link" / "a.png")
