"""The inference rows: the default model's classification path on each backend, exactly as
``mitotype.models.inference`` (torch) and ``mitotype.models.onnx`` (onnxruntime) run it; the real stack end to
end in process; the challenge's model time alone; static int8 against fp32."""

from __future__ import annotations

import copy
import dataclasses
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mitotype.bench.machine import load
from mitotype.bench.timing import row, time_call

REFERENCE = "torch fp32 channels-last"  # eager PyTorch as mitotype ran every model before onnxruntime was the default


def torch_variant(loaded, **options) -> Callable:
    """``models.inference.torch_runner(..., **options)`` on a copy of the network (each variant converts
    its own: layout, folding)."""
    from mitotype.models.inference import torch_runner

    return torch_runner(dataclasses.replace(loaded, model=copy.deepcopy(loaded.model)), "cpu", **options)


def torch_runners(loaded) -> dict[str, Callable]:
    """Eager PyTorch variants of the classification path: channels-last fp32 (the reference), NCHW fp32,
    channels-last with batch norm folded into the convolutions (the ``torch`` backend), bf16 autocast."""
    return {REFERENCE: torch_variant(loaded, fold=False),
            "torch fp32 NCHW": torch_variant(loaded, fold=False, channels_last=False),
            "torch fp32 channels-last, BN folded": torch_variant(loaded, fold=True),
            "torch bf16 channels-last": torch_variant(loaded, fold=False, bf16=True)}


def onnx_files(loaded, folder: Path, int8: bool = True) -> dict[str, Path]:
    """The model exported by mitotype.models.onnx, plus an int8 dynamically quantised copy."""
    from mitotype.models.int8 import quantise_dynamic
    from mitotype.models.onnx import export_onnx

    files = {"onnxruntime fp32": export_onnx(loaded, folder / "model.onnx")}
    if int8:
        try:
            files["onnxruntime int8 dynamic"] = quantise_dynamic(files["onnxruntime fp32"], folder / "model.int8.onnx")
        except Exception as exc:  # noqa: BLE001 - report, do not abort the benchmark
            print(f"int8 dynamic quantisation skipped: {type(exc).__name__}: {exc}", file=sys.stderr)
    return files


def onnx_runner(path: Path, threads: int) -> Callable:
    """The session exactly as ``mitotype predict`` opens it (``mitotype.models.onnx.OnnxClassifier``)."""
    from mitotype.models.onnx import OnnxClassifier

    return OnnxClassifier(path, threads=threads).logits


# Variants that lost clearly in probes here are timed at a few batch sizes and the first thread count only,
# to keep the run short.
LIMITED_BATCHES = {"torch fp32 NCHW": (16, 64), "torch bf16 channels-last": (16, 64),
                   "onnxruntime int8 dynamic": (16,)}


def bench_inference(loaded, batches=(1, 16, 64, 256), threads=(1, 2), extra: bool = True,
                    progress: Callable[[str], None] = print) -> list[dict]:
    """Rows of patches/s per backend x threads x batch; ``ratio`` = vs torch fp32 channels-last, same cell.
    ``extra``: also NCHW, bf16 and int8 (at the batch sizes of LIMITED_BATCHES)."""
    import torch

    size = loaded.config.model.input_size
    rows = []
    with tempfile.TemporaryDirectory(prefix="mitotype-bench-") as tmp:
        files = onnx_files(loaded, Path(tmp), int8=extra)
        runners = torch_runners(loaded)
        if not extra:
            runners = {k: v for k, v in runners.items() if k not in LIMITED_BATCHES}
        for n in threads:
            torch.set_num_threads(n)
            backends = {**runners, **{name: onnx_runner(path, n) for name, path in files.items()}}
            for batch in batches:
                x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).numpy()
                cell = []
                for name, run in backends.items():
                    limited = name in LIMITED_BATCHES
                    if batch in LIMITED_BATCHES.get(name, (batch,)) and (n == threads[0] or not limited):
                        cell.append(row("inference", name, n, batch, time_call(lambda run=run, x=x: run(x))))
                for r in cell:
                    r["ratio"] = r["patches_per_s"] / cell[0]["patches_per_s"]
                rows += cell
                best = max(cell, key=lambda r: r["patches_per_s"])
                progress(f"inference threads={n} batch={batch}: best {best['setting']} "
                         f"{best['patches_per_s']:.0f} patches/s (load {load():.1f})")
    return rows


