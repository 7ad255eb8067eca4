"""Build the example shipped with the package: a 16-page MIDOG 2025 track-2 style TIFF stack of AMi-Br
test-split crops, with its ground truth in the official evaluator's format.

  python3 scripts/make_example.py ../shared/data/amibr

Writes src/mitotype/assets/example/{amibr_test_stack.tiff, amibr_test_stack_gt.json, pages.csv}. The crops
are a fixed random choice (seed 0) of 5 atypical and 11 normal figures from the published TEST split (never
the train split, so that the shipped model is not shown its own training images), from both sources.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from PIL import Image

OUT = Path(__file__).resolve().parents[1] / "src" / "mitotype" / "assets" / "example"
STACK = "amibr_test_stack.tiff"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("amibr", type=Path, help="the AMi-Br folder (AMI-BR.csv, amibr_train_split.csv, patches/)")
    root = parser.parse_args().amibr
    table = pd.read_csv(root / "AMI-BR.csv")
    train = set(pd.read_csv(root / "amibr_train_split.csv")["dataset_uid"])
    table["name"] = table["dataset"] + "_" + table["uid"].astype(str) + ".png"
    test = table[~table["name"].isin(train)]
    rng = np.random.default_rng(0)
    picks = []
    for atypical, n in ((True, 5), (False, 11)):
        part = test[test["majority_atypical"].astype(str) == str(atypical)]
        picks.append(part.iloc[rng.choice(len(part), n, replace=False)])
    chosen = pd.concat(picks).sample(frac=1.0, random_state=0)  # labels interleaved, as in a real stack
    pages, labels = [], []
    for _, row in chosen.iterrows():
        label = "atypical" if str(row["majority_atypical"]) == "True" else "normal"
        image = np.asarray(Image.open(root / "patches" / label / row["name"]).convert("RGB"))
        pages.append(image)
        labels.append(label)
    OUT.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(OUT / STACK, np.stack(pages), photometric="rgb", compression="zlib")
    gt = [{"image": STACK, "labels": labels, "tumordomains": [1] * len(labels)}]
    (OUT / "amibr_test_stack_gt.json").write_text(json.dumps(gt, indent=1) + "\n")
    chosen.assign(page=range(len(chosen)), label=labels)[["page", "name", "dataset", "slide", "label"]].to_csv(
        OUT / "pages.csv", index=False)
    print(f"{OUT / STACK}: {len(pages)} pages, {labels.count('atypical')} atypical")


if __name__ == "__main__":
    main()
