"""The example shipped inside the package, so that the main command runs from a clone or a wheel alone:
16 AMi-Br test-split crops as one track-2 style TIFF stack, with ground truth (assets/example/ATTRIBUTION.md).
"""

from __future__ import annotations

from pathlib import Path

EXAMPLE_DIR = Path(__file__).resolve().parents[1] / "assets" / "example"
EXAMPLE_STACK = EXAMPLE_DIR / "amibr_test_stack.tiff"
EXAMPLE_GROUND_TRUTH = EXAMPLE_DIR / "amibr_test_stack_gt.json"
