"""The MIDOG 2025 track-2 interface on the challenge's own example stack, in the container's layout."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from mitotype.cli import main
from mitotype.errors import MitotypeError
from mitotype.predict.challenge import INPUT_FOLDER, OUTPUT_NAME, entries, find_stack


@pytest.fixture
def job(tmp_path, track2_root):
    """``/input`` as grand-challenge lays it out, with the example's stack_5.tiff."""
    folder = tmp_path / "input" / INPUT_FOLDER
    folder.mkdir(parents=True)
    shutil.copy(track2_root / "input" / "stack_5.tiff", folder / "stack_5.tiff")
    shutil.copy(track2_root / "input" / "inputs.json", tmp_path / "input" / "inputs.json")
    return tmp_path


def test_challenge_writes_what_the_evaluator_reads(job, small_model, small_loaded, capsys):
    assert main(["challenge", "--input", str(job / "input"), "--output", str(job / "output"),
                 "--model", str(small_model)]) == 0
    assert capsys.readouterr().err == ""  # no progress bars or chatter on stderr without a terminal
    raw = (job / "output" / OUTPUT_NAME).read_text()
    result = json.loads(raw)
    assert isinstance(result, list) and len(result) == 16
    for entry in result:
        # the official evaluator's own checks
        assert set(entry) == {"class", "confidence"}
        assert entry["class"] in ("normal", "atypical")
        assert isinstance(entry["confidence"], float) and 0.0 <= entry["confidence"] <= 1.0
        assert entry["class"] == ("atypical" if entry["confidence"] >= small_loaded.threshold else "normal")
    assert len({e["class"] for e in result}) == 2  # the test model calls both classes on this stack
    assert sorted(p.name for p in (job / "output").iterdir()) == [OUTPUT_NAME]


def test_confidences_are_the_pages_p_atypical_in_order(job, small_model, small_loaded, track2_root):
    from mitotype.data.images import read_rgb
    from mitotype.models.inference import predict_proba
    from mitotype.predict.challenge import run_challenge

    path = run_challenge(job / "input", job / "output", [str(small_model)], device="cpu")
    got = [e["confidence"] for e in json.loads(path.read_text())]
    pages = np.stack([read_rgb(track2_root / "input" / "stack_5.tiff", page=i) for i in range(16)])
    # the challenge's default backend on CPU is onnxruntime on the cached graph
    np.testing.assert_allclose(got, predict_proba([small_loaded], pages, backend="onnx"), atol=1e-6)


def test_entries_are_plain_floats_also_at_the_ends():
    out = entries(np.array([0.0, 1.0, 0.5, 1.0000001], dtype=np.float32), threshold=0.5)
    assert [e["class"] for e in out] == ["normal", "atypical", "atypical", "atypical"]
    assert all(type(e["confidence"]) is float and 0 <= e["confidence"] <= 1 for e in out)
    assert json.loads(json.dumps(out))[0]["confidence"] == 0.0  # written as 0.0, read back as a float


def test_layout_errors(tmp_path, job):
    with pytest.raises(MitotypeError, match="stacked-histopathology-roi-cropouts"):
        find_stack(tmp_path / "nothing")
    (tmp_path / "empty" / INPUT_FOLDER).mkdir(parents=True)
    with pytest.raises(MitotypeError, match="no .tif"):
        find_stack(tmp_path / "empty")
    folder = job / "input" / INPUT_FOLDER
    shutil.copy(folder / "stack_5.tiff", folder / "stack_6.tif")
    with pytest.raises(MitotypeError, match="2 stacks"):
        find_stack(job / "input")


def test_dockerfile_entry_point_is_a_valid_challenge_command():
    """The container's ENTRYPOINT must parse as ``mitotype challenge`` on /input and /output."""
    from pathlib import Path

    from mitotype.cli import build_parser

    dockerfile = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text()
    line = next(ln for ln in dockerfile.splitlines() if ln.startswith("ENTRYPOINT"))
    argv = json.loads(line.split(None, 1)[1])
    assert argv[0] == "mitotype"
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.input, args.output) == ("challenge", "/input", "/output")
    assert args.model == ["/opt/app/model.pt"]
    assert "COPY --chown=user:user ${MODEL} /opt/app/model.pt" in dockerfile
