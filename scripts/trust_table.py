"""Markdown rows of the trust numbers of ``mitotype evaluate`` output folders (their ``metrics.json``
``trust`` section), as docs/TRUST.md shows them.

    python scripts/trust_table.py EVAL_DIR [EVAL_DIR ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def f(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    print("| evaluation | n | alpha | coverage normal | coverage atypical | flagged | shift median | share > 1.0 "
          "| detector AUROC | warning | ECE before → after | Brier before → after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for folder in args.folders:
        m = json.loads((folder / "metrics.json").read_text())
        t = m.get("trust", {})
        c = t.get("conformal", {}).get("all", {})
        s = t.get("shift", {}).get("all", {})
        cal = t.get("calibration", {}).get("all", {})
        warn = "yes" if t.get("shift", {}).get("warning") else "no"
        print(f"| {folder.name} | {m['n']} | {t.get('conformal', {}).get('alpha', '—')} | {f(c.get('normal'))} | "
              f"{f(c.get('atypical'))} | {f(c.get('flagged'))} | {f(s.get('median'), 2)} | "
              f"{f(s.get('share_above_1'))} | {f(s.get('detector_auroc'))} | {warn} | "
              f"{f(cal.get('ece_before'))} → {f(cal.get('ece'))} | "
              f"{f(cal.get('brier_before'))} → {f(cal.get('brier'))} |")


if __name__ == "__main__":
    main()