def bench_stack(loaded, stack: Path | None, threads: int = 1) -> list[dict]:
    """End to end on a real 16-crop track-2 stack: read the TIFF, preprocess, predict (torch backend)."""
    import numpy as np
    import torch

    from mitotype.data.images import read_rgb
    from mitotype.models.inference import predict_proba

    if stack is None or not stack.is_file():
        return []
    torch.set_num_threads(threads)

    def end_to_end():
        import tifffile

        with tifffile.TiffFile(stack) as tif:
            n = len(tif.pages)
        images = np.stack([read_rgb(stack, page) for page in range(n)])
        return predict_proba(loaded, images, batch_size=64, backend="torch-eager")

    n_pages = len(end_to_end())
    return [row("stack", f"read + preprocess + predict (torch eager, in process), {stack.name}", threads, n_pages,
                time_call(end_to_end))]


def bench_challenge_model(stack: Path | None, threads: int = 1) -> list[dict]:
    """The challenge stack's model time alone, apart from the command's cold wall time: its pages decoded
    once, then what ``run_challenge`` does with them on the default backend (crop, resize, normalise,
    network), in this process with the model open and warm."""
    from mitotype.data.images import load_images
    from mitotype.models.inference import Predictor
    from mitotype.models.modelfile import default_model_path
    from mitotype.predict.challenge import stack_figures
    from mitotype.predict.run import load_models

    if stack is None or not stack.is_file() or not default_model_path().is_file():
        return []
    models = load_models(["default"], "cpu", "auto", threads)
    images = load_images(stack_figures(stack), size=max(m.config.model.crop_size for m in models))
    predictor = Predictor(models, "auto", "cpu", threads=threads)
    timing = time_call(lambda: predictor(images, 64))
    return [row("e2e", f"challenge model time alone ({len(images)} pages decoded: preprocess + network, "
                       f"{predictor.backend}, in process)", threads, len(images), timing,
                seconds=round(timing["wall"], 4))]


def bench_int8(loaded, amibr_root: Path | None, threads: int = 1,
               progress: Callable[[str], None] = print) -> list[dict]:
    """onnxruntime fp32 vs static int8 QDQ (``mitotype export --int8``: 320 training-split crops, seed 0):
    AUROC on the AMi-Br test split (826 crops) and speed at batch 64 on real test crops."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from mitotype.data.images import load_images
    from mitotype.data.spec import load_figures
    from mitotype.models.inference import normalise
    from mitotype.models.int8 import calibration_batch, quantise_int8
    from mitotype.models.onnx import OnnxClassifier, export_onnx

    if amibr_root is None or not (amibr_root / "patches").is_dir() or not getattr(loaded, "path", ""):
        return []
    m = loaded.config.model
    test = load_figures(f"amibr:{amibr_root}:split=test")
    x = normalise(load_images(test, size=m.crop_size), m.crop_size, m.input_size, m.mean, m.std)
    y = np.array([f.label for f in test])
    rows = []
    with tempfile.TemporaryDirectory(prefix="mitotype-bench-int8-") as tmp:
        fp32 = export_onnx(loaded, Path(tmp) / "fp32.onnx")
        started = time.perf_counter()
        int8 = quantise_int8(fp32, Path(tmp) / "int8.onnx",
                             calibration_batch(loaded, f"amibr:{amibr_root}:split=train"))
        progress(f"int8: calibrated and quantised in {time.perf_counter() - started:.0f} s")
        probs = {}
        for name, path in (("onnxruntime fp32", fp32), ("onnxruntime int8 static QDQ", int8)):
            classifier = OnnxClassifier(path, threads=threads)
            probs[name] = np.concatenate([classifier(x[i:i + 64]) for i in range(0, len(x), 64)])
            r = row("int8", name, threads, 64, time_call(lambda c=classifier: c(x[:64])))
            r.update(auroc=float(roc_auc_score(y, probs[name])))
            rows.append(r)
    ref = probs["onnxruntime fp32"]
    for r in rows:
        r["ratio"] = r["patches_per_s"] / rows[0]["patches_per_s"]
        r["auroc_change"] = r["auroc"] - rows[0]["auroc"]
        r["max_abs_dp"] = float(np.abs(probs[r["setting"]] - ref).max())
        r["class_changes"] = int(((probs[r["setting"]] >= loaded.threshold) != (ref >= loaded.threshold)).sum())
        progress(f"int8 {r['setting']}: AUROC {r['auroc']:.4f} ({r['auroc_change']:+.4f}), "
                 f"{r['patches_per_s']:.0f} patches/s, max |dP| {r['max_abs_dp']:.3f}, "
                 f"{r['class_changes']} of {len(ref)} classes changed")
    return rows
