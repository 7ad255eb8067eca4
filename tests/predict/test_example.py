"""The example shipped in the package: the README's main command works from a clone with no ../shared."""

from __future__ import annotations

import json

import pandas as pd

from mitotype.cli import main
from mitotype.data.example import EXAMPLE_DIR, EXAMPLE_GROUND_TRUTH, EXAMPLE_STACK
from mitotype.data.spec import load_figures


def test_predict_example_runs_without_shared_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ../shared beside this folder
    assert main(["predict", "--example", "--out", "p.csv", "--quiet"]) == 0
    table = pd.read_csv(tmp_path / "p.csv")
    assert len(table) == 16 and list(table["index"]) == list(range(16))
    assert table["p_atypical"].between(0, 1).all()


def test_example_ground_truth_matches_its_amibr_pages(amibr_root):
    """The labels shipped with the stack are AMi-Br's majority labels of the test-split figures named in
    pages.csv, and the pages are those crops' pixels."""
    import numpy as np
    import tifffile
    from PIL import Image

    pages = pd.read_csv(EXAMPLE_DIR / "pages.csv")
    gt = json.loads(EXAMPLE_GROUND_TRUTH.read_text())[0]
    assert gt["labels"] == list(pages["label"])
    train = set(pd.read_csv(amibr_root / "amibr_train_split.csv")["dataset_uid"])
    assert not set(pages["name"]) & train
    stack = tifffile.imread(EXAMPLE_STACK)
    for i, row in pages.iterrows():
        crop = np.asarray(Image.open(amibr_root / "patches" / row["label"] / row["name"]).convert("RGB"))
        assert np.array_equal(stack[i], crop)
    figures = load_figures(f"stack:{EXAMPLE_STACK}:gt={EXAMPLE_GROUND_TRUTH}")
    assert [f.label for f in figures] == [int(x == "atypical") for x in pages["label"]]
