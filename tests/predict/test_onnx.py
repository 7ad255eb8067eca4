"""ONNX export of the classification path and ``--backend onnx`` against PyTorch on real AMi-Br crops."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mitotype.cli import main
from mitotype.predict.onnx import OnnxClassifier, cached_export, export_onnx, read_metadata

from .conftest import amibr_pngs


@pytest.fixture(scope="module")
def crops(amibr_root):
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in amibr_pngs(amibr_root, 24, seed=1)])


@pytest.fixture(scope="module")
def exported(small_loaded, tmp_path_factory):
    return export_onnx(small_loaded, tmp_path_factory.mktemp("onnx") / "m.onnx")


def test_export_is_valid_and_self_describing(exported, small_loaded, small_model):
    import onnx

    model = onnx.load(str(exported))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["logits", "p_atypical"]
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
