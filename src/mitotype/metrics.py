"""MIDOG 2025 track-2 metrics with cluster-bootstrap 95% intervals.

Definitions follow the official track-2 evaluator (DeepMicroscopy/MIDOG25_T2_evaluation_docker): atypical is
the positive class, all figures are pooled, a figure is called atypical when ``P(atypical) >= threshold``.

- sensitivity = TP / (TP + FN)   (recall of atypical figures)
- specificity = TN / (TN + FP)   (recall of normal figures)
- balanced_accuracy = (sensitivity + specificity) / 2   (the ranking metric)
- accuracy = (TP + TN) / n
- auroc = area under the ROC curve of P(atypical) (ties count one half, as in scikit-learn)

A metric that is undefined on the figures at hand (e.g. sensitivity without atypical figures, AUROC with one
class) is ``None`` (JSON null), never a number: the official evaluator would report a 0 from scikit-learn's
``zero_division`` default there, which reads as a real failure.

Intervals are percentile bootstrap intervals. The resampled unit is the group (slide) where groups are
given, because figures of one slide are not independent; else the figure. All metrics, the point estimate
included, come from one weighted implementation (a bootstrap replicate is a vector of integer weights),
which the tests check against scikit-learn. ``paired_bootstrap`` compares two models tested on the same
figures with several seeds each (the experiment table's differences).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mitotype.errors import MitotypeError

METRICS = ("balanced_accuracy", "sensitivity", "specificity", "accuracy", "auroc")
_CHUNK = 256  # bootstrap replicates per vectorised block (bounds memory on large test sets)


def predict_class(probs: np.ndarray, threshold: float) -> np.ndarray:
    """1 (atypical) where ``P(atypical) >= threshold``, else 0."""
    return (np.asarray(probs, dtype=float) >= threshold).astype(np.int64)


def check_inputs(labels: Sequence[int], probs: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Labels as int 0/1 and probabilities as float in [0, 1], same length; MitotypeError otherwise."""
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=float)
    if labels.ndim != 1 or probs.shape != labels.shape:
        raise MitotypeError(f"metrics: labels {labels.shape} and probabilities {probs.shape} differ in shape")
    if labels.size == 0:
        raise MitotypeError("metrics: no labelled figures to evaluate")
    if not np.isin(labels, (0, 1)).all():
        raise MitotypeError(f"metrics: labels must be 0 (normal) or 1 (atypical), got {np.unique(labels)}")
    if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        raise MitotypeError("metrics: probabilities must be finite and in [0, 1]")
    return labels.astype(np.int64), probs


def weighted_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float,
                     weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric for each row of ``weights`` (B, n): arrays (B,), NaN where undefined."""
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    pos = labels == 1
    pred = predict_class(probs, threshold) == 1
    tp = weights @ (pos & pred)
    fn = weights @ (pos & ~pred)
    tn = weights @ (~pos & ~pred)
    fp = weights @ (~pos & pred)
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = tp / (tp + fn)
        spec = tn / (tn + fp)
        acc = (tp + tn) / (tp + fn + tn + fp)
    return {"balanced_accuracy": (sens + spec) / 2, "sensitivity": sens, "specificity": spec,
            "accuracy": acc, "auroc": _weighted_auroc(pos, probs, weights)}


def _weighted_auroc(pos: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUROC with ties counted one half, for every row of weights at once."""
    order = np.argsort(probs, kind="mergesort")
    scores = probs[order]
    starts = np.r_[0, np.flatnonzero(np.diff(scores)) + 1]  # first index of each distinct score
    w = weights[:, order]
    p = np.add.reduceat(w * pos[order], starts, axis=1)  # positive weight per distinct score
    n = np.add.reduceat(w * ~pos[order], starts, axis=1)
    below = np.cumsum(n, axis=1) - n  # negative weight strictly below each score
    with np.errstate(invalid="ignore", divide="ignore"):
        return (p * (below + 0.5 * n)).sum(axis=1) / (p.sum(axis=1) * n.sum(axis=1))


