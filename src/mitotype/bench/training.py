"""The training rows: ``train.speed``'s training step (the one training loss, ``train.step``) per config in
a fresh process each (peak RSS is per process), and the decoder settings back to back in one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mitotype.bench.machine import load
from mitotype.bench.timing import peak_rss_mib


def train_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: time training steps of one config (mitotype.train.speed.measure), peak RSS."""
    import torch

    from mitotype.train.speed import measure, run_config

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



def bench_augmentation(amibr: Path | None, n: int = 20, rounds: int = 5) -> list[dict]:
    """CPU time of the training augmentation (``data.transforms.build_transform``, default config) per sample
    on ``n`` real AMi-Br crops: training reads ~90 patches/s, so it must stay well under 5 ms a sample."""
    if amibr is None or not (Path(amibr) / "patches" / "normal").is_dir():
        return []
    import numpy as np

    from mitotype.config import AugmentConfig, ModelConfig
    from mitotype.data import transforms as T
    from mitotype.data.images import read_rgb

    paths = sorted((Path(amibr) / "patches" / "normal").glob("*.png"))[:n]
    samples = [(read_rgb(p), np.zeros((128, 128), np.uint8)) for p in paths]
    transform = T.build_transform(ModelConfig(), AugmentConfig())
    transform(T.to_sample(*samples[0]))  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        for image, mask in samples:
            transform(T.to_sample(image, mask))
    count = rounds * len(samples)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return [{"section": "training", "setting": "augmentation, default config (CPU ms per sample in ms/batch)",
             "threads": 1, "batch": 1, "patches_per_s": count / wall, "ms_per_batch": 1000 * cpu / count,
             "patches_per_cpu_s": count / cpu, "runs": rounds, "load": round(load(), 1)}]
