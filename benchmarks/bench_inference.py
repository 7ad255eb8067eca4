"""Inference only: PyTorch eager vs onnxruntime, the challenge baseline's architecture, FLOPs per patch.

    python benchmarks/bench_inference.py [--quick] [--out FILE.json]

Same as ``mitotype bench --sections inference baseline flops``; numbers in docs/PERFORMANCE.md.
"""

import sys

from mitotype.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--sections", "inference", "baseline", "flops", *sys.argv[1:]]))
