"""Background swap (train/background_swap.py) and the one training loss that uses it (train/step.py)."""

import torch

from mitotype.models import Outputs
from mitotype.models.losses import MultiTaskLoss
from mitotype.train.background_swap import consistency, keep_mask, swap_background, with_swapped
from mitotype.train.step import training_loss
from tests.train.test_module import S, _batch, _cfg


def test_background_swap_keeps_figure_and_padding():
    torch.manual_seed(0)
    batch = _batch()
    image = batch["image"]
    image[0, :, :, :8] = -2.0  # the padding strip
    swapped = swap_background(image, keep_mask(batch), batch["domain"])
    figure = batch["mask"][:, 0] > 0.5
    for i in range(4):
        assert torch.equal(swapped[i][:, figure[i]], image[i][:, figure[i]])  # figure untouched
        background = ~figure[i] & (batch["valid"][i, 0] > 0.5)
        assert not torch.equal(swapped[i][:, background], image[i][:, background])  # background replaced
    assert torch.equal(swapped[0, :, :, :8], image[0, :, :, :8])  # receiver's padding stays padding
    # The donor's padding never reaches another patch: nothing equals the padding value elsewhere.
    assert not (swapped[1:] == -2.0).any()


def test_background_swap_prefers_another_domain():
    torch.manual_seed(1)
    batch = _batch()
    image = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, S, S).clone()  # patch i filled with value i
    swapped = swap_background(image, keep_mask(batch), batch["domain"])
    donor = swapped[:, 0, 60, 60]  # a background pixel: the donor's index
    assert (batch["domain"][donor.long()] != batch["domain"]).all()


def test_background_swap_keeps_figure_and_takes_other_domain_background():
    images = torch.stack([torch.full((3, 8, 8), float(i)) for i in range(4)])
    masks = torch.zeros(4, 1, 8, 8)
    masks[:, :, 2:5, 2:5] = 1
    domains = torch.tensor([0, 0, 1, 1])
    out = swap_background(images, masks, domains, torch.Generator().manual_seed(0))
    for i in range(4):
        assert (out[i, :, 2:5, 2:5] == i).all()  # the figure is untouched
        donor = out[i, 0, 0, 0].item()
        assert domains[int(donor)] != domains[i]  # background from another domain


def test_consistency_is_zero_for_equal_predictions_and_symmetric():
    logits = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    assert consistency(logits, logits).abs() < 1e-6
    assert consistency(logits, logits.flip(0)) > 0
    torch.testing.assert_close(consistency(logits, logits.flip(0)), consistency(logits.flip(0), logits))


def test_with_swapped_doubles_the_batch_with_the_same_targets():
    torch.manual_seed(0)
    batch = {**_batch(), "weight": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    doubled = with_swapped(batch)
    for key, value in batch.items():
        assert torch.equal(doubled[key][:4], value)
        if key != "image":
            assert torch.equal(doubled[key][4:], value)  # the figure did not move: same targets
    assert not torch.equal(doubled["image"][4:], batch["image"])


def test_training_loss_adds_the_weighted_consistency_of_originals_and_copies():
    cfg = _cfg("model.segmentation=true", "model.background_swap={enabled: true, weight: 0.5}")
    criterion, batch, seen = MultiTaskLoss(cfg), _batch(), []
    logits = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))

    def forward(x):
        seen.append(x)
        return Outputs(logits, mask=torch.zeros(x.shape[0], 1, S, S))

    torch.manual_seed(0)
    total, parts = training_loss(forward, criterion, cfg, batch)
    assert len(seen) == 1 and seen[0].shape[0] == 8  # one forward pass over originals and copies
    torch.manual_seed(0)
    expected, _ = criterion(forward(seen[0]), with_swapped(batch))
    torch.testing.assert_close(parts["background_swap"], consistency(logits[:4], logits[4:]))
    torch.testing.assert_close(total, expected + 0.5 * parts["background_swap"])
    off = _cfg("model.segmentation=true")
    total_off, parts_off = training_loss(lambda x: Outputs(logits[:4], mask=torch.zeros(4, 1, S, S)), criterion,
                                         off, batch)
    assert "background_swap" not in parts_off
    torch.testing.assert_close(total_off, criterion(Outputs(logits[:4], mask=torch.zeros(4, 1, S, S)), batch)[0])
