"""The figure-mask report (data/mask_report.py) and the ``mitotype masks`` command around it."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from mitotype.data.mask_report import write_mask_report


def test_masks_command_writes_masks_report_and_gallery(amibr_root, tmp_path):
    from mitotype.cli import main

    out = tmp_path / "masks"
    assert main(["masks", f"amibr:{amibr_root}", "--out", str(out), "--limit", "30", "--gallery", "4",
                 "--no-progress"]) == 0
    report = json.loads((out / "masks_report.json").read_text())
    assert report["n"] == 30
    for key in ("n_fallback", "fallback_rate", "centre_hit_rate", "area_px", "per_class", "per_domain"):
        assert key in report
    assert set(report["area_px"]) == {"p5", "p25", "p50", "p75", "p95"}
    assert report["centre_hit_rate"] >= 0.9
    pngs = sorted((out / "masks").glob("*.png"))
    assert len(pngs) == 30
    values = np.asarray(Image.open(pngs[0]))
    assert set(np.unique(values)) <= {0, 1, 255} and 1 in values
    assert (out / "gallery.png").stat().st_size > 10_000
    assert "| all | 30 |" in (out / "masks_report.md").read_text()
    assert len((out / "masks.csv").read_text().splitlines()) == 31


def test_masks_command_bad_spec_is_a_clear_error(tmp_path, capsys):
    from mitotype.cli import main

    assert main(["masks", f"folder:{tmp_path / 'nothing'}", "--out", str(tmp_path / "o")]) == 2
    assert "error" in capsys.readouterr().err


def test_the_report_is_returned_as_written(amibr_root, tmp_path):
    report = write_mask_report(f"amibr:{amibr_root}", tmp_path, limit=8, gallery=2, progress=False)
    assert report == json.loads((tmp_path / "masks_report.json").read_text())
    assert report["n"] == 8 and sum(s["n"] for s in report["per_class"].values()) == 8
