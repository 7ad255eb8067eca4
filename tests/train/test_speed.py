"""The training-speed probe's decoder comparison (numbers: docs/PERFORMANCE.md, not timed here)."""

import pytest

from mitotype.models import create_model
from mitotype.train.speed import DECODER_SETTINGS, compare_decoders, measure, run_config


@pytest.mark.parametrize(("label", "name", "overrides"), DECODER_SETTINGS, ids=[s[0] for s in DECODER_SETTINGS])
def test_every_decoder_setting_builds_what_it_says(label, name, overrides):
    cfg, _ = run_config(name, overrides)
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


def test_measure_times_the_training_step_with_background_swap(monkeypatch):
    """The probe runs the one training loss (train.step.training_loss), background swap included."""
    from mitotype.train import step

    calls = []
    real = step.training_loss
    monkeypatch.setattr(step, "training_loss", lambda *a, **k: calls.append(real(*a, **k)) or calls[-1])
    cfg, _ = run_config("cpu_mtl", ["model.input_size=32", "model.background_swap=true"])
    wall, cpu = measure(cfg, batch_size=2, steps=1, warmup=0)
    assert wall > 0 and cpu > 0
    assert len(calls) == 1 and "background_swap" in calls[0][1]
