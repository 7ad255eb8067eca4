"""bench.machine: the peak estimate and the model a run times."""

from __future__ import annotations

from mitotype.bench import machine


def test_cpu_info_peak_is_cores_times_clock_times_flops_per_cycle():
    info = machine.cpu_info()
    assert info["cores"] >= 1
    if info["mhz"]:
        per_cycle = machine.FLOPS_PER_CYCLE_AVX512 if info.get("avx512f") else 32
        assert info["peak_gflops"] == info["cores"] * info["mhz"] * 1e6 * per_cycle / 1e9
        assert f"{per_cycle} fp32 FLOP/cycle" in info["peak_formula"]


def test_default_model_without_the_shipped_file_is_the_cpu_mtl_architecture(monkeypatch, tmp_path):
    from mitotype.models import modelfile

    monkeypatch.setattr(modelfile, "default_model_path", lambda: tmp_path / "missing.pt")
    loaded, source = machine.default_model()
    assert source == "configs/cpu_mtl.yaml" and loaded.config.model.pretrained is False
    assert not loaded.model.training
