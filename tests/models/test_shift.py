"""The shift score (models/shift.py): its math on synthetic features, and on real crops with the shipped
default model, which carries the reference fitted on its validation part."""

from __future__ import annotations

import numpy as np
import pytest

from mitotype.errors import MitotypeError
from mitotype.models import shift as S


def gaussian(n, c=40, seed=0, shift=0.0):
    """Features with a known low-rank-plus-noise covariance (5 strong directions)."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(np.random.default_rng(99).normal(size=(c, c)))[0][:, :5]
    return rng.normal(size=(n, 5)) * np.array([8, 6, 5, 4, 3]) @ basis.T + rng.normal(size=(n, c)) + shift


@pytest.mark.parametrize("channels", [None, [10, 30]])
def test_scale_puts_fresh_in_domain_figures_at_the_95th_percentile(channels):
    ref = S.Reference.from_plain(S.fit_reference(gaussian(400), channels, rank=8))
    fresh = ref.scores(gaussian(4000, seed=1))
    assert np.mean(fresh <= 1.0) == pytest.approx(S.LEVEL, abs=0.03)
    assert len(ref.validation_scores) == 400 and np.mean(ref.validation_scores <= 1.0) == pytest.approx(0.95, abs=0.01)
    shifted = ref.scores(gaussian(400, seed=2, shift=1.0))
    assert np.median(shifted) > 1.0 > np.median(fresh)
    assert S.detector_auroc(shifted, ref) > 0.95
    assert S.detector_auroc(ref.scores(gaussian(400, seed=3)), ref) == pytest.approx(0.5, abs=0.06)


def test_distance_is_the_mahalanobis_distance_of_the_ppca_gaussian():
    x = gaussian(300)
    ref = S._fit(x, 5)
    cov = ref.components.T @ np.diag(ref.variances - ref.residual_variance) @ ref.components \
        + ref.residual_variance * np.eye(x.shape[1])
    f = gaussian(7, seed=4)
    c = f - ref.mean
    expected = np.sqrt(np.einsum("ij,jk,ik->i", c, np.linalg.inv(cov), c))
    np.testing.assert_allclose(ref.distances(f), expected, rtol=1e-6)


def test_metadata_encoding_is_exact_and_errors_are_clear():
    plain = S.fit_reference(gaussian(100), [15, 25], rank=4)
    back = S.Reference.from_plain(S.decode(S.encode(plain)))
    f = gaussian(9, seed=5)
    np.testing.assert_array_equal(back.scores(f), S.Reference.from_plain(plain).scores(f))
    with pytest.raises(MitotypeError, match="channels"):
        back.scores(np.zeros((2, 3)))
    with pytest.raises(MitotypeError, match="at least"):
        S.fit_reference(gaussian(5))
    with pytest.raises(MitotypeError, match="stages"):
        S.fit_reference(gaussian(50), [10, 10])
    with pytest.raises(MitotypeError, match="unknown method"):
        S.Reference.from_plain({**plain, "method": "energy"})


def test_batch_warning_rule():
    assert S.batch_warning([0.5, 0.9, 1.4]) is None  # median 0.9
    line = S.batch_warning([0.5, 1.2, 1.4], "crops/")
    assert line.startswith("warning: crops/") and "median shift score 1.20" in line and "\n" not in line
    assert S.batch_warning([]) is None


@pytest.fixture(scope="module")
def real(amibr_root):
    """24 AMi-Br test-split crops, and the same crops recoloured (inverted) and pure noise."""
    from mitotype.data.images import load_images
    from mitotype.data.spec import load_figures

    images = load_images(load_figures(f"amibr:{amibr_root}:split=test")[::35], 128)
    noise = np.random.default_rng(0).integers(0, 256, images.shape, dtype=np.uint8)
    return {"in-domain": images, "inverted": 255 - images, "noise": noise}


def test_default_model_carries_the_references():
    from mitotype.models.modelfile import load_model

    meta = load_model("default").meta
    assert meta["calibration"]["temperature"] > 0 and set(meta["conformal"]["scores"]) == {"normal", "atypical"}
    assert meta["shift"]["method"] == S.METHOD and meta["shift"]["n"] == meta["calibration"]["n"]
    assert meta["shift"]["channels"] == [16, 24, 32, 96, 1280]  # every stage of the MobileNetV2 encoder


def test_in_domain_crops_score_lower_than_recoloured_or_noise_crops_on_both_backends(real):
    """Real crops: in-domain below the in-domain 95th percentile, noise far out (the batch warns), and the
    torch and onnxruntime backends give the same scores (the graph exposes the pooled features)."""
    from mitotype.models import trust
    from mitotype.models.inference import Predictor
    from mitotype.models.modelfile import load_model
    from mitotype.models.onnx import OnnxModel, open_model

    onnx_model = open_model("default")
    assert isinstance(onnx_model, OnnxModel)
    scores = {}
    for backend, model in (("torch", load_model("default")), ("onnx", onnx_model)):
        predictor = Predictor([model], backend, features=True)
        scores[backend] = {k: trust.shift_scores([model], predictor.run(v, 32).features) for k, v in real.items()}
    for k in real:
        np.testing.assert_allclose(scores["onnx"][k], scores["torch"][k], rtol=2e-3, atol=1e-3)
    s = scores["onnx"]
    assert np.median(s["in-domain"]) < 0.8 and S.batch_warning(s["in-domain"]) is None
    assert np.median(s["inverted"]) > np.median(s["in-domain"]) + 0.2
    assert np.median(s["noise"]) > 1.0 and S.batch_warning(s["noise"]) is not None
