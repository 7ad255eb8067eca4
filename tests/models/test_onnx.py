"""ONNX export of the classification path and ``--backend onnx`` against PyTorch on real AMi-Br crops."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mitotype.cli import main
from mitotype.errors import MitotypeError
from mitotype.models.onnx import OnnxClassifier, cached_export, export_onnx, read_metadata
from tests.predict.conftest import amibr_pngs


@pytest.fixture(scope="module")
def crops(amibr_root):
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in amibr_pngs(amibr_root, 24, seed=1)])


@pytest.fixture(scope="module")
def stack_path(track2_root):
    return track2_root / "input" / "stack_5.tiff"


@pytest.fixture(scope="module")
def exported(small_loaded, tmp_path_factory):
    return export_onnx(small_loaded, tmp_path_factory.mktemp("onnx") / "m.onnx")


def test_export_is_valid_and_self_describing(exported, small_loaded, small_model):
    import onnx

    model = onnx.load(str(exported))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["logits", "p_atypical", "features"]  # features: shift score
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # dynamic batch
    meta = read_metadata(exported)
    cfg = small_loaded.config.model
    assert json.loads(meta["mean"]) == pytest.approx(list(cfg.mean))
    assert json.loads(meta["std"]) == pytest.approx(list(cfg.std))
    assert int(meta["input_size"]) == cfg.input_size and float(meta["mpp"]) == cfg.mpp
    assert float(meta["threshold"]) == pytest.approx(small_loaded.threshold)
    assert json.loads(meta["class_names"]) == ["normal", "atypical"]
    from mitotype.io import sha256_file

    assert meta["source_model_sha256"] == sha256_file(small_model)


def test_onnx_matches_torch_on_real_crops(exported, small_loaded, crops):
    import torch

    from mitotype.models.inference import preprocess

    cfg = small_loaded.config.model
    x = preprocess(crops, cfg.crop_size, cfg.input_size, cfg.mean, cfg.std)
    with torch.inference_mode():
        want = small_loaded.model(x, dense=False).logits.float()
    session = OnnxClassifier(exported)
    for batch in (1, 7, 24):  # dynamic batch
        logits = session.logits(x[:batch].contiguous().numpy())
        np.testing.assert_allclose(logits, want[:batch].numpy(), atol=1e-4)
    p_want = torch.softmax(want, 1)[:, 1].numpy()
    np.testing.assert_allclose(session(x.contiguous().numpy()), p_want, atol=1e-4)
    assert p_want.std() > 1e-3  # the test model really separates these crops


@pytest.mark.parametrize("tta", [False, True])
def test_backends_agree_through_predict_proba(small_loaded, crops, tta):
    from mitotype.models.inference import predict_proba

    subset = crops[:4] if tta else crops
    p_torch = predict_proba([small_loaded], subset, batch_size=5, tta=tta, backend="torch")
    p_onnx = predict_proba([small_loaded], subset, batch_size=5, tta=tta, backend="onnx")
    np.testing.assert_allclose(p_onnx, p_torch, atol=1e-4)


def test_export_is_cached(small_loaded):
    first = cached_export(small_loaded)
    stamp = first.stat().st_mtime_ns
    assert cached_export(small_loaded) == first and first.stat().st_mtime_ns == stamp


def test_export_command(tmp_path, small_model, capsys):
    out = tmp_path / "cli.onnx"
    assert main(["export", "--model", str(small_model), "--onnx", str(out), "--opset", "18"]) == 0
    import onnx

    assert onnx.load(str(out)).opset_import[0].version == 18
    assert main(["export", "--model", str(small_model), "--onnx", str(out), "--opset", "5"]) == 2
    assert "opset" in capsys.readouterr().err


# --- the graph cache: reused, never stale, never fatal ----------------------------------------------------

def _resaved(src, dest, threshold):
    """A copy of the model file with other content (another threshold), so another hash."""
    from mitotype.models.modelfile import load_model, save_model

    loaded = load_model(src)
    return save_model(dest, loaded.model, loaded.config, threshold=threshold)


def test_open_model_reuses_the_cached_graph(small_model, tmp_path, monkeypatch):
    from mitotype.models.onnx import OnnxModel, open_model

    monkeypatch.setenv("MITOTYPE_CACHE", str(tmp_path / "cache"))
    first = open_model(small_model)
    assert isinstance(first, OnnxModel) and first.model is None
    graphs = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(graphs) == 1
    stamp = graphs[0].stat().st_mtime_ns
    second = open_model(small_model)
    assert second.classifier.path == graphs[0] and graphs[0].stat().st_mtime_ns == stamp  # not rebuilt
    assert second.threshold == pytest.approx(first.threshold) and second.config == first.config


def test_a_changed_model_file_gets_its_own_graph(small_model, small_loaded, tmp_path, monkeypatch):
    from mitotype.models.onnx import open_model

    monkeypatch.setenv("MITOTYPE_CACHE", str(tmp_path / "cache"))
    a = open_model(small_model)
    copy = _resaved(small_model, tmp_path / "copy.pt", threshold=0.25)
    b = open_model(copy)
    assert a.classifier.path != b.classifier.path
    assert b.threshold == pytest.approx(0.25) and a.threshold == pytest.approx(small_loaded.threshold)
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 2


def test_a_damaged_or_foreign_cached_graph_is_rebuilt(small_model, exported, tmp_path, monkeypatch):
    import shutil

    from mitotype.io import sha256_file
    from mitotype.models.onnx import cached_path, open_model

    monkeypatch.setenv("MITOTYPE_CACHE", str(tmp_path / "cache"))
    slot = cached_path(sha256_file(small_model))
    slot.parent.mkdir(parents=True)
    slot.write_bytes(b"not an onnx graph")
    assert open_model(small_model).classifier.path == slot and slot.stat().st_size > 1000
    other = _resaved(small_model, tmp_path / "other.pt", threshold=0.9)
    shutil.copyfile(slot, cached_path(sha256_file(other)))  # a graph of another model under this key
    assert open_model(other).threshold == pytest.approx(0.9)  # rebuilt from `other`, not trusted


def test_an_unwritable_cache_falls_back_to_a_temporary_file(small_model, tmp_path, monkeypatch):
    from mitotype.models.onnx import OnnxModel, open_model

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("MITOTYPE_CACHE", str(blocker / "cache"))  # cannot be created, even by root
    with pytest.warns(UserWarning, match="not writable"):
        opened = open_model(small_model)
    assert isinstance(opened, OnnxModel) and not str(opened.classifier.path).startswith(str(blocker))


def test_a_warm_cache_predicts_without_importing_torch(track2_root, tmp_path):
    """The shipped model (128 px in, no resize: a resize would need torchvision's kernel) from a warm cache."""
    import os
    import subprocess
    import sys

    from mitotype.models.modelfile import default_model_path

    if not default_model_path().is_file():
        pytest.skip("no default model shipped in this checkout")
    env = {**os.environ, "MITOTYPE_CACHE": str(tmp_path / "cache")}
    script = ("import sys; from mitotype.predict.run import predict; "
              f"rows, info = predict([{str(track2_root / 'input' / 'stack_5.tiff')!r}], ['default'], "
              "device='cpu', threads=1); "
              "print(len(rows), info['backend'], 'torch' in sys.modules)")
    outputs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                              check=True).stdout.split() for _ in range(2)]
    assert outputs[0][:2] == ["16", "onnx"]  # the cold run exports (with torch)
    assert outputs[1] == ["16", "onnx", "False"]


