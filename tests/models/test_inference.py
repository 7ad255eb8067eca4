"""Shared inference: TTA over the 8 dihedral views, ensembles, crop/resize, bf16, input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mitotype.config import RunConfig
from mitotype.errors import MitotypeError
from mitotype.models import create_model
from mitotype.models.inference import dihedral_views, predict_proba, preprocess
from mitotype.models.modelfile import LoadedModel


def loaded_model(seed=0, crop=128, size=64, encoder="test_resnet", pretrained=False) -> LoadedModel:
    torch.manual_seed(seed)
    cfg = RunConfig()
    cfg.model.encoder, cfg.model.pretrained = encoder, pretrained
    cfg.model.crop_size, cfg.model.input_size = crop, size
    cfg.model.head_hidden = (32, 16)
    model = create_model(cfg.model)
    with torch.no_grad():  # a larger last layer spreads the probabilities, so differences are visible
        model.head.mlp[-1].weight.mul_(50)
    return LoadedModel(model.eval(), cfg, 0.5, {})


@pytest.fixture(scope="module")
def crops(amibr_root) -> np.ndarray:
    from mitotype.data.images import load_images
    from mitotype.data.spec import load_figures

    figures = load_figures(f"amibr:{amibr_root}:split=test")
    return load_images(figures[:: len(figures) // 12][:12], size=128)


def numpy_views(images: np.ndarray) -> list[np.ndarray]:
    views = []
    for im in (images, images[:, :, ::-1]):
        views += [np.ascontiguousarray(np.rot90(im, k, axes=(1, 2))) for k in range(4)]
    return views


def test_dihedral_views_are_the_eight_distinct_symmetries():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    views = dihedral_views(x)
    assert len(views) == 8 and torch.equal(views[0], x)
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8


def test_tta_is_the_mean_over_views_and_invariant_to_them(crops):
    lm = loaded_model()
    plain = [predict_proba(lm, v, batch_size=5) for v in numpy_views(crops)]
    tta = predict_proba(lm, crops, batch_size=5, tta=True)
    np.testing.assert_allclose(tta, np.mean(plain, axis=0), atol=2e-4)  # float rounding only
    assert np.abs(plain[0] - plain[1]).max() > 1e-3  # the model itself is not invariant ...
    for view in numpy_views(crops)[1:]:  # ... but its TTA prediction is
        np.testing.assert_allclose(predict_proba(lm, view, tta=True), tta, atol=2e-4)


def test_tta_on_a_symmetric_image_changes_nothing():
    yy, xx = np.mgrid[:128, :128] - 63.5
    r = np.sqrt(yy ** 2 + xx ** 2)
    image = np.stack([128 + 100 * np.cos(r / 6), 100 + 80 * np.sin(r / 9), 150 + 0 * r], -1).astype(np.uint8)
    image = image[None]
    assert all(np.array_equal(v, image) for v in numpy_views(image))
    lm = loaded_model()
    np.testing.assert_allclose(predict_proba(lm, image, tta=True), predict_proba(lm, image), atol=1e-5)


def test_ensemble_is_the_mean_of_models(crops):
    a, b = loaded_model(0), loaded_model(1)
    np.testing.assert_allclose(predict_proba([a, b], crops),
                               (predict_proba(a, crops) + predict_proba(b, crops)) / 2, atol=1e-6)


def test_crop_then_resize_to_the_models_sizes(crops):
    lm = loaded_model(crop=96, size=64)
    got = predict_proba(lm, crops)
    x = torch.from_numpy(crops[:, 16:112, 16:112]).permute(0, 3, 1, 2)  # centre 96 px
    from torchvision.transforms.v2 import functional as TF

    x = TF.normalize(TF.to_dtype(TF.resize(x, [64, 64], antialias=True), torch.float32, scale=True),
                     list(lm.config.model.mean), list(lm.config.model.std))
    np.testing.assert_allclose(got, lm.model.predict_proba(x).numpy(), atol=1e-6)
    # smaller inputs are zero-padded around the centre, as the data layer does for border figures
    small = predict_proba(lm, crops[:, 20:100, 20:100])
    assert small.shape == (12,) and np.isfinite(small).all()
    assert preprocess(crops[:2], 96, 64, lm.config.model.mean, lm.config.model.std).is_contiguous(
        memory_format=torch.channels_last)


def test_bf16_stays_close_to_fp32(crops, tmp_path, monkeypatch, imagenet_file):
    from mitotype.models import weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # a private hub cache, filled from the offline copy
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    weights.install(imagenet_file)
    lm = loaded_model(encoder="tv_mobilenet_v2", pretrained=True, size=128)
    last = lm.model.head.mlp[-1]
    with torch.no_grad():  # rescale the random last layer: logit differences with mean 0 and spread 2
        last.weight.div_(50)
        last.bias.zero_()
        x = preprocess(crops, 128, 128, lm.config.model.mean, lm.config.model.std)
        logits = lm.model(x).logits
        d = logits[:, 1] - logits[:, 0]
        k = 2.0 / d.std()
        last.weight.mul_(k)
        last.bias[1] -= k * d.mean()
    fp32 = predict_proba(lm, crops)
    bf16 = predict_proba(lm, crops, bf16=True)
    assert fp32.std() > 0.05  # probabilities spread out: the comparison means something
    # bf16 keeps ~2-3 significant digits: ~6% relative error in the deepest features here, so the
    # agreement is close but not exact (docs/MODELS.md gives the measured numbers)
    diff = np.abs(fp32 - bf16)
    assert diff.mean() < 0.05 and diff.max() < 0.15
    assert np.corrcoef(fp32, bf16)[0, 1] > 0.95


def test_input_checks():
    lm = loaded_model()
    with pytest.raises(MitotypeError, match="uint8"):
        predict_proba(lm, np.zeros((2, 64, 64, 3), dtype=np.float32))
    with pytest.raises(MitotypeError, match="uint8"):
        predict_proba(lm, np.zeros((64, 64, 3), dtype=np.uint8))
    with pytest.raises(MitotypeError, match="no model"):
        predict_proba([], np.zeros((1, 64, 64, 3), dtype=np.uint8))
    with pytest.raises(MitotypeError, match="backend"):
        predict_proba(lm, np.zeros((1, 64, 64, 3), dtype=np.uint8), backend="tensorrt")
    assert predict_proba(lm, np.zeros((0, 128, 128, 3), dtype=np.uint8)).shape == (0,)


# --- backends: every one gives the eager fp32 answer ------------------------------------------------------

@pytest.fixture(scope="module")
def default_loaded():
    from mitotype.models.modelfile import default_model_path, load_model

    if not default_model_path().is_file():
        pytest.skip("no default model shipped in this checkout")
    return load_model("default")


@pytest.fixture(scope="module")
def crops64(amibr_root) -> np.ndarray:
    """64 real AMi-Br crops, both classes (32 + 32), read as `mitotype predict` reads them."""
    from mitotype.data.images import load_images
    from mitotype.data.spec import load_figures

    figures = load_figures(f"amibr:{amibr_root}")
    pick = [f for f in figures if f.label == 1][::20][:32] + [f for f in figures if f.label == 0][::80][:32]
    return load_images(pick, size=128)


def test_numpy_preprocessing_is_bit_identical_to_torchvision(crops64):
    from mitotype.models.inference import normalise

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    for crop, size, images in ((128, 128, crops64), (128, 128, crops64[:, 10:110, 4:124]), (96, 64, crops64)):
        want = preprocess(images, crop, size, mean, std).contiguous().numpy()
        assert np.array_equal(normalise(images, crop, size, mean, std), want)


def test_numpy_views_are_torchvisions_views(crops64):
    from mitotype.models.inference import dihedral_views_np, normalise

    x = normalise(crops64[:4], 128, 128, (0.5,) * 3, (0.25,) * 3)
    for a, b in zip(dihedral_views_np(x), dihedral_views(torch.from_numpy(x)), strict=True):
        assert np.array_equal(a, b.numpy())


@pytest.mark.parametrize("backend", ["torch", "onnx", "auto"])
def test_every_backend_gives_the_eager_answer_on_real_crops(default_loaded, crops64, backend):
    eager = predict_proba(default_loaded, crops64, batch_size=24, backend="torch-eager")
    got = predict_proba(default_loaded, crops64, batch_size=24, backend=backend)
    np.testing.assert_allclose(got, eager, atol=1e-4, rtol=0)
    threshold = default_loaded.threshold
    assert np.array_equal(got >= threshold, eager >= threshold)
    assert 0 < (eager >= threshold).sum() < len(eager)  # both classes occur: the comparison means something


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_batches_side_by_side_give_the_one_thread_answer(default_loaded, crops64, threads):
    from mitotype.models.inference import Predictor

    one = Predictor([default_loaded], "onnx", threads=1, features=True).run(crops64, 24)
    predictor = Predictor([default_loaded], "onnx", threads=threads, features=True)
    assert predictor.workers == threads
    got = predictor.run(crops64, 24)
    np.testing.assert_allclose(got.probs, one.probs, atol=1e-6, rtol=0)
    np.testing.assert_allclose(got.features[0], one.features[0], atol=1e-5, rtol=0)


def test_small_inputs_are_split_so_every_worker_has_a_batch():
    from mitotype.models.inference import Predictor

    predictor = Predictor(loaded_model(), "torch")
    assert predictor.workers == 1 and predictor.batch_for(16, 64) == 64  # torch: one call at a time
    predictor.workers = 2
    assert predictor.batch_for(16, 64) == 8  # a 16-crop challenge stack: two batches of 8
    assert predictor.batch_for(15, 64) == 8
    assert predictor.batch_for(200, 64) == 64  # enough crops: the batch size asked for
    assert predictor.steps(16, 64) == 2
    with pytest.raises(MitotypeError, match="batch size"):
        predictor.batch_for(10, 0)


def test_folding_removes_every_batch_norm_and_leaves_the_model_alone(default_loaded):
    from mitotype.models.inference import fold_batchnorm

    folded = fold_batchnorm(default_loaded.model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.encoder.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in default_loaded.model.modules())


def test_auto_runs_torch_for_a_network_without_a_file(crops64):
    from mitotype.models.inference import Predictor

    assert Predictor(loaded_model(), backend="auto").backend == "torch"


@pytest.mark.parametrize("stain", [None, "reinhard", "macenko"])
@pytest.mark.parametrize("input_size", [128, 96])
def test_prediction_inputs_are_the_validation_inputs(amibr_root, stain, input_size):
    """No train/serve skew: for every preprocessing option, the network's input at prediction equals what
    the validation transform gives for the same crop (stain normalisation included)."""
    import torch

    from mitotype.data.images import read_rgb
    from mitotype.data.transforms import build_transform, to_sample
    from mitotype.models.inference import model_inputs, preprocessing_of

    cfg = RunConfig()
    cfg.model.input_size, cfg.augment.stain_normalise = input_size, stain
    crops = np.stack([read_rgb(p) for p in sorted((amibr_root / "patches" / "atypical").glob("*.png"))[:4]])
    validation = build_transform(cfg.model, cfg.augment, train=False)
    expected = torch.stack([validation(to_sample(c))["image"] for c in crops]).numpy()
    got = model_inputs(crops, preprocessing_of(LoadedModel(None, cfg, 0.5, {})))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    if stain:  # the option changes the pixels: the test can fail
        cfg.augment.stain_normalise = None
        plain = model_inputs(crops, preprocessing_of(LoadedModel(None, cfg, 0.5, {})))
        assert np.abs(plain - got).mean() > 0.01
