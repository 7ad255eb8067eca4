"""Decision threshold tuned on validation predictions to maximise balanced accuracy.

A figure is called atypical when ``P(atypical) >= threshold``. Balanced accuracy only changes where the
threshold crosses a predicted probability, so it is a step function: every threshold in the gap between two
neighbouring distinct probabilities gives the same calls. Rule for ties: the optimal thresholds form one or
more intervals; we take the widest (the most margin for a shifted test domain; if equally wide, the one
nearest 0.5) and return its middle. Thresholds are kept inside [0, 1].
"""

from __future__ import annotations

import numpy as np

from mitotype.errors import MitotypeError


def balanced_accuracy_curve(labels, probs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Balanced accuracy for every distinct way of thresholding ``probs``.

    Returns ``(lower, upper, bacc)``: every threshold ``t`` with ``lower[i] < t <= upper[i]`` gives balanced
    accuracy ``bacc[i]``. Row 0 calls nothing atypical (t above every probability), the last row calls
    everything atypical.
    """
    labels = np.asarray(labels).astype(int).ravel()
    probs = np.asarray(probs, dtype=np.float64).ravel()
    if labels.shape != probs.shape:
        raise MitotypeError(f"threshold tuning: {labels.size} labels but {probs.size} probabilities")
    if not np.all(np.isfinite(probs)):
        raise MitotypeError("threshold tuning: probabilities contain NaN or infinity (training diverged?)")
    n_pos, n_neg = int((labels == 1).sum()), int((labels == 0).sum())
    if n_pos == 0 or n_neg == 0 or n_pos + n_neg != labels.size:
        raise MitotypeError(
            f"threshold tuning needs labels 0/1 with both classes present (got {n_pos} atypical, {n_neg} normal)"
        )
    values = np.unique(probs)[::-1]  # distinct probabilities, high to low
    # Positives/negatives at each distinct value; cumulative sums = calls with p >= value.
    idx = np.searchsorted(-values, -probs)
    tp = np.concatenate([[0], np.cumsum(np.bincount(idx, weights=labels == 1, minlength=values.size))])
    fp = np.concatenate([[0], np.cumsum(np.bincount(idx, weights=labels == 0, minlength=values.size))])
    bacc = 0.5 * (tp / n_pos + 1.0 - fp / n_neg)
    upper = np.concatenate([[max(1.0, values[0])], values])
    lower = np.concatenate([values, [min(0.0, values[-1])]])
    return lower, upper, bacc


def tune_threshold(labels, probs) -> float:
    """The threshold maximising balanced accuracy (see the module docstring for the tie rule)."""
    lower, upper, bacc = balanced_accuracy_curve(labels, probs)
    best = np.isclose(bacc, bacc.max(), rtol=0.0, atol=1e-12)
    # Runs of consecutive optimal rows join into one interval (lower of the run's last row, upper of its first).
    runs: list[tuple[float, float]] = []
    start = None
    for i, flag in enumerate(np.append(best, False)):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            runs.append((float(np.clip(lower[i - 1], 0.0, 1.0)), float(np.clip(upper[start], 0.0, 1.0))))
            start = None
    # Widths compared to 1e-9 so that float noise does not break a tie.
    lo, hi = max(runs, key=lambda r: (round(r[1] - r[0], 9), -abs(0.5 * (r[0] + r[1]) - 0.5)))
    return 0.5 * (lo + hi)
