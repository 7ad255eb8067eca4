"""The training-speed probe's decoder comparison (numbers: docs/PERFORMANCE.md, not timed here)."""

import pytest

from mitotype.config import load_config
from mitotype.models import create_model
from mitotype.train.speed import DECODER_SETTINGS, REPO_CONFIGS, compare_decoders


@pytest.mark.parametrize(("label", "name", "overrides"), DECODER_SETTINGS, ids=[s[0] for s in DECODER_SETTINGS])
def test_every_decoder_setting_builds_what_it_says(label, name, overrides):
    cfg = load_config(REPO_CONFIGS / f"{name}.yaml", ["model.pretrained=false", *overrides])
    model = create_model(cfg.model)
    if name == "cpu_stl":
        assert len(model.decoders) == 0
        return
    assert len(model.decoders) == (1 if cfg.model.shared_decoder else 3)
    assert ("shared" in label) == cfg.model.shared_decoder
    widths = "(" + ", ".join(str(c) for c in cfg.model.decoder_channels) + ")"
    assert widths in label or cfg.model.decoder_channels == (128, 64, 32)


def test_compare_decoders_reports_the_cost_against_the_first():
    settings = [("single", "cpu_stl", ["model.input_size=32"]),
                ("shared narrow", "cpu_mtl", ["model.input_size=32", "model.shared_decoder=true",
                                              "model.decoder_channels=[16,8]"])]
    rows = compare_decoders(batch_size=2, steps=1, rounds=1, settings=settings, progress=lambda _: None)
    assert [r["setting"] for r in rows] == ["single", "shared narrow"]
    assert rows[0]["cost"] == 1.0
    assert all(r["patches_per_cpu_s"] > 0 and r["patches_per_s"] > 0 and r["cost"] > 0 for r in rows)
