"""``mitotype explain``: the four panels per figure and the contact sheet, on real crops."""

from __future__ import annotations

import csv
import shutil

import numpy as np
from PIL import Image

from mitotype.cli import main

from .conftest import amibr_pngs


def test_explain_writes_panels_sheet_and_table(tmp_path, small_model, amibr_root, track2_root):
    for p in amibr_pngs(amibr_root, 2):
        shutil.copy(p, tmp_path / p.name)
    stack = track2_root / "input" / "stack_5.tiff"
    out = tmp_path / "explain"
    assert main(["explain", str(tmp_path), str(stack), "--model", str(small_model), "--out", str(out),
                 "--limit", "4", "--quiet"]) == 0
    with open(out / "explain.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4  # --limit: 2 crops + the first 2 pages of the stack
    assert [r["index"] for r in rows[2:]] == ["0", "1"]
    pngs = sorted((out / "figures").glob("*.png"))
    assert [str(p.relative_to(out)) for p in pngs] == sorted(r["png"] for r in rows)
    assert any(p.name.endswith("_stack_5_1.png") for p in pngs)
    # no stray '_' from the '[page]' suffix, no doubled image suffix
    assert not any(p.stem.endswith("_") or ".png." in p.name or ".tiff" in p.name for p in pngs)
    panel = np.asarray(Image.open(pngs[0]).convert("RGB"))
    assert panel.shape[1] > 3 * panel.shape[0]  # four panels side by side
    assert panel.std() > 10  # not blank
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.width > 400 and sheet.height > 150
    assert (out / "run.json").is_file()


def test_explain_maps_shapes(small_loaded, track2_root):
    from mitotype.data.images import read_rgb
    from mitotype.predict.explain import explain_maps

    pages = np.stack([read_rgb(track2_root / "input" / "stack_5.tiff", page=i) for i in range(3)])
    maps = explain_maps(small_loaded, pages, batch_size=2, device="cpu")
    size = small_loaded.config.model.input_size
    assert maps["p"].shape == (3,)
    assert maps["mask"].shape == (3, size, size) and 0 <= maps["mask"].min() <= maps["mask"].max() <= 1
    assert maps["classes"].shape == (3, 3, size, size)
    np.testing.assert_allclose(maps["classes"].sum(1), 1, atol=1e-5)
    assert maps["cam"].shape == (3, size, size) and maps["cam"].max() <= 1 + 1e-6


def test_model_without_dense_heads(tmp_path, track2_root):
    """A classification-only model: mask and pixel-class panels say so, the CAM is still drawn."""
    import torch

    from mitotype.config import RunConfig
    from mitotype.data.images import read_rgb
    from mitotype.models import create_model
    from mitotype.models.modelfile import load_model, save_model
    from mitotype.predict.explain import explain_maps, figure_panel

    torch.manual_seed(0)
    cfg = RunConfig()
    cfg.model.encoder, cfg.model.pretrained, cfg.model.input_size = "mobilenetv3_small_050", False, 64
    save_model(tmp_path / "plain.pt", create_model(cfg.model), cfg, threshold=0.5)
    loaded = load_model(tmp_path / "plain.pt")
    page = read_rgb(track2_root / "input" / "stack_5.tiff", page=0)[None]
    maps = explain_maps(loaded, page, device="cpu")
    assert maps["mask"] is None and maps["classes"] is None and maps["cam"].shape == (1, 64, 64)
    fig = figure_panel(page[0], "p0", float(maps["p"][0]), "normal", None, None, maps["cam"][0])
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "(no segmentation head)" in texts and "(no pixel-class head)" in texts


def test_pixel_class_panel_leaves_zero_padding_untinted(amibr_root):
    """A real padded AMi-Br crop: pixel classes that call the padding 'atypical' are not painted there."""
    from mitotype.data.images import read_rgb
    from mitotype.data.targets import padding_mask
    from mitotype.predict.explain import CLASS_COLOURS, class_overlay

    padded = None
    for name in sorted((amibr_root / "patches" / "atypical").glob("*.png")):
        image = read_rgb(name)
        if padding_mask(image).mean() > 0.1:
            padded = image
            break
    assert padded is not None, "no padded crop found"
    pad = padding_mask(padded)
    classes = np.zeros((3,) + padded.shape[:2], dtype=np.float32)
    classes[2] = 1.0  # every pixel 'atypical'
    overlay = class_overlay(padded, classes)
    assert np.allclose(overlay[pad], 0.0)  # still black
    tissue = overlay[~pad]
    assert np.allclose(tissue, padded[~pad] / 255 * 0.45 + CLASS_COLOURS[2] * 0.55, atol=1e-5)
