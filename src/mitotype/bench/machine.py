"""The machine and the model a benchmark run times."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any

# Peak fp32 FLOPs per cycle per core with AVX-512: 2 FMA units x 16 lanes x 2 (multiply + add).
FLOPS_PER_CYCLE_AVX512 = 64


def default_model():
    """The shipped default model if there is one, else the cpu_mtl architecture (random init)."""
    from mitotype.models import create_model
    from mitotype.models.modelfile import LoadedModel, default_model_path, load_model
    from mitotype.train.speed import run_config

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