def bootstrap_weights(units: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) integer weights: resample the distinct ``units`` with replacement, keep their figures."""
    _, inverse = np.unique(units, return_inverse=True)
    n_units = inverse.max() + 1
    counts = rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=n_boot)
    return counts[:, inverse]


def bootstrap_units(labels: np.ndarray, groups: Sequence[Any] | None) -> tuple[np.ndarray, str]:
    """The resampling unit per figure: its group where every figure has one, else the figure itself."""
    if groups is not None:
        groups = np.asarray([("" if g is None else str(g)) for g in groups])
        if len(groups) != len(labels):
            raise MitotypeError(f"metrics: {len(groups)} groups for {len(labels)} figures")
        # every figure in a group of its own (e.g. ``folder:`` specs) is figure-level resampling: say so
        if (groups != "").all() and len(np.unique(groups)) < len(groups):
            return groups, "group"
    return np.arange(len(labels)).astype(str), "figure"


def point_metrics(labels: Sequence[int], probs: Sequence[float], threshold: float) -> dict[str, float]:
    """Every metric once, without intervals (NaN where undefined): what training logs per epoch."""
    labels, probs = np.asarray(labels).astype(int), np.asarray(probs, dtype=float)
    point = weighted_metrics(labels, probs, threshold, np.ones((1, len(labels))))
    return {name: float(point[name][0]) for name in METRICS}


def _value(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def summarise(labels: np.ndarray, probs: np.ndarray, threshold: float, groups: Sequence[Any] | None,
              n_boot: int, seed: int, level: float = 0.95) -> dict[str, Any]:
    """Point estimates, counts and bootstrap intervals for one set of figures."""
    point = weighted_metrics(labels, probs, threshold, np.ones((1, len(labels))))
    out: dict[str, Any] = {name: _value(point[name][0]) for name in METRICS}
    pred = predict_class(probs, threshold)
    out.update(n=len(labels), n_atypical=int(labels.sum()), n_predicted_atypical=int(pred.sum()),
               confusion={"tp": int(((labels == 1) & (pred == 1)).sum()),
                          "fn": int(((labels == 1) & (pred == 0)).sum()),
                          "tn": int(((labels == 0) & (pred == 0)).sum()),
                          "fp": int(((labels == 0) & (pred == 1)).sum())})
    units, unit = bootstrap_units(labels, groups)
    out["ci95" if level == 0.95 else f"ci{round(level * 100):d}"] = (
        _intervals(labels, probs, threshold, units, n_boot, seed, level) if n_boot > 0
        else {name: None for name in METRICS})
    out["bootstrap"] = {"n_boot": int(n_boot), "unit": unit, "n_units": len(np.unique(units)),
                        "seed": int(seed), "method": "percentile"}
    return out


def _intervals(labels, probs, threshold, units, n_boot, seed, level) -> dict[str, list[float] | None]:
    rng = np.random.default_rng(seed)
    reps: dict[str, list[np.ndarray]] = {name: [] for name in METRICS}
    for start in range(0, n_boot, _CHUNK):
        w = bootstrap_weights(units, min(_CHUNK, n_boot - start), rng)
        for name, values in weighted_metrics(labels, probs, threshold, w).items():
            reps[name].append(values)
    return {name: percentile_interval(np.concatenate(v), level) for name, v in reps.items()}


def percentile_interval(values: np.ndarray, level: float = 0.95) -> list[float] | None:
    """[low, high] percentiles of the defined (finite) replicates; None when none is defined."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    alpha = (1 - level) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return [float(low), float(high)]


