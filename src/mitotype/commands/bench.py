"""Speed and memory benchmarks, printed as a table (numbers of this machine: docs/PERFORMANCE.md).

End to end, each command in a fresh process: `mitotype predict` over the 3,720 AMi-Br crops (torch eager
vs torch with folded batch norm vs the default onnxruntime path, 1 and 2 threads) and `mitotype challenge`
on the 16-crop stack (first run with the ONNX export, then cold starts with the graph cached). Inference
of the default model (PyTorch eager NCHW / channels-last / bf16 vs onnxruntime fp32 / int8,
batch 1, 16, 64, 256, 1 and 2 threads), end to end on the real 16-crop track-2 stack, the challenge
baseline's architecture (timm efficientnetv2_m, 224 px) against ours, FLOPs per patch and the fraction of
this CPU's estimated peak, and training steps of single-task vs multi-task vs the paper's ResNet-50 (speed
and peak RSS, each in its own process). Every figure is a median of several runs; ratios compare figures of
the same run. Without a shipped default model the architecture of configs/cpu_mtl.yaml is used (random
weights: weights do not change speed).

Examples:
  mitotype bench --quick                       # about a minute
  mitotype bench --out bench.json              # the full run (at most ~10 minutes on 2 cores)
  mitotype bench --sections e2e               # the commands end to end, about 3 minutes here
  mitotype bench --sections int8              # static int8 vs fp32: AUROC on the AMi-Br test split, speed
  mitotype bench --sections inference flops
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

SECTIONS = ("e2e", "inference", "int8", "baseline", "flops", "training")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="fewer settings (batch 1 and 64, 2 threads, no bf16/int8, no ResNet-50 training)")
    parser.add_argument("--out", metavar="FILE.json",
                        help="also write every row, the machine and the load averages to this JSON file")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="which parts to run (default: all; flops uses the inference/baseline rows "
                             "of the same run for its percentage of peak)")
    data = os.environ.get("MITOTYPE_SHARED_DATA", "../shared/data")
    parser.add_argument("--amibr", metavar="DIR", default=f"{data}/amibr",
                        help="the AMi-Br root (patches/ for e2e, the test split for int8; default: %(default)s, "
                             "from $MITOTYPE_SHARED_DATA)")
    parser.add_argument("--stack", metavar="FILE.tiff", default=f"{data}/midog25-track2-example/input/stack_5.tiff",
                        help="a MIDOG 2025 track-2 stack for the end-to-end rows (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mitotype.bench import run_all, table
    from mitotype.io import check_output_file, write_json

    if args.out:
        check_output_file(args.out)  # before minutes of benchmarks, not after

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    amibr, stack = Path(args.amibr), Path(args.stack)
    result = run_all(quick=args.quick, sections=tuple(args.sections), progress=progress,
                     amibr=amibr if amibr.is_dir() else None, stack=stack if stack.is_file() else None)
    print(table(result))
    if args.out:
        write_json(args.out, result)
        print(f"written: {args.out}", file=sys.stderr)
    return 0
