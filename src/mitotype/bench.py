"""Speed and memory benchmarks (``mitotype bench``, ``benchmarks/*.py``); numbers in docs/PERFORMANCE.md.

Sections, each a list of rows (dicts) that :func:`table` prints:

* ``e2e``: ``mitotype predict`` over the AMi-Br crops and ``mitotype challenge`` on the track-2 stack as
  users run them, each in a fresh process (start, imports, decoding, network, output), eager torch vs the
  folded torch and onnxruntime defaults; ``ms/batch`` is the whole command there; and the challenge's
  model time alone (preprocessing + network on the decoded stack, in process);
* ``inference``: the default model's classification path, PyTorch eager (NCHW, channels-last, bf16
  autocast) vs onnxruntime (fp32, int8 dynamic quantisation), batch 1/16/64/256, 1 and 2 threads;
* ``baseline``: the official challenge baseline's architecture (timm ``efficientnetv2_m``, 224 px, random
  init) against ours in the same process and setting;
* ``flops``: FLOPs per patch (``torch.utils.flop_counter``) and the fraction of this CPU's estimated peak
  that the measured speed implies;
* ``training``: forward + backward + AdamW step of single-task vs multi-task vs the paper's ResNet-50,
  patches/s and peak RSS, each in a fresh subprocess (peak RSS is per process); then the auxiliary-decoder
  settings of ``train.speed.DECODER_SETTINGS`` against single-task, back to back in one subprocess.

Every figure is the median of several timed runs after a warm-up. Comparisons are ratios of figures taken
in the same benchmark run. The machine is shared, so each row also gives patches per CPU-second (the
process's own CPU time; on a busy machine it tracks what the code would do alone better than wall time).
Weights do not change speed: without the shipped default model, the architecture comes from
``configs/cpu_mtl.yaml`` with random weights.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONFIGS = Path(__file__).resolve().parent / "configs"  # shipped in the package (the clone's configs/ links here)
# Peak fp32 FLOPs per cycle per core with AVX-512: 2 FMA units x 16 lanes x 2 (multiply + add).
FLOPS_PER_CYCLE_AVX512 = 64
REFERENCE = "torch fp32 channels-last"  # eager PyTorch as mitotype ran every model before onnxruntime was the default


# --- configuration and machine ----------------------------------------------------------------------------

def run_config(name: str, overrides: list[str] | None = None):
    """(RunConfig, source) for ``configs/<name>.yaml`` with random-init weights (speed does not need them)."""
    from mitotype.config import load_config

    fixed = ["model.pretrained=false", "model.weights=null"]
    return load_config(CONFIGS / f"{name}.yaml", fixed + list(overrides or [])), f"configs/{name}.yaml"


def default_model():
    """The shipped default model if there is one, else the cpu_mtl architecture (random init)."""
    from mitotype.models import create_model
    from mitotype.models.modelfile import LoadedModel, default_model_path, load_model

    if default_model_path().is_file():
        return load_model("default"), "src/mitotype/assets/default.pt"
    cfg, source = run_config("cpu_mtl")
    return LoadedModel(model=create_model(cfg.model).eval(), config=cfg, threshold=0.5), source


def cpu_info() -> dict[str, Any]:
    """CPU model, core count, clock, AVX-512, and the estimated fp32 peak (see FLOPS_PER_CYCLE_AVX512)."""
    info: dict[str, Any] = {"cores": os.cpu_count(), "model": platform.processor() or "?", "mhz": None}
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                info["model"] = value.strip()
            elif key.strip() == "cpu MHz" and info["mhz"] is None:
                info["mhz"] = float(value)
        info["avx512f"] = " avx512f " in f" {text} "
        info["avx512_bf16"] = "avx512_bf16" in text
        info["amx_bf16"] = "amx_bf16" in text
    per_cycle = FLOPS_PER_CYCLE_AVX512 if info.get("avx512f") else 32
    info["peak_gflops"] = (info["cores"] * (info["mhz"] or 0) * 1e6 * per_cycle / 1e9) or None
    info["peak_formula"] = f"{info['cores']} cores x {info['mhz']} MHz x {per_cycle} fp32 FLOP/cycle"
    return info


def load() -> float:
    return os.getloadavg()[0]


# --- timing -----------------------------------------------------------------------------------------------

def time_call(fn: Callable[[], Any], min_runs: int = 3, min_seconds: float = 0.3, warmup: int = 1,
              max_runs: int = 50) -> dict[str, float]:
    """Median wall and CPU seconds of ``fn()`` over at least ``min_runs`` runs and ``min_seconds``."""
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    started = time.perf_counter()
    while len(walls) < min_runs or (time.perf_counter() - started < min_seconds and len(walls) < max_runs):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return {"wall": statistics.median(walls), "cpu": statistics.median(cpus), "runs": len(walls)}


def row(section: str, setting: str, threads: int, batch: int, timing: dict[str, float], **extra: Any) -> dict:
    return {"section": section, "setting": setting, "threads": threads, "batch": batch,
            "patches_per_s": batch / timing["wall"], "ms_per_batch": 1000 * timing["wall"],
            "patches_per_cpu_s": batch / timing["cpu"], "runs": timing["runs"], "load": round(load(), 1),
            **extra}


# --- inference --------------------------------------------------------------------------------------------

def fold_batchnorm(model):
    """Batch norm folded into the convolutions (``mitotype.models.inference.fold_batchnorm``)."""
    from mitotype.models.inference import fold_batchnorm as fold

    return fold(model)


def torch_runners(model) -> dict[str, Callable]:
    """Eager PyTorch variants of the classification path: NCHW fp32, channels-last fp32 (as
    ``mitotype.models.inference`` runs it), the same with batch norm folded into the convolutions, and
    channels-last bf16 autocast."""
    import copy

    import torch

    plain = copy.deepcopy(model).eval().to(memory_format=torch.contiguous_format)
    last = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
    folded = fold_batchnorm(model).to(memory_format=torch.channels_last)

    def make(net, channels_last: bool, bf16: bool):
        def run(x):
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return net(x, dense=False).logits.float()
        return run

    return {REFERENCE: make(last, True, False), "torch fp32 NCHW": make(plain, False, False),
            "torch fp32 channels-last, BN folded": make(folded, True, False),
            "torch bf16 channels-last": make(last, True, True)}


def onnx_files(loaded, folder: Path, int8: bool = True) -> dict[str, Path]:
    """The model exported by mitotype.models.onnx, plus an int8 dynamically quantised copy."""
    from mitotype.models.onnx import export_onnx

    files = {"onnxruntime fp32": export_onnx(loaded, folder / "model.onnx")}
    if int8:
        try:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(files["onnxruntime fp32"]), str(folder / "model.int8.onnx"),
                             weight_type=QuantType.QInt8)
            files["onnxruntime int8 dynamic"] = folder / "model.int8.onnx"
        except Exception as exc:  # noqa: BLE001 - report, do not abort the benchmark
            print(f"int8 dynamic quantisation skipped: {type(exc).__name__}: {exc}", file=sys.stderr)
    return files


def onnx_runner(path: Path, threads: int) -> Callable:
    """The session exactly as ``mitotype predict`` opens it (``mitotype.models.onnx.session_options``)."""
    import numpy as np

    from mitotype.models.onnx import OnnxClassifier

    classifier = OnnxClassifier(path, threads=threads)

    def run(x):
        return classifier.logits(np.ascontiguousarray(x.numpy(), dtype=np.float32))

    return run


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
        runners = torch_runners(loaded.model)
        if not extra:
            runners = {k: v for k, v in runners.items() if k not in LIMITED_BATCHES}
        for n in threads:
            torch.set_num_threads(n)
            backends = {**runners, **{name: onnx_runner(path, n) for name, path in files.items()}}
            for batch in batches:
                x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
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


# --- end to end: the commands users run, each in a fresh process ------------------------------------------

E2E_PREDICT = (("torch-eager", 1), ("torch", 1), ("auto", 1), ("auto", 2))


def timed_command(args: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall and CPU seconds (user + system of the child) of one ``mitotype ...`` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mitotype", *args], capture_output=True, text=True, env=env,
                          check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"mitotype {' '.join(args)} failed: {proc.stderr[-1000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "runs": 1}


def e2e_row(setting: str, threads: int, batch: int, n: int, timing: dict[str, float]) -> dict:
    """``ms_per_batch`` holds the whole command's wall time here (ms), ``patches_per_s`` = n / wall."""
    return {"section": "e2e", "setting": setting, "threads": threads, "batch": batch,
            "patches_per_s": n / timing["wall"], "ms_per_batch": 1000 * timing["wall"],
            "patches_per_cpu_s": n / timing["cpu"], "runs": timing["runs"], "load": round(load(), 1),
            "seconds": round(timing["wall"], 2)}


