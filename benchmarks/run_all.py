"""The whole benchmark (same as ``mitotype bench``): python benchmarks/run_all.py [--quick] [--out FILE.json].

Results of this machine and how to read them: docs/PERFORMANCE.md.
"""

import sys

from mitotype.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
