"""The benchmark's own pieces: batch-norm folding is exact, timing takes medians, the table prints, the CLI
parses. (The benchmark itself runs minutes; its numbers are in docs/PERFORMANCE.md.)"""

from __future__ import annotations

import torch

from mitotype import bench


def test_fold_batchnorm_keeps_outputs():
    from mitotype.config import load_config
    from mitotype.models import create_model

    torch.manual_seed(0)
    cfg = load_config(None, ["model.pretrained=false"])
    model = create_model(cfg.model).eval()
    for m in model.modules():  # non-trivial statistics, else folding is nearly the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    folded = bench.fold_batchnorm(model)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules()) == 0
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) > 0  # original untouched
    x = torch.randn(3, 3, 64, 64)
    with torch.inference_mode():
        a, b = model(x, dense=False).logits, folded(x, dense=False).logits
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_time_call_takes_the_median():
    calls = iter([0.0] * 100)
    timing = bench.time_call(lambda: next(calls), min_runs=5, min_seconds=0, warmup=2)
    assert timing["runs"] == 5 and timing["wall"] >= 0 and timing["cpu"] >= 0


def test_cpu_info_peak():
    info = bench.cpu_info()
    assert info["cores"] >= 1
    if info["mhz"]:
        per_cycle = 64 if info.get("avx512f") else 32
        assert info["peak_gflops"] == info["cores"] * info["mhz"] * 1e6 * per_cycle / 1e9


def test_table_prints_every_row():
    timing = {"wall": 0.5, "cpu": 0.25, "runs": 3}
    result = {"rows": [bench.row("inference", "torch fp32 channels-last", 1, 64, timing, ratio=1.0),
                       {"section": "flops", "setting": "ours", "gflops_per_patch": 0.2}],
              "cpu": {"peak_formula": "2 cores x 2300 MHz x 64", "peak_gflops": 294.4},
              "model_source": "configs/cpu_mtl.yaml", "model": {"encoder": "tv_mobilenet_v2", "input_size": 128,
                                                                "tasks": []},
              "load_start": [1.0, 1.0, 1.0], "load_end": [1.0, 1.0, 1.0], "seconds": 1.0}
    text = bench.table(result)
    assert "| inference | torch fp32 channels-last | 1 | 64 | 128.0 | 500.0 | 256.0 | 1.00 |" in text
    assert "| ours | 0.200 |" in text


def test_run_config_reads_the_configs_the_package_ships():
    cfg, source = bench.run_config("cpu_mtl")
    assert source == "configs/cpu_mtl.yaml" and cfg.model.pretrained is False
    assert cfg.model.dense_tasks == ["segmentation", "pixel_classes", "localisation"]
    stl, _ = bench.run_config("cpu_stl")
    assert stl.model.dense_tasks == [] and stl.model.encoder == cfg.model.encoder


def test_bench_command_help(capsys):
    import pytest

    from mitotype.cli import main

    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "--quick" in capsys.readouterr().out
