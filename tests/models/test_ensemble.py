"""An ensemble model file: one file, loads as one model, P(atypical) = the members' mean."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mitotype.cli import main
from mitotype.config import RunConfig
from mitotype.errors import MitotypeError
from mitotype.models import create_model
from mitotype.models.inference import predict_proba
from mitotype.models.modelfile import load_model, save_model


def member(path, seed, threshold, input_size=64):
    torch.manual_seed(seed)
    cfg = RunConfig()
    cfg.model.encoder, cfg.model.pretrained, cfg.model.input_size = "test_resnet", False, input_size
    cfg.model.head_hidden = (16,)
    model = create_model(cfg.model).eval()
    with torch.no_grad():  # spread the probabilities so that the mean is a visible difference
        model.head.mlp[-1].weight.mul_(40)
    return save_model(path, model, cfg, threshold=threshold)


@pytest.fixture()
def crops(amibr_root):
    from mitotype.data.images import read_rgb

    files = sorted((amibr_root / "patches" / "atypical").glob("*.png"))[:12]
    return np.stack([read_rgb(f) for f in files])


def test_ensemble_file_is_the_mean_of_its_members(tmp_path, crops):
    paths = [member(tmp_path / f"m{i}.pt", i, t) for i, t in enumerate((0.3, 0.5, 0.7))]
    assert main(["ensemble", *map(str, paths), "--out", str(tmp_path / "ens.pt")]) == 0
    ens = load_model(tmp_path / "ens.pt")
    members = [load_model(p) for p in paths]
    each = np.stack([predict_proba([m], crops) for m in members])
    assert each.std(axis=0).mean() > 0.01  # members disagree: the test can fail
    np.testing.assert_allclose(predict_proba([ens], crops), each.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(predict_proba([ens], crops, tta=True),
                               np.mean([predict_proba([m], crops, tta=True) for m in members], axis=0), atol=1e-6)
    assert ens.threshold == pytest.approx(0.5)
    assert main(["ensemble", *map(str, paths), "--out", str(tmp_path / "e2.pt"), "--threshold", "0.4"]) == 0
    assert load_model(tmp_path / "e2.pt").threshold == pytest.approx(0.4)


def test_members_must_share_preprocessing(tmp_path, capsys):
    a, b = member(tmp_path / "a.pt", 0, 0.5), member(tmp_path / "b.pt", 1, 0.5, input_size=96)
    assert main(["ensemble", str(a), str(b), "--out", str(tmp_path / "e.pt")]) == 2
    assert "input_size" in capsys.readouterr().err
    assert not (tmp_path / "e.pt").exists()
    with pytest.raises(MitotypeError, match="at least two"):
        from mitotype.models.modelfile import save_ensemble

        save_ensemble(tmp_path / "e.pt", [a])


def test_an_ensemble_that_stores_tta_averages_the_views_on_every_backend(tmp_path, crops, monkeypatch):
    from mitotype.models.onnx import open_model

    monkeypatch.setenv("MITOTYPE_CACHE", str(tmp_path / "cache"))
    paths = [member(tmp_path / f"m{i}.pt", i, 0.5) for i in range(2)]
    assert main(["ensemble", *map(str, paths), "--out", str(tmp_path / "plain.pt")]) == 0
    assert main(["ensemble", *map(str, paths), "--tta", "--out", str(tmp_path / "tta.pt")]) == 0
    plain, stored = load_model(tmp_path / "plain.pt"), load_model(tmp_path / "tta.pt")
    with_views = predict_proba([plain], crops, tta=True)
    assert np.abs(with_views - predict_proba([plain], crops)).max() > 1e-3  # the views change the answer
    np.testing.assert_allclose(predict_proba([stored], crops), with_views, atol=1e-6)
    graph = open_model(tmp_path / "tta.pt")  # onnxruntime: the flag travels in the graph's metadata
    assert graph.meta["tta"] is True
    np.testing.assert_allclose(predict_proba([graph], crops, backend="onnx"), with_views, atol=1e-4)
