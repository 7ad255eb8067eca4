"""Unsupervised adaptation to a target domain: batch-norm statistics (AdaBN), the class prior (EM) and,
optionally, test-time entropy minimisation of the normalisation parameters (TENT).

Only torch and numpy; the model file workflow around it is :mod:`mitotype.models.adapt`.

- AdaBN (Li et al. 2016): a batch-normalised network keeps the mean and variance of every channel as its
  training domains showed them; a new scanner or stain moves them. Re-estimating them on the target's
  crops (a cumulative average over batches, ``momentum=None``) changes nothing else in the network.
- Prior by EM (Saerens, Latinne & Decaestecker 2002): posteriors computed under the source prior are
  re-weighted by new/old prior and averaged until the prior stops moving; the maximum-likelihood estimate
  of the target prevalence when only the prior changed (label shift).
- TENT (Wang et al. 2021): a few steps of minimising the mean prediction entropy on the target, with only
  the batch-norm scale and shift trainable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

EPS = 1e-6  # posteriors and priors are clipped to [EPS, 1 - EPS]: logits stay finite


def logit(p: Any) -> Any:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(z: Any) -> Any:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


# --- the class prior --------------------------------------------------------------------------------------

def reweight(probs: Any, source_prior: float, target_prior: float) -> np.ndarray:
    """P(atypical) under ``target_prior`` from posteriors computed under ``source_prior`` (Bayes' rule with
    the class-conditional densities unchanged): a shift of the logit by the log-odds of new vs old prior."""
    return sigmoid(logit(probs) + logit(target_prior) - logit(source_prior))


def em_prior(probs: Any, source_prior: float, tol: float = 1e-6, max_iter: int = 1000) -> tuple[float, int]:
    """(the target prior of class 1, iterations) by Saerens et al.'s EM from the target's posteriors
    ``probs`` (computed under ``source_prior``): E-step = :func:`reweight`, M-step = their mean."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.size == 0:
        raise ValueError("em_prior: no posteriors")
    prior = float(np.clip(source_prior, EPS, 1 - EPS))
    for iteration in range(1, max_iter + 1):
        new = float(np.clip(reweight(probs, source_prior, prior).mean(), EPS, 1 - EPS))
        if abs(new - prior) < tol:
            return new, iteration
        prior = new
    return prior, max_iter


def shifted_threshold(threshold: float, source_prior: float, target_prior: float) -> float:
    """The threshold on the re-weighted P(atypical) that makes the same decisions as ``threshold`` on the
    original one. The stored threshold was tuned for balanced accuracy, which does not depend on the
    prior: its decision rule (a fixed likelihood ratio) stays right under a new prior, so it moves with
    the posteriors, by the same log-odds."""
    return float(sigmoid(logit(threshold) + logit(target_prior) - logit(source_prior)))


# --- batch-norm statistics --------------------------------------------------------------------------------

def batch_norms(model: Any) -> dict[str, Any]:
    """The model's batch-norm layers by module name (1d, 2d and 3d, and subclasses such as timm's)."""
    from torch import nn

    return {name: m for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.track_running_stats}


def adabn(model: Any, batches: Iterable[Any], forward: Callable[[Any, Any], Any]) -> list[str]:
    """Replace every batch-norm layer's running mean/var by the plain average over ``batches`` (float32
    NCHW tensors, already preprocessed) and return the names of the layers that saw them.

    Only the batch-norm layers are put in training mode (dropout stays off; nothing has a gradient).
    Layers the classification path does not reach (decoders that run in training only) keep their
    statistics: reset and never fed, they would hold mean 0 / variance 1."""
    import torch

    layers = batch_norms(model)
    saved = {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in layers.items()}
    momenta = {name: m.momentum for name, m in layers.items()}
    model.eval()
    for m in layers.values():
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every target batch counts the same
        m.train()
    try:
        with torch.no_grad():
            for x in batches:
                forward(model, x)
    finally:
        for name, m in layers.items():
            m.momentum = momenta[name]
            m.eval()
    updated = [name for name, m in layers.items() if int(m.num_batches_tracked) > 0]
    for name in set(layers) - set(updated):
        layers[name].load_state_dict(saved[name])
    model.eval()
    return updated


def tent(model: Any, batches: Callable[[], Iterable[Any]], forward: Callable[[Any, Any], Any],
         epochs: int = 1, lr: float = 1e-3) -> list[float]:
    """Minimise the mean entropy of the two-class prediction over ``batches()`` (called once per epoch),
    training only the batch-norm scale and shift, with batch statistics as in Wang et al.; returns the
    mean entropy per epoch. Call :func:`adabn` afterwards: the running statistics must match the new
    parameters the network will be used with."""
    import torch

    layers = batch_norms(model)
    params = [p for m in layers.values() for p in (m.weight, m.bias) if p is not None]
    trainable = {id(p) for p in params}
    was = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    optimiser = torch.optim.Adam(params, lr=lr)
    model.eval()
    for m in layers.values():
        m.train()
    history = []
    try:
        for _ in range(epochs):
            total, count = 0.0, 0
            for x in batches():
                logp = torch.log_softmax(forward(model, x).float(), dim=1)
                entropy = -(logp.exp() * logp).sum(dim=1).mean()
                optimiser.zero_grad()
                entropy.backward()
                optimiser.step()
                total, count = total + float(entropy.detach()) * len(x), count + len(x)
            history.append(total / max(count, 1))
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(was[n])
        model.eval()
    return history
