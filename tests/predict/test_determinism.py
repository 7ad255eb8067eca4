"""The same input gives bit-identical predictions on CPU across runs: two fresh processes, the real
MIDOG25 track-2 stack, the session's small real model file (tests/predict/conftest.py), raw float32
P(atypical) compared byte for byte -- for the torch backend (1 and 2 threads) and onnxruntime, plus the
CSV that ``mitotype predict`` writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # fresh processes import torch: ~30 s per test on the shared 2 cores

SCRIPT = """
import sys, numpy as np, torch
from mitotype.data.images import read_rgb
from mitotype.models.inference import predict_proba
from mitotype.models.modelfile import load_model
model, stack, backend, threads, out = sys.argv[1:6]
torch.set_num_threads(int(threads))
images = np.stack([read_rgb(stack, page) for page in range(16)])
probs = predict_proba(load_model(model), images, batch_size=6, backend=backend)
np.save(out, probs.astype(np.float32))
"""


def _env(tmp_path: Path) -> dict[str, str]:
    # a private ONNX cache per test keeps both processes on the same export, made by the first
    return {**os.environ, "HF_HUB_OFFLINE": "1", "MITOTYPE_CACHE": str(tmp_path / "cache")}


@pytest.mark.parametrize(("backend", "threads"), [("torch", 1), ("torch", 2), ("onnx", 1)])
def test_two_processes_give_identical_bytes(small_model, track2_root, tmp_path, backend, threads):
    import numpy as np

    stack = track2_root / "input" / "stack_5.tiff"
    outs = []
    for run in range(2):
        out = tmp_path / f"p{run}.npy"
        done = subprocess.run([sys.executable, "-c", SCRIPT, str(small_model), str(stack), backend, str(threads),
                               str(out)], env=_env(tmp_path), capture_output=True, text=True, timeout=300,
                              check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    probs = np.load(tmp_path / "p0.npy")
    assert probs.shape == (16,) and np.isfinite(probs).all() and probs.std() > 0  # not a constant output


def test_predict_command_output_is_identical(small_model, track2_root, tmp_path):
    stack = track2_root / "input" / "stack_5.tiff"
    texts = []
    for run in range(2):
        out = tmp_path / f"predictions{run}.csv"
        done = subprocess.run([sys.executable, "-m", "mitotype.cli", "predict", str(stack), "--model",
                               str(small_model), "--device", "cpu", "--out", str(out)], env=_env(tmp_path),
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        texts.append(out.read_bytes())
    assert texts[0] == texts[1] and texts[0].count(b"\n") == 17
