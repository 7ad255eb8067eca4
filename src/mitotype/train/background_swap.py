"""Background swap, the one owner: which pixels stay, the swap itself, and the consistency term.

A training batch of n patches becomes 2n: the originals and copies whose background (outside the figure)
comes from another patch of the batch, from another domain where the batch has one. The copies keep every
target (the figure did not move) and so get the class and dense losses too; ``consistency`` ties the class
predictions on a patch and on its copy (``model.background_swap.weight`` of it joins the loss, in
:func:`mitotype.train.step.training_loss`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def keep_mask(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Pixels a background swap must not touch: the figure and ignored pixels (zero-padding is not
    background tissue: neither replaced in the receiver nor pasted from the donor)."""
    return torch.maximum(batch["mask"], 1.0 - batch["valid"])


def swap_background(images: torch.Tensor, masks: torch.Tensor, domains: torch.Tensor,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image's background (outside ``masks``, (N, 1, H, W) in {0, 1}) replaced by the background of
    another image in the batch, from another domain where the batch has one.

    Where the donor's own figure lies, the donor pixels are replaced by the receiver's pixels, so no second
    figure is pasted in.
    """
    n = images.shape[0]
    perm = torch.randperm(n, generator=generator)
    for i in range(n):  # prefer a donor from another domain (n is a batch: cheap)
        if domains[perm[i]] == domains[i]:
            others = (domains != domains[i]).nonzero().flatten()
            if len(others):
                perm[i] = others[torch.randint(len(others), (1,), generator=generator)].item()
    fig = masks.to(images.dtype)
    donor = images[perm]
    donor_fig = fig[perm]
    background = donor * (1 - donor_fig) + images * donor_fig
    return images * fig + background * (1 - fig)


def with_swapped(batch: dict) -> dict:
    """The batch twice: originals first, then their background-swapped copies with the same targets."""
    n = batch["image"].shape[0]
    swapped = swap_background(batch["image"], keep_mask(batch), batch["domain"])
    doubled = {k: torch.cat([v, v]) if torch.is_tensor(v) and v.shape[:1] == (n,) else v for k, v in batch.items()}
    doubled["image"] = torch.cat([batch["image"], swapped])
    return doubled


def consistency(logits: torch.Tensor, swapped_logits: torch.Tensor) -> torch.Tensor:
    """Symmetric KL between the class predictions on a patch and on its background-swapped copy."""
    p, q = F.log_softmax(logits.float(), 1), F.log_softmax(swapped_logits.float(), 1)
    return 0.5 * (F.kl_div(q, p, log_target=True, reduction="batchmean")
                  + F.kl_div(p, q, log_target=True, reduction="batchmean"))
