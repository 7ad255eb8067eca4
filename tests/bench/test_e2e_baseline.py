"""bench.e2e runs the real commands on real crops; bench.baseline counts FLOPs as published."""

from __future__ import annotations

from pathlib import Path

import pytest

from mitotype.bench import baseline, e2e


def test_the_predict_rows_run_the_command_on_real_crops(amibr_root, tmp_path):
    patches = tmp_path / "patches"
    for label in ("atypical", "normal"):
        (patches / label).mkdir(parents=True)
        for crop in sorted((Path(amibr_root) / "patches" / label).glob("*.png"))[:4]:
            (patches / label / crop.name).symlink_to(crop)
    messages: list[str] = []
    rows = e2e.bench_e2e(patches, None, quick=True, progress=messages.append)
    assert [r["threads"] for r in rows] == [t for b, t in e2e.E2E_PREDICT if b == "auto"], messages
    for r in rows:
        assert r["section"] == "e2e" and r["batch"] == 64 and "8 AMi-Br crops, auto" in r["setting"]
        assert r["patches_per_s"] > 0 and r["patches_per_cpu_s"] > 0
    assert rows[0]["ratio"] == pytest.approx(1.0)


def test_flops_per_patch_matches_the_published_count():
    from torchvision.models import mobilenet_v2

    # MobileNetV2 1.0 at 224 px: 300M multiply-adds (Sandler et al. 2018, table 4) = 0.60 GFLOP per patch
    flops = baseline.flops_per_patch(mobilenet_v2(weights=None).eval(), 224)
    assert 0.58e9 < flops < 0.64e9
