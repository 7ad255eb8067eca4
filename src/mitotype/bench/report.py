"""The whole benchmark run (``mitotype bench``) and its Markdown table."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mitotype.bench.baseline import bench_baseline, bench_flops
from mitotype.bench.e2e import bench_e2e
from mitotype.bench.inference import bench_challenge_model, bench_inference, bench_int8, bench_stack
from mitotype.bench.machine import cpu_info, default_model, load
from mitotype.bench.training import bench_augmentation, bench_decoders, bench_training


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
        rows += bench_augmentation(amibr)
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
