"""``mitotype evaluate`` on real AMi-Br figures: output files, metrics equal to scikit-learn on the written
predictions, the model file's threshold, ensembles, and user errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from mitotype.cli import main
from mitotype.errors import MitotypeError
from mitotype.evaluate.run import PLOTS, evaluate, write_evaluation

OUTPUTS = ("metrics.json", "predictions.csv", "report.md", "run.json", *PLOTS.values())


@pytest.fixture(scope="module")
def test_figures(amibr_root):
    """60 real AMi-Br test-split figures from both sources, atypical and normal, several slides."""
    from mitotype.data.spec import load_figures

    figures = load_figures(f"amibr:{amibr_root}:split=test:domain=source")
    rng = np.random.default_rng(0)
    pick = []
    for source in ("MIDOG21", "TUPAC16"):
        for label in (0, 1):
            pool = [f for f in figures if f.domain == source and f.label == label]
            pick += [pool[i] for i in rng.choice(len(pool), 15, replace=False)]
    return pick


def tiny_model(cfg, images, seed):
    """An untrained network whose batch-norm statistics are set on real crops, so that its P(atypical)
    varies from figure to figure (at initialisation the activations saturate and every output is equal)."""
    import torch

    from mitotype.models import create_model
    from mitotype.models.inference import preprocess

    torch.manual_seed(seed)
    model = create_model(cfg.model)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average over the calibration batch
    x = preprocess(torch.from_numpy(images), cfg.model.crop_size, cfg.model.input_size, cfg.model.mean,
                   cfg.model.std)
    with torch.no_grad():
        model.train()(x)
    return model.eval()


def _model_file(path, threshold, seed, images):
    from mitotype.config import load_config
    from mitotype.models.modelfile import save_model

    cfg = load_config(None, ["model.pretrained=false", "model.encoder=resnet18", "model.input_size=64",
                             "model.head_hidden=[]"])
    return save_model(path, tiny_model(cfg, images, seed), cfg, threshold=threshold, extra={"data_spec": "test"})


@pytest.fixture(scope="module")
def model_files(tmp_path_factory, test_figures):
    from mitotype.data.images import load_images

    d = tmp_path_factory.mktemp("models")
    images = load_images(test_figures, 128)
    return [_model_file(d / "a.pt", 0.47, 0, images), _model_file(d / "b.pt", 0.52, 1, images)]


def _check_against_sklearn(out_dir, threshold):
    m = json.loads((out_dir / "metrics.json").read_text())
    p = pd.read_csv(out_dir / "predictions.csv")
    assert list(p.columns[:7]) == ["path", "page", "domain", "group", "label", "p_atypical", "class"]
    pred = (p["p_atypical"] >= threshold).astype(int)
    assert (pred == (p["class"] == "atypical")).all()
    assert m["threshold"] == pytest.approx(threshold)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(p["label"], pred), abs=1e-9)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(p["label"], pred), abs=1e-9)
    assert m["sensitivity"] == pytest.approx(skm.recall_score(p["label"], pred), abs=1e-9)
    assert m["specificity"] == pytest.approx(skm.recall_score(p["label"], pred, pos_label=0), abs=1e-9)
    # p_atypical is rounded to 6 decimals in the CSV; AUROC from it agrees to that precision
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(p["label"], p["p_atypical"]), abs=1e-4)
    for domain, sub in m["per_domain"].items():
        q = p[p["domain"] == domain]
        assert sub["n"] == len(q)
        assert sub["balanced_accuracy"] == pytest.approx(
            skm.balanced_accuracy_score(q["label"], q["p_atypical"] >= threshold), abs=1e-9)
    return m, p


def test_write_evaluation_from_probabilities(tmp_path, test_figures):
    rng = np.random.default_rng(1)
    labels = np.array([f.label for f in test_figures])
    probs = np.clip(0.35 * labels + rng.uniform(0.1, 0.6, len(labels)), 0, 1)
    info = [{"path": "synthetic", "threshold": 0.5, "encoder": "none", "dense_tasks": []}]
    result = write_evaluation(tmp_path, test_figures, probs, 0.5, "amibr:test-subset", info, n_boot=200)
    for name in OUTPUTS:
        assert (tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0, name
    m, _ = _check_against_sklearn(tmp_path, 0.5)
    assert m == json.loads(json.dumps(result))
    assert set(m["per_domain"]) == {"MIDOG21", "TUPAC16"}
    assert m["bootstrap"]["unit"] == "group"  # AMi-Br slides are known: slides are resampled
    assert m["n"] == 60 and m["n_atypical"] == 30
    report = (tmp_path / "report.md").read_text()
    for png in PLOTS.values():
        assert f"]({png})" in report
    assert "git_commit" in report and "amibr:test-subset" in report


def test_evaluate_uses_the_model_files_threshold(tmp_path, test_figures, model_files):
    from mitotype.data.images import load_images
    from mitotype.models.inference import predict_proba
    from mitotype.models.modelfile import load_model

    result = evaluate([model_files[0]], "amibr:subset", tmp_path, figures=test_figures, n_boot=50,
                      device="cpu")
    assert result["threshold"] == pytest.approx(0.47)
    _, p = _check_against_sklearn(tmp_path, 0.47)
    expected = predict_proba([load_model(model_files[0])], load_images(test_figures, 128))
    assert expected.std() > 1e-3 and 0 < (expected >= 0.47).mean() < 1  # a test that can fail
    np.testing.assert_allclose(p["p_atypical"], expected, atol=1e-6)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["models"][0]["sha256"] and run["threshold_source"] == "model file"


def test_ensemble_is_the_mean_probability(tmp_path, test_figures, model_files):
    from mitotype.data.images import load_images
    from mitotype.evaluate.run import ensemble_threshold
    from mitotype.models.inference import predict_proba
    from mitotype.models.modelfile import load_model

    both = evaluate(model_files, "s", tmp_path, figures=test_figures, n_boot=0, device="cpu")
    assert both["threshold"] == pytest.approx((0.47 + 0.52) / 2)
    loaded = [load_model(f) for f in model_files]
    images = load_images(test_figures, 128)
    single = [predict_proba([m], images) for m in loaded]
    ens = pd.read_csv(tmp_path / "predictions.csv")
    np.testing.assert_allclose(ens["p_model0"], single[0], atol=1e-6)
    np.testing.assert_allclose(ens["p_model1"], single[1], atol=1e-6)
    np.testing.assert_allclose(ens["p_atypical"], (single[0] + single[1]) / 2, atol=1e-6)
    # the same mean as inference.predict_proba of the list of models (what `mitotype predict` uses)
    np.testing.assert_allclose(ens["p_atypical"], predict_proba(loaded, images), atol=1e-5)
    labels = np.array([f.label for f in test_figures])
    for member, p, t in zip(both["members"], single, (0.47, 0.52)):
        assert member["threshold"] == t
        assert member["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(labels, p >= t))
    _check_against_sklearn(tmp_path, (0.47 + 0.52) / 2)
    assert ensemble_threshold(loaded, 0.5) == 0.5
    with pytest.raises(MitotypeError, match="threshold"):
        ensemble_threshold(loaded, 1.5)


def test_cli_writes_everything_and_single_class_domain(tmp_path, amibr_root, test_figures, model_files, capsys):
    # A manifest whose TUPAC16 part holds normal figures only: AUROC there is null, not a crash.
    rows = [f for f in test_figures if f.domain == "MIDOG21" or f.label == 0]
    pd.DataFrame({"path": [f.path for f in rows], "label": [f.label for f in rows],
                  "domain": [f.domain for f in rows], "group": [f.group for f in rows]}
                 ).to_csv(tmp_path / "m.csv", index=False)
    out = tmp_path / "out"
    code = main(["evaluate", "--model", str(model_files[0]), "--data", f"manifest:{tmp_path / 'm.csv'}",
                 "--out", str(out), "--n-boot", "50", "--device", "cpu"])
    assert code == 0
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["per_domain"]["TUPAC16"]["auroc"] is None
    assert m["per_domain"]["MIDOG21"]["auroc"] is not None
    assert "balanced_accuracy" in capsys.readouterr().out


def test_user_errors(tmp_path, track2_root, model_files, capsys):
    assert main(["evaluate", "--model", str(tmp_path / "missing.pt"), "--data", "folder:/nonexistent",
                 "--out", str(tmp_path)]) == 2
    # an unlabelled TIFF stack cannot be evaluated: the message says how to add labels
    with pytest.raises(MitotypeError, match="gt="):
        evaluate([model_files[0]], f"stack:{track2_root / 'input' / 'stack_5.tiff'}", tmp_path, device="cpu")
    with pytest.raises(SystemExit):
        main(["evaluate", "--model", "m.pt", "--data", "x", "--threshold", "1.5"])
    capsys.readouterr()
