"""bench.training: its configs are the shipped ones, and a worker process times train.speed's step."""

from __future__ import annotations

import pytest

from mitotype.bench import training
from mitotype.train.speed import run_config


def test_run_config_reads_the_configs_the_package_ships():
    cfg, source = run_config("cpu_mtl")
    assert source == "configs/cpu_mtl.yaml" and cfg.model.pretrained is False
    assert cfg.model.dense_tasks == ["segmentation", "pixel_classes", "localisation"]
    stl, _ = run_config("cpu_stl")
    assert stl.model.dense_tasks == [] and stl.model.encoder == cfg.model.encoder


def test_a_training_row_comes_from_its_own_worker_process():
    messages = []
    rows = training.bench_training([("single-task", "cpu_stl", ["model.input_size=32"], 2)], steps=1,
                                   progress=messages.append)
    assert len(rows) == 1, messages
    r = rows[0]
    assert r["section"] == "training" and r["ratio"] == 1.0 and r["peak_rss_mib"] > 0 and r["patches_per_s"] > 0
    assert r["config"] == "configs/cpu_stl.yaml" and r["tasks"] == []


def test_the_augmentation_row_times_real_crops(amibr_root, tmp_path):
    rows = training.bench_augmentation(amibr_root, n=4, rounds=1)
    assert len(rows) == 1
    r = rows[0]
    assert r["section"] == "training" and r["ms_per_batch"] > 0 and r["patches_per_cpu_s"] > 0
    # CPU ms per sample, the inverse of the rate (computed the other way round: equal up to rounding)
    assert r["ms_per_batch"] == pytest.approx(1000 / r["patches_per_cpu_s"], rel=1e-9)
    assert training.bench_augmentation(tmp_path) == []  # no AMi-Br crops there: the row is left out
