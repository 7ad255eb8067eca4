"""``mitotype adapt`` (models/adapt.py, commands/adapt.py): the written file, the prior it starts from, and
the guard against targets that cannot be a lab's figure crops."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mitotype.models import adaptation as A
from mitotype.models.adapt import MIN_IMAGES, source_prior
from mitotype.models.modelfile import load_model, read_payload, shipped_model_path
from tests.cli.conftest import _tiny_model, run_cli

BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


def link_crops(folder: Path, files: list[Path]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        os.symlink(f, folder / f.name)
    return folder


@pytest.fixture(scope="module")
def target(amibr_root, tmp_path_factory) -> Path:
    """64 real TUPAC16 crops (a source the shipped model saw little of), 16 of them atypical."""
    patches = amibr_root / "patches"
    files = sorted((patches / "normal").glob("TUPAC16_*.png"))[:48] + \
        sorted((patches / "atypical").glob("TUPAC16_*.png"))[:16]
    return link_crops(tmp_path_factory.mktemp("target") / "lab", files)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return _tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.pt")


@pytest.mark.slow  # ~45 s on a busy 2-core machine: the shipped model, adapted, then exported to ONNX
def test_adapt_writes_a_model_file_that_predict_uses(target, tmp_path):
    """The shipped model on 64 real crops: only normalisation statistics and the one prior bias change,
    the record is complete, and predict (onnxruntime, a graph exported for the new file's hash) reports
    the adapted P(atypical) with the moved threshold."""
    out = tmp_path / "adapted.pt"
    o = run_cli(["adapt", "--model", "default", "--images", str(target), "--out", str(out), "--threads", "1"])
    assert o.rc == 0, o.err + (o.exception or "")
    assert "52 batch-norm layers re-estimated" in o.out
    old, new = read_payload(shipped_model_path()), read_payload(out)
    rec = new["adaptation"]
    assert rec["n"] == 64 and rec["target"] == [str(target)] and rec["bn_layers_updated"] == 52
    assert rec["prior_old"] == 0.5 and 0 < rec["prior_new"] < 0.5 and rec["em_iterations"] >= 1
    assert rec["threshold_new"] == pytest.approx(A.shifted_threshold(old["threshold"], 0.5, rec["prior_new"]))
    assert new["threshold"] == rec["threshold_new"] and not rec["tent"]
    for key, value in old["state_dict"].items():
        layer, _, stat = key.rpartition(".")
        if stat in BN_STATS or key == rec["bias_changed"].removesuffix("[1]"):
            continue
        assert torch.equal(value, new["state_dict"][key]), key
    bias = rec["bias_changed"].removesuffix("[1]")
    delta = new["state_dict"][bias] - old["state_dict"][bias]
    assert delta[0] == 0 and float(delta[1]) == pytest.approx(rec["logit_shift"], abs=1e-6)
    # predict on the adapted file: the ONNX graph holds the new statistics
    from mitotype.data.images import load_images
    from mitotype.models.inference import predict_proba

    files = sorted(target.iterdir())
    figures = [type("F", (), {"path": str(p), "page": None})() for p in files]
    images = load_images(figures, size=128)
    eager = predict_proba([load_model(out)], images, backend="torch-eager")
    csv = tmp_path / "p.csv"
    o = run_cli(["predict", str(target), "--model", str(out), "--out", str(csv), "--quiet", "--threads", "1"])
    assert o.rc == 0, o.err
    import pandas as pd

    table = pd.read_csv(csv).sort_values("source")
    assert np.allclose(table["p_atypical"].to_numpy(), eager, atol=1e-4)
    unadapted = predict_proba([load_model("default")], images, backend="torch-eager")
    assert np.abs(unadapted - eager).max() > 0.01
    assert set(table["class"]) <= {"normal", "atypical"}
    assert ((table["p_atypical"] >= new["threshold"]) == (table["class"] == "atypical")).all()


def test_source_prior_balanced_training_and_else_the_training_prevalence(tiny, amibr_root, tmp_path):
    loaded, payload = load_model(tiny), read_payload(tiny)
    assert source_prior(loaded, payload)[0] == 0.5  # class_weights: balanced (the default)
    loaded.config.train.class_weights = "none"
    figures = sorted((amibr_root / "patches" / "atypical").glob("*.png"))[:3] + \
        sorted((amibr_root / "patches" / "normal").glob("*.png"))[:9]
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "".join(f"{p},{int('atypical' in str(p))}\n" for p in figures))
    payload["extra"] = {"data_spec": f"manifest:{manifest}", "val_spec": f"manifest:{manifest}"}
    prior, where = source_prior(loaded, payload)
    assert prior == pytest.approx(0.25) and "training part" in where
    payload["adaptation"] = {"prior_new": 0.1, "target": ["x"]}  # an adapted file starts from its target
    assert source_prior(loaded, payload)[0] == 0.1


# --- targets that cannot be a lab's crops -------------------------------------------------------------------

def refused(argv: list[str], *names: str) -> str:
    o = run_cli(argv)
    assert o.exception is None and o.rc == 2, (o.rc, o.err, o.exception)
    last = o.err.strip().splitlines()[-1]
    assert len(o.err.strip().splitlines()) == 1 and last.startswith("mitotype adapt: error: "), o.err
    for name in names:
        assert name in last, (name, last)
    return last


def write_images(folder: Path, n: int, make) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(make(i)).save(folder / f"{i}.png")
    return folder


def test_bad_targets_get_one_line_naming_the_folder(tiny, target, tmp_path, amibr_root):
    base = ["adapt", "--model", str(tiny), "--out", str(tmp_path / "a.pt"), "--images"]
    (tmp_path / "empty").mkdir()
    refused(base + [str(tmp_path / "empty")], "empty", "no images")
    refused(base + [str(tmp_path / "nowhere")], "nowhere", "not found")
    few = link_crops(tmp_path / "few", sorted(target.iterdir())[:5])
    last = refused(base + [str(few)], "few", "5 crop(s)", f"fewer than the {MIN_IMAGES}", "batch-norm statistics")
    assert "not the lab" in last
    rng = np.random.default_rng(0)
    blank = write_images(tmp_path / "blank", 64, lambda i: np.full((128, 128, 3), 240, np.uint8))
    refused(base + [str(blank)], "blank", "64 of 64", "near-constant")
    grey = write_images(tmp_path / "grey", 64, lambda i: np.repeat(rng.integers(0, 255, (128, 128, 1), np.uint8), 3, 2))
    refused(base + [str(grey)], "grey", "grey-scale")
    tiles = write_images(tmp_path / "tiles", 64, lambda i: rng.integers(0, 255, (40, 40, 3), np.uint8))
    refused(base + [str(tiles)], "tiles", "sizes far from the model's 128 px crops")
    big = link_crops(tmp_path / "big", sorted(target.iterdir()))
    Image.fromarray(rng.integers(0, 255, (1024, 1024, 3), np.uint8)).save(big / "slide.png")
    refused(base + [str(big)], "slide.png", "far larger")
    refused(base + [str(target / sorted(os.listdir(target))[0])], "not a folder")
    assert not (tmp_path / "a.pt").exists()


def test_a_few_odd_crops_warn_and_adapt(tiny, target, tmp_path):
    folder = link_crops(tmp_path / "mixed", sorted(target.iterdir()))
    Image.fromarray(np.zeros((128, 128, 3), np.uint8)).save(folder / "black.png")
    out = tmp_path / "a.pt"
    o = run_cli(["adapt", "--model", str(tiny), "--images", str(folder), "--out", str(out), "--tent"])
    assert o.rc == 0, o.err
    assert "warning" in o.err and "1 of 65 images are blank" in o.err and "black.png" in o.err
    rec = read_payload(out)["adaptation"]
    assert rec["tent"] and rec["n"] == 65 and rec["method"] == "AdaBN + prior EM + TENT"
    assert load_model(out).threshold == rec["threshold_new"]


def test_references_fitted_before_adaptation_are_dropped(tiny, target, tmp_path):
    from mitotype.models.modelfile import write_payload

    payload = read_payload(tiny)
    payload["conformal"], payload["shift"] = {"scores": {}, "alpha": 0.1}, {"fitted_on": "val"}
    model = write_payload(tmp_path / "with_refs.pt", payload)
    out = tmp_path / "a.pt"
    o = run_cli(["adapt", "--model", str(model), "--images", str(target), "--out", str(out)])
    assert o.rc == 0, o.err
    new = read_payload(out)
    assert "conformal" not in new and "shift" not in new
    assert [r.split()[0] for r in new["adaptation"]["removed"]] == ["conformal", "shift"]