def paired_bootstrap(labels: Sequence[int], probs_a: np.ndarray, probs_b: np.ndarray,
                     threshold_a: float | np.ndarray, threshold_b: float | np.ndarray,
                     groups: Sequence[Any] | None = None, metric: str = "balanced_accuracy",
                     n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """The paired difference metric(a) - metric(b) of two models tested on the same figures with the same
    seeds, and its two-stage bootstrap interval.

    ``probs_a`` and ``probs_b`` are (S, n): P(atypical) of seed s of each model on the n figures (same order,
    same ``labels``). Thresholds broadcast against them: a float, one per figure (n,), or (S, n) (k folds
    pooled into one test set keep each fold's own threshold). Each replicate resamples the groups (slides,
    see ``bootstrap_units``) and, independently for each of the S slots, a seed with replacement, and
    averages the S differences: the interval covers slide-to-slide and seed-to-seed variation (with one
    seed it is the slide interval alone).

    Returns ``{"delta": mean over seeds of the difference, "per_seed": [difference of seed s], "ci": [low,
    high]}``; undefined values (e.g. AUROC on one class) are None.
    """
    if metric not in METRICS:
        raise MitotypeError(f"metrics: unknown metric {metric!r}; valid: {METRICS}")
    labels = np.asarray(labels).astype(np.int64)
    probs_a, probs_b = np.atleast_2d(np.asarray(probs_a, float)), np.atleast_2d(np.asarray(probs_b, float))
    if probs_a.shape != probs_b.shape or probs_a.shape[1:] != labels.shape or len(probs_a) == 0:
        raise MitotypeError(f"metrics: paired probabilities {probs_a.shape} and {probs_b.shape} must both be "
                            f"(seeds, {len(labels)} figures)")
    thr_a = np.broadcast_to(np.asarray(threshold_a, float), probs_a.shape)
    thr_b = np.broadcast_to(np.asarray(threshold_b, float), probs_b.shape)

    def value(s: int, weights: np.ndarray) -> np.ndarray:  # (B,) differences of seed s
        return (weighted_metrics(labels, probs_a[s], thr_a[s], weights)[metric]
                - weighted_metrics(labels, probs_b[s], thr_b[s], weights)[metric])

    n_seeds = len(probs_a)
    per_seed = [float(value(s, np.ones((1, len(labels))))[0]) for s in range(n_seeds)]
    delta = float(np.mean(per_seed))
    rng = np.random.default_rng(seed)
    units, _ = bootstrap_units(labels, groups)
    reps = []
    for start in range(0, n_boot, _CHUNK):
        w = bootstrap_weights(units, min(_CHUNK, n_boot - start), rng)
        d = np.stack([value(s, w) for s in range(n_seeds)])  # seeds x B
        picks = rng.integers(0, n_seeds, size=d.shape)  # a seed drawn with replacement per slot
        reps.append(np.take_along_axis(d, picks, axis=0).mean(axis=0))
    return {"delta": _value(delta), "per_seed": [_value(v) for v in per_seed],
            "ci": percentile_interval(np.concatenate(reps), level) if reps else None}


def compute_metrics(labels: Sequence[int], probs: Sequence[float], threshold: float,
                    domains: Sequence[Any] | None = None, groups: Sequence[Any] | None = None,
                    n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """MIDOG 2025 track-2 metrics, pooled and per domain, with bootstrap 95% intervals.

    Returns ``{balanced_accuracy, sensitivity, specificity, accuracy, auroc, n, n_atypical,
    n_predicted_atypical, confusion, ci95: {metric: [low, high] | None}, bootstrap, threshold,
    per_domain: {domain: {same without per_domain}}}``.
    """
    labels, probs = check_inputs(labels, probs)
    if not 0.0 <= float(threshold) <= 1.0:
        raise MitotypeError(f"metrics: threshold must be in [0, 1], got {threshold}")
    out = summarise(labels, probs, float(threshold), groups, n_boot, seed)
    out["threshold"] = float(threshold)
    out["per_domain"] = {}
    if domains is not None:
        domains = np.asarray([str(d) for d in domains])
        if len(domains) != len(labels):
            raise MitotypeError(f"metrics: {len(domains)} domains for {len(labels)} figures")
        group_arr = None if groups is None else np.asarray(list(groups), dtype=object)
        for domain in sorted(np.unique(domains)):
            m = domains == domain
            out["per_domain"][str(domain)] = summarise(
                labels[m], probs[m], float(threshold), None if group_arr is None else group_arr[m],
                n_boot, seed)
    return out


def calibration(labels: Sequence[int], probs: Sequence[float], n_bins: int = 10) -> dict[str, Any]:
    """Equal-width reliability bins and the expected calibration error (weighted |observed - predicted|)."""
    labels, probs = check_inputs(labels, probs)
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.digitize(probs, edges[1:-1]), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(idx, probs, minlength=n_bins) / count
        observed = np.bincount(idx, labels.astype(float), minlength=n_bins) / count
    filled = count > 0
    ece = float(np.sum(count[filled] * np.abs(observed[filled] - mean_p[filled])) / len(labels))
    return {"edges": edges.tolist(), "count": count.tolist(),
            "mean_predicted": [_value(v) for v in mean_p], "observed": [_value(v) for v in observed],
            "ece": ece}
