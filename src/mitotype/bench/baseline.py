"""The official challenge baseline's architecture against ours, and FLOPs per patch against this CPU's peak."""

from __future__ import annotations

from typing import Any

from mitotype.bench.inference import torch_variant
from mitotype.bench.timing import row, time_call


def baseline_model():
    import timm

    return timm.create_model("efficientnetv2_m", pretrained=False, num_classes=2).eval()


def bench_baseline(loaded, batches=(16,), threads: int = 1) -> list[dict]:
    """Ours vs timm efficientnetv2_m at 224 px, both eager fp32 channels-last, same threads and batch."""
    import torch

    torch.set_num_threads(threads)
    ours = torch_variant(loaded, fold=False)  # the REFERENCE row of the inference section
    theirs_net = baseline_model().to(memory_format=torch.channels_last)

    def theirs(x):
        with torch.inference_mode():
            return theirs_net(x.contiguous(memory_format=torch.channels_last))

    size = loaded.config.model.input_size
    rows = []
    for batch in batches:
        g = torch.Generator().manual_seed(0)
        x_ours, x_theirs = torch.randn(batch, 3, size, size, generator=g).numpy(), torch.randn(batch, 3, 224, 224)
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
