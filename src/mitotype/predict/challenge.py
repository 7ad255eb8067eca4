"""The MIDOG 2025 track-2 (atypical mitosis classification) algorithm interface.

Grand-challenge runs the container once per input stack: ``/input/images/stacked-histopathology-roi-cropouts/``
holds one multi-page TIFF (up to 16 pages, each a crop centred on a mitotic figure), and the algorithm
writes ``/output/multiple-mitotic-figure-classification.json``: a list with one entry per page, in page order,
``{"class": "normal" | "atypical", "confidence": P(atypical)}``. ``confidence`` is always P(atypical)
(a float in [0, 1], also for figures called normal): the evaluator's README example has that meaning and
AUROC is computed from it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mitotype.data.figure import LABELS, Figure
from mitotype.errors import MitotypeError

INPUT_FOLDER = Path("images") / "stacked-histopathology-roi-cropouts"
OUTPUT_NAME = "multiple-mitotic-figure-classification.json"


def find_stack(input_dir: str | Path) -> Path:
    """The one stack of a job: ``INPUT/images/stacked-histopathology-roi-cropouts/*.tif[f]``."""
    folder = Path(input_dir) / INPUT_FOLDER
    if not folder.is_dir():
        raise MitotypeError(f"{folder}: input folder not found (expected the grand-challenge layout "
                            f"INPUT/{INPUT_FOLDER.as_posix()}/*.tiff)")
    stacks = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".tif", ".tiff"))
    if not stacks:
        raise MitotypeError(f"{folder}: no .tif/.tiff stack found")
    if len(stacks) > 1:
        raise MitotypeError(f"{folder}: {len(stacks)} stacks found ({', '.join(p.name for p in stacks)}); "
                            "a grand-challenge job has exactly one")
    return stacks[0]


def stack_figures(stack: Path) -> list[Figure]:
    """One Figure per page, in page order (every page, or a MitotypeError naming the first bad one)."""
    from mitotype.data.images import tiff_page_count

    n = tiff_page_count(stack)
    if n == 0:
        raise MitotypeError(f"{stack}: the stack has no pages")
    return [Figure(path=str(stack), label=None, domain="", group=stack.name, page=i, source="challenge")
            for i in range(n)]


def entries(probs: np.ndarray, threshold: float) -> list[dict[str, Any]]:
    """The evaluator's entries: class from the threshold, confidence = P(atypical) as a Python float."""
    out = []
    for p in np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0):
        out.append({"class": LABELS[int(p >= threshold)], "confidence": float(p)})
    return out


def run_challenge(
    input_dir: str | Path,
    output_dir: str | Path,
    model_paths: Sequence[str] = ("default",),
    tta: bool = False,
    batch_size: int = 64,
    device: str = "auto",
    progress: bool | None = None,
    backend: str = "auto",
    threads: int | None = None,
) -> Path:
    """Classify every page of the job's stack and write the evaluator's JSON; returns its path.

    ``backend="auto"`` on CPU: onnxruntime on the cached graph, so a warm cache starts without torch."""
    from mitotype.data.images import load_images
    from mitotype.io import write_json
    from mitotype.models.inference import predict_proba
    from mitotype.predict.run import ensemble_threshold, load_models, resolve_device

    # grand-challenge shows stderr as warnings: progress bars only for a person at a terminal
    show = sys.stderr.isatty() if progress is None else progress
    stack = find_stack(input_dir)
    device = resolve_device(device)
    models = load_models(model_paths, device, backend, threads)
    figures = stack_figures(stack)
    crop_size = max(m.config.model.crop_size for m in models)
    images = load_images(figures, size=crop_size, policy="center-crop", progress=show)
    probs = predict_proba(models, images, batch_size=batch_size, tta=tta, device=device, progress=show,
                          backend=backend, threads=threads)
    if len(probs) != len(figures) or not np.isfinite(probs).all():
        raise MitotypeError(f"{stack}: the model gave {len(probs)} finite probabilities for {len(figures)} pages")
    path = Path(output_dir) / OUTPUT_NAME
    write_json(path, entries(probs, ensemble_threshold(models)))
    return path
