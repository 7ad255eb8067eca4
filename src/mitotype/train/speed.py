"""Training-step throughput probe: patches/s for fp32 vs bf16 autocast, channels-last on/off.

    python -m mitotype.train.speed --config configs/cpu_mtl.yaml --threads 1 [-- key=value ...]
    python -m mitotype.train.speed --config configs/cpu_mtl.yaml --data SPEC --workers 0 1 --batches 6
    python -m mitotype.train.speed --decoders --threads 1 --batch-size 32 --rounds 2

``--decoders``: the auxiliary-decoder settings of :data:`DECODER_SETTINGS` against the single-task twin, in
this one process, back to back and interleaved over ``--rounds`` (ratios of figures taken minutes apart on a
shared machine would mostly measure the other jobs).

Without ``--data``: forward + backward + AdamW step of the configured network and loss on a synthetic
batch with every training target (no data pipeline). With ``--data``: whole training steps on real data
(augmentation, dense targets, DataLoader with each ``--workers`` setting). Both report patches per second of
wall clock and per CPU-second (this process and its worker processes). Numbers: docs/TRAINING.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # shipped in the package (the clone's configs/ links here)
# (label, config in configs/, overrides): the single-task twin first (the ratios' reference), today's
# decoders, then the cheaper ones (docs/PERFORMANCE.md, training).
DECODER_SETTINGS = [
    ("single-task", "cpu_stl", []),
    ("multi-task, 3 decoders (128, 64, 32)", "cpu_mtl", []),
    ("multi-task, shared decoder", "cpu_mtl", ["model.shared_decoder=true"]),
    ("multi-task, 3 narrow decoders (64, 32, 16)", "cpu_mtl", ["model.decoder_channels=[64,32,16]"]),
    ("multi-task, shared narrow decoder (64, 32, 16)", "cpu_mtl",
     ["model.shared_decoder=true", "model.decoder_channels=[64,32,16]"]),
    ("multi-task, shared decoder to stride 8 (128, 64)", "cpu_mtl",
     ["model.shared_decoder=true", "model.decoder_channels=[128,64]"]),
    ("multi-task, shared narrow decoder to stride 8 (64, 32)", "cpu_mtl",
     ["model.shared_decoder=true", "model.decoder_channels=[64,32]"]),
]

QUICK_DECODERS = (0, 1, 4)  # single-task, today's decoders, the shared narrow one


def run_config(name: str, overrides: list[str] | None = None):
    """(RunConfig, source) for the shipped ``configs/<name>.yaml`` with random-init weights (speed does not
    need them)."""
    from mitotype.config import load_config

    fixed = ["model.pretrained=false", "model.weights=null"]
    return load_config(CONFIGS / f"{name}.yaml", fixed + list(overrides or [])), f"configs/{name}.yaml"


def compare_decoders(batch_size: int = 32, steps: int = 4, rounds: int = 2, settings=None,
                     progress=print) -> list[dict]:
    """Patches per CPU-second (and per second of wall clock, same round) of each decoder setting, the best
    of ``rounds`` interleaved ones, and its step's cost relative to the first setting (``cost`` = first's
    patches/CPU-s / this one's)."""
    settings = settings or DECODER_SETTINGS
    best: dict[str, tuple[float, float]] = {}  # label -> (cpu, wall) of its best round
    # a fresh process's first steps also pay for oneDNN's kernels and the allocator's growth: not timed
    measure(run_config(settings[0][1], settings[0][2])[0], "32", True, batch_size, steps=1, warmup=1)
    for r in range(rounds):
        for label, name, overrides in settings:
            cfg = run_config(name, overrides)[0]
            wall, cpu = measure(cfg, "32", cfg.train.channels_last, batch_size, steps, warmup=1)
            best[label] = max(best.get(label, (0.0, 0.0)), (cpu, wall))
            progress(f"round {r + 1} {label}: {cpu:.1f} patches/CPU-s (load {os.getloadavg()[0]:.1f})")
    first = best[settings[0][0]][0]
    return [{"setting": label, "overrides": overrides, "patches_per_cpu_s": best[label][0],
             "patches_per_s": best[label][1], "cost": first / best[label][0]} for label, _, overrides in settings]


def synthetic_batch(cfg, batch_size: int) -> dict[str, torch.Tensor]:
    s = cfg.model.input_size
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(batch_size, 1, s, s)
    mask[:, :, s // 3: 2 * s // 3, s // 3: 2 * s // 3] = 1.0
    label = torch.randint(0, 2, (batch_size,), generator=g)
    classes = (mask[:, 0] * (label[:, None, None] + 1)).long()
    return {"image": torch.randn(batch_size, 3, s, s, generator=g), "label": label, "mask": mask,
            "valid": torch.ones_like(mask), "classes": classes, "heatmap": mask * 0.5,
            "domain": torch.arange(batch_size) % 3, "index": torch.arange(batch_size)}


def training_step(cfg, precision: str = "32", channels_last: bool = True):
    """``step(batch)``: forward, loss, backward and AdamW step of a fresh network for ``cfg`` -- the loss of
    ``MitoModule.training_step`` itself (``train.step.training_loss``: background swap included)."""
    import dataclasses

    from mitotype.train.module import MitoModule
    from mitotype.train.step import training_loss

    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, channels_last=channels_last))
    module = MitoModule(cfg).train()
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)

    def step(batch: dict[str, torch.Tensor]) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision.startswith("bf16")):
            total, _ = training_loss(module, module.criterion, cfg, batch)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()

    return step