def test_static_int8_graph_keeps_the_contract(crops, tmp_path):
    """On the shipped model's graph (real weights: the small random-weight model's P(atypical) spans a few
    hundredths, less than int8's rounding, so agreement there would say nothing): the quantised graph keeps
    the metadata and the input/output contract, and its P(atypical) follows fp32's."""
    from mitotype.models.inference import model_inputs, preprocessing_of
    from mitotype.models.int8 import quantise_int8
    from mitotype.models.onnx import open_model, packaged_graph

    fp32 = packaged_graph()
    meta32 = read_metadata(fp32)
    x = model_inputs(crops, preprocessing_of(open_model("default")))
    path = quantise_int8(fp32, tmp_path / "int8.onnx", x[:16], method="MinMax")
    meta = read_metadata(path)
    assert "static int8 QDQ" in meta["quantisation"] and meta["threshold"] == meta32["threshold"]
    p8, p32 = OnnxClassifier(path)(x), OnnxClassifier(fp32)(x)
    assert p8.shape == p32.shape and np.all((p8 >= 0) & (p8 <= 1))
    assert np.ptp(p32) > 0.5  # these crops span the range: a broken graph could not follow
    assert np.corrcoef(p8, p32)[0, 1] > 0.8


def test_a_failed_export_falls_back_to_torch_with_a_warning(small_model, stack_path, tmp_path, monkeypatch):
    from mitotype.models import onnx as onnx_mod
    from mitotype.predict.run import predict

    def broken(*args, **kwargs):
        raise MitotypeError("exporter says no")

    monkeypatch.setenv("MITOTYPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(onnx_mod, "export_onnx", broken)
    with pytest.warns(UserWarning, match="exporter says no"):
        rows, info = predict([stack_path], [str(small_model)], device="cpu", threads=1)
    assert info["backend"] == "torch" and len(rows) == 16


def test_the_packaged_graph_describes_the_shipped_model_and_is_used(tmp_path, monkeypatch):
    """default.onnx ships beside default.pt so that a fresh container needs no export; it must be the
    graph of exactly that file (regenerate: mitotype export --model default --onnx
    src/mitotype/assets/default.onnx), and predict uses it with an empty cache."""
    from mitotype.io import sha256_file
    from mitotype.models import onnx as O
    from mitotype.models.modelfile import default_model_path

    graph = O.packaged_graph()
    assert graph.is_file()
    assert O._describes(O.read_metadata(graph), sha256_file(default_model_path()))
    monkeypatch.setenv("MITOTYPE_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(O, "export_onnx", lambda *a, **k: (_ for _ in ()).throw(AssertionError("exported")))
    model = O.open_model("default")
    assert isinstance(model, O.OnnxModel) and str(model.classifier.path) == str(graph)
