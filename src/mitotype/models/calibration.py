"""Calibrated P(atypical) and class-conditional conformal prediction sets, stored in the model file.

Temperature scaling (Guo et al. 2017): one scalar T > 0 divides the logits, fitted by maximum likelihood
on held-out labelled figures (the model's validation part). It is baked into the last linear layer
(weights and bias / T), so every backend, ONNX export included, reports the calibrated value; the ranking
(AUROC) is unchanged and the stored threshold is mapped to the same decision boundary.

Mondrian (class-conditional) split conformal prediction (Vovk et al. 2005): per class y the calibration
figures of that class give nonconformity scores 1 - P(y). For an error level alpha, class y enters a
figure's prediction set when its score is at most the ceil((n_y + 1)(1 - alpha))-th smallest calibration
score of class y. Each class is then covered with probability >= 1 - alpha on exchangeable data — per class,
which matters because atypical figures are rare. Sets: "normal", "atypical", "both" (uncertain: flag for
review) or "none" (unlike either class's calibration figures).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from mitotype.errors import MitotypeError

CLASSES = ("normal", "atypical")
SETS = {(True, False): "normal", (False, True): "atypical", (True, True): "both", (False, False): "none"}


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(labels)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def fit_temperature(labels: Sequence[int], probs: Sequence[float]) -> float:
    """The T that minimises the log-loss of sigmoid(logit(p) / T) on these labelled figures."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(labels, dtype=np.float64)
    z = logit(probs)
    if len(np.unique(y)) < 2:
        raise MitotypeError("calibration needs labelled figures of both classes")

    def nll(log_t: float) -> float:
        return log_loss(y, sigmoid(z / math.exp(log_t)))

    best = minimize_scalar(nll, bounds=(math.log(0.05), math.log(20.0)), method="bounded")
    return float(math.exp(best.x))


def conformal_scores(labels: Sequence[int], probs: Sequence[float]) -> dict[str, list[float]]:
    """Sorted nonconformity scores 1 - P(true class) per class, the reference a model file stores."""
    y, p = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    scores = {"normal": np.sort(p[y == 0]), "atypical": np.sort(1 - p[y == 1])}
    return {k: [float(v) for v in s] for k, s in scores.items()}


def quantile(scores: Sequence[float], alpha: float) -> float:
    """The ceil((n + 1)(1 - alpha))-th smallest score (inf when that exceeds n: the class always enters)."""
    if not 0.0 < alpha < 1.0:
        raise MitotypeError(f"conformal error level must be in (0, 1), got {alpha}")
    n = len(scores)
    k = math.ceil((n + 1) * (1 - alpha))
    return math.inf if k > n else float(sorted(scores)[k - 1])


def prediction_sets(probs: Sequence[float], scores: Mapping[str, Sequence[float]], alpha: float) -> list[str]:
    """Each figure's set at error level ``alpha``: normal, atypical, both or none."""
    p = np.asarray(probs, dtype=np.float64)
    q_normal, q_atypical = quantile(scores["normal"], alpha), quantile(scores["atypical"], alpha)
    has_normal = p <= q_normal + 1e-12  # score of normal = P(atypical)
    has_atypical = (1 - p) <= q_atypical + 1e-12
    return [SETS[(bool(a), bool(b))] for a, b in zip(has_normal, has_atypical)]


def coverage(labels: Sequence[int], sets: Sequence[str]) -> dict[str, float | None]:
    """Share of each class's figures whose set holds their true class, and the share flagged ("both")."""
    y = np.asarray(labels)
    contains = np.array([CLASSES[int(t)] == s or s == "both" for t, s in zip(y, sets)])
    out: dict[str, float | None] = {}
    for i, name in enumerate(CLASSES):
        out[name] = float(contains[y == i].mean()) if (y == i).any() else None
    out["flagged"] = float(np.mean([s == "both" for s in sets])) if len(sets) else None
    out["empty"] = float(np.mean([s == "none" for s in sets])) if len(sets) else None
    return out
