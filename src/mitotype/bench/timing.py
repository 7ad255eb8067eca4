"""Medians of timed calls, the rows they make, and timed ``mitotype`` processes."""

from __future__ import annotations

import contextlib
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mitotype.bench.machine import load


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


def row(section: str, setting: str, threads: int, batch: int, timing: dict[str, float], n: int | None = None,
        **extra: Any) -> dict:
    """One timed setting: ``n`` patches (default ``batch``) per ``timing``; for a whole command (``e2e``)
    ``ms_per_batch`` is then the command's wall time."""
    n = batch if n is None else n
    return {"section": section, "setting": setting, "threads": threads, "batch": batch,
            "patches_per_s": n / timing["wall"], "ms_per_batch": 1000 * timing["wall"],
            "patches_per_cpu_s": n / timing["cpu"], "runs": timing["runs"], "load": round(load(), 1),
            **extra}


def e2e_row(setting: str, threads: int, batch: int, n: int, timing: dict[str, float]) -> dict:
    """A whole ``mitotype`` command over ``n`` patches: ``patches_per_s`` = n / its wall time."""
    return row("e2e", setting, threads, batch, timing, n=n, seconds=round(timing["wall"], 2))


def timed_command(args: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall and CPU seconds (user + system of the child) of one ``mitotype ...`` process."""
    return timed_processes([args], env)


def timed_processes(commands: list[list[str]], env: dict[str, str]) -> dict[str, float]:
    """Wall time from starting all ``mitotype`` commands at once until the last ends; CPU (user + system)
    of all; RuntimeError with the end of stderr if one fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "mitotype", *args], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for args in commands]
    errors = [p.communicate()[1] for p in procs]
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if any(p.returncode for p in procs):
        raise RuntimeError(f"mitotype {[' '.join(c) for c in commands]} failed: {' '.join(errors)[-1000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "runs": 1}


def peak_rss_mib() -> float:
    """This process's peak resident memory. /proc's VmHWM starts afresh at exec; getrusage's ru_maxrss
    does not on Linux (a child of a big parent reports the parent's peak), so it is only the fallback."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage / (1024 ** 2 if sys.platform == "darwin" else 1024)