def measure(cfg, precision: str = "32", channels_last: bool = True, batch_size: int = 32, steps: int = 6,
            warmup: int = 2) -> tuple[float, float]:
    """Training patches per second: ``(wall, cpu)``, medians over ``steps`` after ``warmup`` steps.

    ``cpu`` divides by the process's CPU time instead of the wall clock: on a machine shared with other
    jobs it is what the step would reach alone (with one thread; with n threads it is n times too low).
    """
    step = training_step(cfg, precision, channels_last)
    batch = synthetic_batch(cfg, batch_size)
    times, cpu_times = [], []
    for i in range(warmup + steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        step(batch)
        if i >= warmup:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    times.sort()
    cpu_times.sort()
    return batch_size / times[len(times) // 2], batch_size / cpu_times[len(cpu_times) // 2]


def measure_loader(cfg, spec: str, workers: int, batches: int = 6, warmup: int = 1) -> tuple[float, float]:
    """Training patches per second, ``(wall, cpu)``, of whole steps on real data through the DataLoader."""
    import dataclasses
    import resource

    from torch.utils.data import DataLoader

    from mitotype.train.datamodule import FigureDataModule

    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, num_workers=workers))
    data = FigureDataModule(cfg, spec, progress=False)
    data.setup("fit")
    step = training_step(cfg)

    def cpu() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    n = 0
    loader = iter(DataLoader(data.train_set, batch_size=cfg.train.batch_size, shuffle=True, num_workers=workers,
                             drop_last=True))
    for i in range(warmup + batches):
        if i == warmup:  # worker start-up and first batches not timed
            start, cpu_start, n = time.perf_counter(), cpu(), 0
        batch = next(loader)
        step(batch)
        n += batch["image"].shape[0]
    wall = time.perf_counter() - start
    del loader  # stops the workers: RUSAGE_CHILDREN counts them only once they have exited
    used = cpu() - cpu_start
    return n / wall, n / max(used, 1e-9)


def main(argv: list[str] | None = None) -> None:
    from mitotype.config import load_config

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="run config YAML (default: built-in defaults)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per setting (after 2 warm-up)")
    parser.add_argument("--precision", nargs="+", default=["32", "bf16-mixed"])
    parser.add_argument("--channels-last", nargs="+", default=["off", "on"], choices=["off", "on"])
    parser.add_argument("--data", metavar="SPEC", help="time whole steps on these data instead (needs --workers)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0], help="DataLoader workers to try (--data)")
    parser.add_argument("--batches", type=int, default=6, help="timed batches per setting (--data)")
    parser.add_argument("--decoders", action="store_true", help="compare the decoder settings (see above)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per setting (--decoders)")
    parser.add_argument("--quick", action="store_true",
                        help="--decoders: single-task, today's decoders and the cheapest setting only")
    parser.add_argument("--json", action="store_true", help="--decoders: the rows as one JSON line (mitotype bench)")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.decoders:
        settings = [DECODER_SETTINGS[i] for i in QUICK_DECODERS] if args.quick else DECODER_SETTINGS
        if args.json:  # progress to stderr, the rows on stdout
            rows = compare_decoders(args.batch_size, args.steps, args.rounds, settings,
                                    progress=lambda text: print(text, file=sys.stderr, flush=True))
            print(json.dumps(rows))
            return
        print(f"load average {os.getloadavg()[0]:.1f}; threads={torch.get_num_threads()} batch={args.batch_size}")
        rows = compare_decoders(args.batch_size, args.steps, args.rounds, settings)
        print("| setting | patches/CPU-s | step cost vs single-task |\n|---|---:|---:|")
        for r in rows:
            print(f"| {r['setting']} | {r['patches_per_cpu_s']:.1f} | {r['cost']:.2f}x |")
        return
    cfg = load_config(args.config, args.overrides)
    print(f"load average {os.getloadavg()[0]:.1f}; encoder={cfg.model.encoder} input={cfg.model.input_size} "
          f"tasks={cfg.model.dense_tasks} "
          f"swap={cfg.model.background_swap.enabled} threads={torch.get_num_threads()} batch={args.batch_size}")
    if args.data:
        cfg.train.batch_size = args.batch_size
        for workers in args.workers:
            wall, cpu = measure_loader(cfg, args.data, workers, args.batches)
            print(f"workers={workers} {wall:7.1f} patches/s wall {cpu:7.1f} patches/CPU-s", flush=True)
        return
    for precision in args.precision:
        for cl in args.channels_last:
            wall, cpu = measure(cfg, precision, cl == "on", args.batch_size, args.steps)
            print(f"precision={precision:10s} channels_last={cl:3s} {wall:7.1f} patches/s wall "
                  f"{cpu:7.1f} patches/CPU-s", flush=True)


if __name__ == "__main__":
    main()
