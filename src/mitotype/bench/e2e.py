"""The commands users run, each in a fresh process: ``mitotype predict`` over the AMi-Br crops and
``mitotype challenge`` on a track-2 stack."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from mitotype.bench.machine import load
from mitotype.bench.timing import e2e_row, timed_command, timed_processes

E2E_PREDICT = (("torch-eager", 1), ("torch", 1), ("auto", 1), ("auto", 2))


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
