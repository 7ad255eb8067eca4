"""Prediction sets and shift scores in the outputs of predict, evaluate and challenge (the shipped default
model carries the references; the small test model does not)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from mitotype.cli import main
from mitotype.predict.run import FIELDS


@pytest.fixture(scope="module")
def stack(track2_root):
    return track2_root / "input" / "stack_5.tiff"


def test_predict_adds_prediction_set_and_shift_score_after_the_existing_columns(stack, tmp_path, capsys):
    out = tmp_path / "p.csv"
    assert main(["predict", str(stack), "--out", str(out), "--quiet", "--threads", "1"]) == 0
    table = pd.read_csv(out)
    assert tuple(table.columns) == FIELDS + ("prediction_set", "shift_score")
    assert set(table["prediction_set"]) <= {"normal", "atypical", "both", "none"}
    assert (table["shift_score"] > 0).all()
    # "normal" / "atypical" sets agree with the class: a singleton set never contradicts the decision here
    single = table[table["prediction_set"].isin(["normal", "atypical"])]
    assert (single["prediction_set"] == single["class"]).all()
    # a larger alpha gives smaller sets: fewer figures flagged "both"
    out2 = tmp_path / "p2.csv"
    assert main(["predict", str(stack), "--out", str(out2), "--quiet", "--alpha", "0.3", "--threads", "1"]) == 0
    wide = pd.read_csv(out2)
    assert (wide["prediction_set"] == "both").sum() <= (table["prediction_set"] == "both").sum()
    np.testing.assert_allclose(wide["p_atypical"], table["p_atypical"])


@pytest.mark.parametrize("alpha", ["0", "1", "1.5", "-0.1"])
def test_predict_alpha_out_of_range_is_a_clear_error(stack, alpha, capsys):
    assert main(["predict", str(stack), "--alpha", alpha, "--quiet"]) != 0
    assert "must be in (0, 1)" in capsys.readouterr().err


def test_alpha_for_a_model_without_conformal_reference_says_how_to_get_one(stack, small_model, capsys):
    assert main(["predict", str(stack), "--model", str(small_model), "--alpha", "0.1", "--quiet"]) != 0
    assert "mitotype calibrate" in capsys.readouterr().err
    # without --alpha such a model keeps the columns it always had
    from mitotype.predict.run import predict

    rows, info = predict([stack], [str(small_model)], device="cpu", threads=1, progress=False)
    assert set(rows[0]) == set(FIELDS) and info["shift_warning"] is None


def test_predict_warns_on_stderr_for_a_far_out_batch(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(tmp_path / f"noise{i}.png")
    assert main(["predict", str(tmp_path), "--out", str(tmp_path / "p.csv"), "--quiet", "--threads", "1"]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "median shift score" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning:")


def test_challenge_json_stays_class_and_confidence(stack, tmp_path):
    folder = tmp_path / "input" / "images" / "stacked-histopathology-roi-cropouts"
    folder.mkdir(parents=True)
    shutil.copy(stack, folder)
    assert main(["challenge", "--input", str(tmp_path / "input"), "--output", str(tmp_path / "output")]) == 0
    entries = json.loads((tmp_path / "output" / "multiple-mitotic-figure-classification.json").read_text())
    assert len(entries) == 16 and all(set(e) == {"class", "confidence"} for e in entries)
    csv = tmp_path / "p.csv"
    assert main(["predict", str(stack), "--out", str(csv), "--quiet"]) == 0
    np.testing.assert_allclose([e["confidence"] for e in entries], pd.read_csv(csv)["p_atypical"], atol=1e-4)


def test_evaluate_reports_coverage_calibration_and_shift_per_domain(amibr_root, tmp_path):
    from mitotype.data.spec import load_figures
    from mitotype.evaluate.run import evaluate

    figures = load_figures(f"amibr:{amibr_root}:split=test")[::12]
    result = evaluate(["default"], "amibr test split, every 12th", tmp_path, n_boot=0, figures=figures,
                      plots_and_report=False, alpha=0.2, threads=1)
    trust = result["trust"]
    domains = sorted({f.domain for f in figures})
    conf = trust["conformal"]
    assert conf["alpha"] == 0.2 and sorted(conf["domains"]) == domains
    for part in [conf["all"], *conf["domains"].values()]:
        assert {"normal", "atypical", "flagged", "empty", "n", "sets"} <= set(part)
    assert sum(conf["all"]["sets"].values()) == len(figures)
    cal = trust["calibration"]
    assert cal["temperature"] > 0 and sorted(cal["domains"]) == domains
    assert {"ece", "ece_before", "brier", "brier_before"} <= set(cal["all"])
    assert trust["shift"]["all"]["median"] < 1.0 and 0.3 < trust["shift"]["all"]["detector_auroc"] < 0.8
    table = pd.read_csv(tmp_path / "predictions.csv")
    assert list(table.columns)[-2:] == ["prediction_set", "shift_score"]
    assert json.loads((tmp_path / "metrics.json").read_text())["trust"]["conformal"]["alpha"] == 0.2
