"""AdaBN, the prior EM and the threshold shift (models/adaptation.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mitotype.models import adaptation as A

BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


def label_shift(n: int, prior: float, source_prior: float, seed: int = 0) -> np.ndarray:
    """Calibrated posteriors under ``source_prior`` of figures drawn with ``prior``: scores x | y ~ N(+-1, 1),
    log-likelihood ratio 2x."""
    rng = np.random.default_rng(seed)
    y = rng.uniform(size=n) < prior
    x = rng.normal(np.where(y, 1.0, -1.0), 1.0)
    return A.sigmoid(2 * x + A.logit(source_prior))


@pytest.mark.parametrize(("prior", "source_prior"), [(0.15, 0.5), (0.6, 0.5), (0.1, 0.3), (0.3, 0.3)])
def test_em_recovers_a_known_prior(prior, source_prior):
    probs = label_shift(20000, prior, source_prior)
    estimate, iterations = A.em_prior(probs, source_prior)
    assert estimate == pytest.approx(prior, abs=0.015)
    assert 1 <= iterations < 1000
    naive = float(np.mean(probs))  # the mean posterior is biased towards the source prior; EM is not
    assert abs(estimate - prior) < abs(naive - prior) or prior == source_prior


def test_threshold_moves_by_the_prior_log_odds_and_keeps_every_decision():
    t, old, new = 0.47, 0.5, 0.2
    moved = A.shifted_threshold(t, old, new)
    assert moved < t  # fewer atypical figures: the re-weighted P(atypical) is lower, so is its threshold
    assert A.logit(moved) - A.logit(t) == pytest.approx(A.logit(new) - A.logit(old))
    assert A.shifted_threshold(t, 0.5, 0.5) == pytest.approx(t)
    assert A.shifted_threshold(t, 0.2, 0.6) > t
    p = np.random.default_rng(1).uniform(size=5000)
    assert np.array_equal(A.reweight(p, old, new) >= moved, p >= t)


def tiny_net():
    """A small batch-normalised MitoNet with decoders (which the classification path does not reach)."""
    from mitotype.config import RunConfig
    from mitotype.models import create_model

    torch.manual_seed(0)
    cfg = RunConfig()
    cfg.model.encoder, cfg.model.pretrained, cfg.model.input_size = "mobilenetv3_small_050", False, 64
    cfg.model.head_hidden = (16,)
    cfg.model.segmentation.enabled = True
    return create_model(cfg.model).eval()


def real_inputs(amibr_root, n=48, size=64):
    from mitotype.data.images import load_images
    from mitotype.models.inference import model_inputs

    files = sorted((amibr_root / "patches" / "normal").glob("TUPAC16_*.png"))[:n]
    figures = [type("F", (), {"path": str(p), "page": None})() for p in files]
    images = load_images(figures, size=128)
    return torch.from_numpy(model_inputs(images, (128, size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), None)))


def test_adabn_changes_only_normalisation_statistics(amibr_root):
    net = tiny_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = real_inputs(amibr_root)
    updated = A.adabn(net, [x[:24], x[24:]], lambda m, b: m(b, dense=False).logits)
    after = net.state_dict()
    layers = A.batch_norms(net)
    assert updated and set(updated) < set(layers)  # the decoder's layers are not on the classification path
    assert all(not name.startswith("decoder") for name in updated)
    for key, value in before.items():
        layer, _, stat = key.rpartition(".")
        if stat in BN_STATS and layer in updated:
            continue
        assert torch.equal(value, after[key]), key  # weights, biases, untouched layers: bit for bit
    first = updated[0]
    assert not torch.allclose(before[f"{first}.running_mean"], after[f"{first}.running_mean"])
    assert int(after[f"{first}.num_batches_tracked"]) == 2
    assert all(not m.training for m in net.modules())
    # the first layer's statistics are those of the stem convolution's output, batch means averaged
    assert first == "encoder.body.bn1"
    with torch.no_grad():
        z = [net.encoder.body.conv_stem(b) for b in (x[:24], x[24:])]
    expected = torch.stack([t.mean(dim=(0, 2, 3)) for t in z]).mean(0)
    assert torch.allclose(after[f"{first}.running_mean"], expected, atol=1e-5)


def test_tent_trains_only_batch_norm_scale_and_shift(amibr_root):
    net = tiny_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = real_inputs(amibr_root, n=32)
    history = A.tent(net, lambda: [x[:16], x[16:]], lambda m, b: m(b, dense=False).logits, epochs=2, lr=1e-2)
    assert len(history) == 2 and all(np.isfinite(history))
    after = net.state_dict()
    layers = A.batch_norms(net)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed
    for key in changed:
        layer, _, name = key.rpartition(".")
        assert layer in layers and name in ("weight", "bias", *BN_STATS), key
    assert all(p.requires_grad for p in net.parameters())  # restored