def bench_e2e(amibr: Path | None, stack: Path | None, quick: bool = False,
              progress: Callable[[str], None] = print) -> list[dict]:
    """``mitotype predict`` over the AMi-Br crops (--batch-size 64) per backend and thread count, and
    ``mitotype challenge`` on the 16-crop stack: the first run (cache empty: the export included), then
    cold process starts with the cache warm (median of 3), against the eager torch path. Each command in a
    fresh process with its own empty cache folder; ``ratio`` = vs the eager row of the same table."""
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="mitotype-bench-e2e-") as tmp:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "MITOTYPE_CACHE": str(Path(tmp) / "cache")}
        if stack is not None and stack.is_file():
            job = Path(tmp) / "in" / "images" / "stacked-histopathology-roi-cropouts"
            job.mkdir(parents=True)
            (job / stack.name).symlink_to(stack.resolve())
            base = ["challenge", "--input", str(Path(tmp) / "in"), "--output", str(Path(tmp) / "out"),
                    "--threads", "1"]
            cells = [("torch-eager", "challenge, torch eager (before)", 3),
                     ("auto", "challenge, first run (ONNX export included)", 1),
                     ("auto", "challenge, cold process, graph cached", 3)]
            for backend, label, runs in cells:
                timings = [timed_command([*base, "--backend", backend], env) for _ in range(runs)]
                timing = min(timings, key=lambda t: t["wall"]) if runs == 1 else \
                    sorted(timings, key=lambda t: t["wall"])[runs // 2]
                rows.append(e2e_row(label, 1, 64, 16, {**timing, "runs": runs}))
                progress(f"e2e {label}: {timing['wall']:.2f} s (load {load():.1f})")
            for r in rows:
                r["ratio"] = rows[0]["ms_per_batch"] / r["ms_per_batch"]  # speed-up of the wall time
        if amibr is not None and (amibr / "atypical").is_dir():
            inputs = [str(amibr / "atypical"), str(amibr / "normal")]
            n = sum(1 for folder in inputs for p in Path(folder).glob("*.png"))
            cells = [c for c in E2E_PREDICT if not quick or c[0] == "auto"]
            start = len(rows)
            for backend, threads in cells:
                args = ["predict", *inputs, "--out", str(Path(tmp) / "p.csv"), "--batch-size", "64", "--quiet",
                        "--backend", backend, "--threads", str(threads)]
                timing = timed_command(args, env)  # the auto rows run after a first export (cache warm)
                rows.append(e2e_row(f"predict {n} AMi-Br crops, {backend}", threads, 64, n, timing))
                progress(f"e2e predict {backend} threads={threads}: {n / timing['wall']:.0f} patches/s "
                         f"(load {load():.1f})")
            if not quick:  # both cores without threads waiting for each other: one process per core
                timing = timed_processes([["predict", *inputs, "--out", str(Path(tmp) / f"p{i}.csv"),
                                           "--batch-size", "64", "--quiet", "--threads", "1", "--shard", f"{i}/2"]
                                          for i in range(2)], env)
                rows.append(e2e_row(f"predict {n} AMi-Br crops, auto, 2 processes (--shard i/2)", 1, 64, n, timing))
                progress(f"e2e predict auto 2 processes: {n / timing['wall']:.0f} patches/s (load {load():.1f})")
            for r in rows[start:]:
                r["ratio"] = r["patches_per_s"] / rows[start]["patches_per_s"]
    return rows


def timed_processes(commands: list[list[str]], env: dict[str, str]) -> dict[str, float]:
    """Wall time from starting all ``mitotype`` commands at once until the last ends; CPU of all."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "mitotype", *args], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for args in commands]
    errors = [p.communicate()[1] for p in procs]
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a parallel mitotype command failed: {' '.join(errors)[-1000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "runs": 1}


# --- static int8 -----------------------------------------------------------------------------------------

def bench_int8(loaded, amibr_root: Path | None, threads: int = 1,
               progress: Callable[[str], None] = print) -> list[dict]:
    """onnxruntime fp32 vs static int8 QDQ (``mitotype export --int8``: 320 training-split crops, seed 0):
    AUROC on the AMi-Br test split (826 crops) and speed at batch 64 on real test crops."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from mitotype.data.images import load_images
    from mitotype.data.spec import load_figures
    from mitotype.models.inference import normalise
    from mitotype.models.onnx import OnnxClassifier, calibration_batch, export_onnx, quantise_int8

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


# --- baseline and FLOPs -----------------------------------------------------------------------------------

def baseline_model():
    import timm

    return timm.create_model("efficientnetv2_m", pretrained=False, num_classes=2).eval()


def bench_baseline(loaded, batches=(16,), threads: int = 1) -> list[dict]:
    """Ours vs timm efficientnetv2_m at 224 px, both eager fp32 channels-last, same threads and batch."""
    import torch

    torch.set_num_threads(threads)
    ours = torch_runners(loaded.model)[REFERENCE]
    theirs_net = baseline_model().to(memory_format=torch.channels_last)

    def theirs(x):
        with torch.inference_mode():
            return theirs_net(x.contiguous(memory_format=torch.channels_last))

    size = loaded.config.model.input_size
    rows = []
    for batch in batches:
        g = torch.Generator().manual_seed(0)
        x_ours, x_theirs = torch.randn(batch, 3, size, size, generator=g), torch.randn(batch, 3, 224, 224)
        a = row("baseline", f"ours ({loaded.config.model.encoder}, {size} px)", threads, batch,
                time_call(lambda x=x_ours: ours(x)))
        b = row("baseline", "efficientnetv2_m, 224 px", threads, batch,
                time_call(lambda x=x_theirs: theirs(x), min_runs=3, min_seconds=0))
        a["ratio"], b["ratio"] = 1.0, b["patches_per_s"] / a["patches_per_s"]
        rows += [a, b]
    return rows


def flops_per_patch(net, size: int, **kwargs: Any) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(2, 3, size, size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(x, **kwargs)
    return counter.get_total_flops() / 2


def bench_flops(loaded, inference_rows: list[dict], baseline_rows: list[dict], peak_gflops: float | None,
                cores: int = 2) -> list[dict]:
    """FLOPs per patch (classification path; and with every decoder, as in training) and the fraction of
    peak that the fastest measured setting implies: by wall time against the whole CPU's peak, and by the
    process's CPU time against one core's peak (what the code reaches while it runs, whatever the load)."""
    from mitotype.models import create_model

    size = loaded.config.model.input_size

    def best(rows: list[dict], prefix: str) -> dict | None:
        chosen = [r for r in rows if r["setting"].startswith(prefix)]
        at64 = [r for r in chosen if r["batch"] == 64]
        return max(at64 or chosen, key=lambda r: r["patches_per_s"]) if chosen else None

    mtl = create_model(loaded.config.model).eval()
    out = []
    for name, flops, ref in (
        (f"ours, classification path ({size} px)", flops_per_patch(loaded.model.eval(), size, dense=False),
         best(inference_rows, "")),
        ("ours, with every auxiliary decoder (training forward)",
         flops_per_patch(mtl, size, dense=bool(mtl.tasks)), None),
        ("efficientnetv2_m (224 px)", flops_per_patch(baseline_model(), 224), best(baseline_rows, "efficientnet")),
    ):
        entry = {"section": "flops", "setting": name, "gflops_per_patch": flops / 1e9}
        if ref is not None:
            wall_gflops, cpu_gflops = flops * ref["patches_per_s"] / 1e9, flops * ref["patches_per_cpu_s"] / 1e9
            entry.update(best_setting=f"{ref['setting']}, batch {ref['batch']}, {ref['threads']} thread(s)",
                         patches_per_s=ref["patches_per_s"], achieved_gflops=wall_gflops,
                         fraction_of_peak=wall_gflops / peak_gflops if peak_gflops else None,
                         gflops_per_cpu_s=cpu_gflops,
                         fraction_of_core_peak=cpu_gflops / (peak_gflops / cores) if peak_gflops else None)
        out.append(entry)
    return out


# --- training ---------------------------------------------------------------------------------------------

def peak_rss_mib() -> float:
    """This process's peak resident memory. /proc's VmHWM starts afresh at exec; getrusage's ru_maxrss
    does not on Linux (a child of a big parent reports the parent's peak), so it is only the fallback."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage / (1024 ** 2 if sys.platform == "darwin" else 1024)


def train_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: time training steps of one config (mitotype.train.speed.measure), peak RSS."""
    import torch

    from mitotype.train.speed import measure

    torch.set_num_threads(spec["threads"])
    cfg, source = run_config(spec["config"], spec.get("overrides"))
    before = peak_rss_mib()
    wall, cpu = measure(cfg, "32", cfg.train.channels_last, spec["batch"], spec["steps"], warmup=1)
    peak = peak_rss_mib()
    return {"source": source, "encoder": cfg.model.encoder, "input_size": cfg.model.input_size,
            "tasks": cfg.model.dense_tasks, "patches_per_s": wall, "patches_per_cpu_s": cpu,
            "peak_rss_mib": peak, "rss_before_mib": before}


def bench_training(configs: list[tuple[str, str, list[str], int]], steps: int = 3, threads: int = 1,
                   progress: Callable[[str], None] = print) -> list[dict]:
    """``configs``: (label, config name, overrides, batch size). Each runs in its own subprocess (peak RSS
    is per process); ``ratio`` = patches/s relative to the first, ``rss_ratio`` likewise."""
    rows = []
    for label, name, overrides, batch in configs:
        spec = {"config": name, "overrides": overrides, "batch": batch, "steps": steps, "threads": threads}
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "mitotype.bench", "--train-worker", json.dumps(spec)],
                              capture_output=True, text=True, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if proc.returncode != 0:
            progress(f"training {label}: failed\n{proc.stderr[-2000:]}")
            continue
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append({"section": "training", "setting": f"{label} ({res['encoder']}, {res['input_size']} px)",
                     "threads": threads, "batch": batch, "patches_per_s": res["patches_per_s"],
                     "ms_per_batch": 1000 * batch / res["patches_per_s"],
                     "patches_per_cpu_s": res["patches_per_cpu_s"], "peak_rss_mib": res["peak_rss_mib"],
                     "runs": steps, "load": round(load(), 1), "config": res["source"], "tasks": res["tasks"],
                     "seconds": round(time.perf_counter() - started, 1)})
        progress(f"training {label}: {res['patches_per_s']:.1f} patches/s, peak RSS {res['peak_rss_mib']:.0f} MiB")
    if rows:
        for r in rows:
            r["ratio"] = r["patches_per_s"] / rows[0]["patches_per_s"]
            r["rss_ratio"] = r["peak_rss_mib"] / rows[0]["peak_rss_mib"]
    return rows


def bench_decoders(quick: bool = False, threads: int = 1, batch: int = 32,
                   progress: Callable[[str], None] = print) -> list[dict]:
    """The auxiliary-decoder settings against the single-task twin, all in one subprocess, interleaved
    (rounds) and back to back, so that the other jobs of a shared machine shift them alike; ``ratio`` =
    speed per CPU-second relative to single-task (1 / the step's cost)."""
    steps, rounds = (2 if quick else 4), 2
    command = [sys.executable, "-m", "mitotype.train.speed", "--decoders", "--json", "--threads", str(threads),
               "--batch-size", str(batch), "--steps", str(steps), "--rounds", str(rounds)] + (["--quick"] * quick)
    proc = subprocess.run(command, capture_output=True, text=True, check=False,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        progress(f"training decoders: failed\n{proc.stderr[-2000:]}")
        return []
    rows = []
    for res in json.loads(proc.stdout.strip().splitlines()[-1]):
        rows.append({"section": "training", "setting": f"{res['setting']}, one process (tv_mobilenet_v2, 128 px)",
                     "threads": threads, "batch": batch, "patches_per_s": res["patches_per_s"],
                     "ms_per_batch": 1000 * batch / res["patches_per_s"],
                     "patches_per_cpu_s": res["patches_per_cpu_s"], "ratio": 1 / res["cost"], "cost": res["cost"],
                     "runs": steps * rounds, "load": round(load(), 1)})
        progress(f"training {res['setting']}: {res['cost']:.2f}x the single-task step per CPU-second")
    return rows


# --- the whole run and its table --------------------------------------------------------------------------

def run_all(quick: bool = False,
            sections: tuple[str, ...] = ("e2e", "inference", "int8", "baseline", "flops", "training"),
            progress: Callable[[str], None] = print, amibr: Path | None = None,
            stack: Path | None = None) -> dict[str, Any]:
    """``amibr``: the AMi-Br root (its ``patches/`` for e2e, its test split for int8); ``stack``: a MIDOG
    track-2 stack; rows that need a missing input are left out."""
    import torch

    from mitotype.io import provenance

    started = time.perf_counter()
    info = cpu_info()
    loaded, source = default_model()
    result: dict[str, Any] = {"provenance": provenance(), "cpu": info, "quick": quick, "model_source": source,
                              "model": {"encoder": loaded.config.model.encoder,
                                        "input_size": loaded.config.model.input_size,
                                        "crop_size": loaded.config.model.crop_size,
                                        "tasks": loaded.config.model.dense_tasks},
                              "load_start": list(os.getloadavg()), "torch_threads_default": torch.get_num_threads()}
    rows: list[dict] = []
    progress(f"model: {source} ({loaded.config.model.encoder}, {loaded.config.model.input_size} px); "
             f"load average {load():.1f}")
    inference_rows, baseline_rows = [], []
    if "e2e" in sections:
        rows += bench_e2e(None if amibr is None else Path(amibr) / "patches", stack, quick=quick, progress=progress)
        rows += bench_challenge_model(stack)
        if rows and rows[-1]["setting"].startswith("challenge model time"):
            progress(f"e2e challenge model time alone: {rows[-1]['seconds']:.3f} s")
    if "inference" in sections:
        inference_rows = bench_inference(loaded, (1, 64) if quick else (1, 16, 64, 256),
                                         (1,) if quick else (1, 2), extra=not quick, progress=progress)
        rows += inference_rows
        rows += bench_stack(loaded, stack, threads=1)
    if "int8" in sections:
        rows += bench_int8(loaded, amibr, progress=progress)
    if "baseline" in sections:
        baseline_rows = bench_baseline(loaded, (4,) if quick else (8,))
        rows += baseline_rows
        progress(f"baseline: efficientnetv2_m {baseline_rows[-1]['patches_per_s']:.1f} patches/s "
                 f"= {baseline_rows[-1]['ratio']:.3f} x ours")
    if "flops" in sections:
        rows += bench_flops(loaded, inference_rows, baseline_rows, info["peak_gflops"], info["cores"])
    if "training" in sections:
        # Training here is the default's own 2-core setting minus the contention of a shared machine: one
        # thread (see docs/PERFORMANCE.md). Peak memory needs a process per config; the step-cost ratios
        # of the decoder settings come from one process (bench_decoders). The ResNet-50 at 224 px takes
        # batch 4 to stay within minutes.
        configs = [("single-task", "cpu_stl", [], 8), ("multi-task", "cpu_mtl", [], 8)]
        if not quick:
            configs.append(("paper: ResNet-50 multi-task", "paper", [], 4))
        rows += bench_training(configs, steps=2 if quick else 3, progress=progress)
        rows += bench_decoders(quick, progress=progress)
    result.update(rows=rows, load_end=list(os.getloadavg()), seconds=round(time.perf_counter() - started, 1))
    return result


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(result: dict[str, Any]) -> str:
    """Markdown tables, one per section."""
    rows = result["rows"]
    lines = []
    timed = [r for r in rows if r["section"] != "flops"]
    if timed:
        lines += [("| section | setting | threads | batch | patches/s | ms/batch | patches/CPU-s | ratio | "
                   "peak RSS MiB | load |"), "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in timed:
            lines.append(f"| {r['section']} | {r['setting']} | {r['threads']} | {r['batch']} | "
                         f"{_fmt(r['patches_per_s'])} | {_fmt(r['ms_per_batch'])} | {_fmt(r['patches_per_cpu_s'])} | "
                         f"{_fmt(r.get('ratio'), 2)} | {_fmt(r.get('peak_rss_mib'), 0)} | {_fmt(r['load'])} |")
    flops = [r for r in rows if r["section"] == "flops"]
    if flops:
        cpu = result["cpu"]
        lines += ["", f"Peak estimate: {cpu['peak_formula']} = {_fmt(cpu['peak_gflops'], 0)} GFLOP/s", "",
                  ("| FLOPs | GFLOP/patch | fastest measured | patches/s | GFLOP/s | % of CPU peak "
                   "| GFLOP per CPU-s | % of one core's peak |"), "|---|---:|---|---:|---:|---:|---:|---:|"]
        for r in flops:
            pct = [None if r.get(k) is None else 100 * r[k] for k in ("fraction_of_peak", "fraction_of_core_peak")]
            lines.append(f"| {r['setting']} | {r['gflops_per_patch']:.3f} | {r.get('best_setting', '-')} | "
                         f"{_fmt(r.get('patches_per_s'))} | {_fmt(r.get('achieved_gflops'))} | {_fmt(pct[0])} | "
                         f"{_fmt(r.get('gflops_per_cpu_s'))} | {_fmt(pct[1])} |")
    int8 = [r for r in rows if r["section"] == "int8"]
    if int8:
        lines += ["", "| int8 vs fp32 | AUROC, AMi-Br test split | change | max abs change of P | classes changed |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {r['setting']} | {r['auroc']:.4f} | {r['auroc_change']:+.4f} | {r['max_abs_dp']:.3f} | "
                  f"{r['class_changes']} |" for r in int8]
    model = result["model"]
    lines += ["", (f"Model: {result['model_source']} ({model['encoder']}, {model['input_size']} px, "
                   f"tasks {model['tasks']}). Load average (1/5/15 min) at start "
                   f"{' / '.join(f'{x:.1f}' for x in result['load_start'])}, at end "
                   f"{' / '.join(f'{x:.1f}' for x in result['load_end'])}; {result['seconds']:.0f} s in all.")]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--train-worker":
        print(json.dumps(train_worker(json.loads(sys.argv[2]))))
    else:
        sys.exit("usage: mitotype bench [--quick] (this module's own entry point is for its training workers)")
