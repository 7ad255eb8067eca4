"""bench.inference: the variants it times are the owners' runners (models.inference, models.onnx)."""

from __future__ import annotations

import numpy as np
import torch

from mitotype.bench import inference
from mitotype.train.speed import run_config


def _loaded():
    from mitotype.models import create_model
    from mitotype.models.modelfile import LoadedModel

    torch.manual_seed(0)
    cfg, _ = run_config("cpu_stl", ["model.input_size=64"])
    return LoadedModel(model=create_model(cfg.model).eval(), config=cfg, threshold=0.5)


def test_torch_variants_agree_and_leave_the_model_alone():
    loaded = _loaded()
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    runners = inference.torch_runners(loaded)
    assert list(runners)[0] == inference.REFERENCE
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0)).numpy()
    ref = runners[inference.REFERENCE](x)
    with torch.inference_mode():
        eager = loaded.model(torch.from_numpy(x), dense=False).logits.numpy()
    np.testing.assert_allclose(ref, eager, atol=1e-5)
    np.testing.assert_allclose(runners["torch fp32 NCHW"](x), ref, atol=1e-5)
    np.testing.assert_allclose(runners["torch fp32 channels-last, BN folded"](x), ref, atol=1e-4)
    np.testing.assert_allclose(runners["torch bf16 channels-last"](x), ref, atol=0.1)
    assert all(torch.equal(v, loaded.model.state_dict()[k]) for k, v in before.items())
    assert loaded.model.encoder.features[0][0].weight.is_contiguous()  # still NCHW: each variant has its copy


def test_onnx_runner_is_the_predict_session(tmp_path):
    loaded = _loaded()
    files = inference.onnx_files(loaded, tmp_path, int8=False)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)).numpy()
    np.testing.assert_allclose(inference.onnx_runner(files["onnxruntime fp32"], 1)(x),
                               inference.torch_runners(loaded)[inference.REFERENCE](x), atol=1e-4)
