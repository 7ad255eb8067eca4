"""Training steps only: single-task vs multi-task vs the paper's ResNet-50, speed and peak RSS.

    python benchmarks/bench_training.py [--quick] [--out FILE.json]

Same as ``mitotype bench --sections training``; numbers in docs/PERFORMANCE.md.
"""

import sys

from mitotype.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--sections", "training", *sys.argv[1:]]))
