"""How far a crop lies from the data the model was validated on: the shift score, stored in the model file.

The reference is a probabilistic PCA (Tipping & Bishop 1999) of the pooled encoder features (the vector
the classification head reads) of the validation figures: mean, the top ``rank`` principal directions with
their variances, and one residual variance for every other direction (the mean of the discarded
eigenvalues). A crop's distance is its Mahalanobis distance under that Gaussian,

    d^2 = sum_k (z_k^2 / var_k) + |residual|^2 / residual_variance,

which is low-rank (the reference is ``rank`` x C numbers, not a C x C precision matrix) and well-posed
when there are fewer validation figures than feature channels (437 figures, 1280 channels for the default).

Scale: ``shift_score = d / scale`` where ``scale`` is the 95th percentile of *out-of-sample* distances of
the validation figures (5-fold cross-fitting: each fold scored against a reference fitted on the other
folds, since in-sample distances are biased low). So in-domain, about 95 % of crops score <= 1.0 and the
median crop about 0.7; a score of 2 is twice as far as all but 5 % of in-domain crops.

Batch rule (``batch_warning``): a batch whose *median* score is above 1.0 is far out -- its typical crop is
farther than 95 % of in-domain validation crops, which an in-domain batch of more than a few crops
almost never is. Those cross-fitted validation scores are stored too, so that ``evaluate`` can report the
score's AUROC at telling the evaluated crops from in-domain ones.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mitotype.errors import MitotypeError

METHOD = "ppca-mahalanobis"
RANK = 64  # principal directions kept (capped at a quarter of the fitting figures)
LEVEL = 0.95  # score 1.0 = this quantile of out-of-sample in-domain distances
FOLDS = 5
WARN_MEDIAN = 1.0  # a batch whose median score exceeds this is reported as far out
ARRAYS = ("mean", "components", "variances", "validation_scores")


@dataclass(frozen=True)
class Reference:
    mean: np.ndarray  # (C,)
    components: np.ndarray  # (k, C), orthonormal rows
    variances: np.ndarray  # (k,)
    residual_variance: float
    scale: float = 1.0
    validation_scores: np.ndarray | None = None  # cross-fitted in-domain scores (already divided by scale)

    @classmethod
    def from_plain(cls, plain: Mapping[str, Any]) -> Reference:
        if plain.get("method") != METHOD:
            raise MitotypeError(f"shift reference of unknown method {plain.get('method')!r}; upgrade mitotype")
        val = plain.get("validation_scores")
        return cls(mean=np.asarray(plain["mean"], dtype=np.float64),
                   components=np.asarray(plain["components"], dtype=np.float64),
                   variances=np.asarray(plain["variances"], dtype=np.float64),
                   residual_variance=float(plain["residual_variance"]), scale=float(plain["scale"]),
                   validation_scores=None if val is None else np.asarray(val, dtype=np.float64))

    def distances(self, features: np.ndarray) -> np.ndarray:
        """(N,) Mahalanobis distances of (N, C) features under the reference Gaussian."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0]:
            raise MitotypeError(f"shift score: features of shape {x.shape}, the reference has "
                                f"{self.mean.shape[0]} channels")
        centred = x - self.mean
        z = centred @ self.components.T
        residual = np.maximum((centred * centred).sum(axis=1) - (z * z).sum(axis=1), 0.0)
        return np.sqrt((z * z / self.variances).sum(axis=1) + residual / self.residual_variance)

    def scores(self, features: np.ndarray) -> np.ndarray:
        """(N,) shift scores: distance / the in-domain 95th percentile (module docstring)."""
        return self.distances(features) / self.scale


def _fit(features: np.ndarray, rank: int) -> Reference:
    x = np.asarray(features, dtype=np.float64)
    n, c = x.shape
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    eig = s * s / max(n - 1, 1)  # eigenvalues of the sample covariance, descending (at most n of them)
    k = max(1, min(rank, n // 4, c - 1))
    rest = max(float(eig.sum() - eig[:k].sum()), 0.0)
    residual = max(rest / (c - k), 1e-12 * float(eig[0]) if eig[0] > 0 else 1e-12)
    variances = np.maximum(eig[:k], residual)
    return Reference(mean=mean, components=vt[:k], variances=variances, residual_variance=residual)


def fit_reference(features: np.ndarray, rank: int = RANK, folds: int = FOLDS, seed: int = 0,
                  fitted_on: str = "") -> dict[str, Any]:
    """The plain (model-file) reference of (n, C) in-domain features, with its cross-fitted scale."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2 * folds:
        raise MitotypeError(f"the shift reference needs at least {2 * folds} figures, got {len(x)}")
    order = np.random.default_rng(seed).permutation(len(x))
    out_of_sample = np.empty(len(x))
    for part in np.array_split(order, folds):
        rest = np.setdiff1d(order, part)
        out_of_sample[part] = _fit(x[rest], rank).distances(x[part])
    scale = float(np.quantile(out_of_sample, LEVEL))
    ref = _fit(x, rank)

    def f4(a: np.ndarray) -> list:  # float32 values: the ONNX metadata's copy (encode) is then exact
        return np.asarray(a, dtype=np.float32).tolist()

    return {"method": METHOD, "rank": int(len(ref.variances)), "level": LEVEL, "n": int(len(x)),
            "fitted_on": fitted_on, "mean": f4(ref.mean), "components": f4(ref.components),
            "variances": f4(ref.variances), "residual_variance": ref.residual_variance, "scale": scale,
            "validation_scores": f4(out_of_sample / scale)}


def reference_of(model: Any) -> Reference | None:
    """The shift reference a model (LoadedModel, or OnnxModel read from its graph) carries, else None."""
    plain = (getattr(model, "meta", None) or {}).get("shift")
    return Reference.from_plain(plain) if plain else None


def batch_warning(scores: Sequence[float], what: str = "this batch") -> str | None:
    """One line when the batch's median score is above WARN_MEDIAN (module docstring), else None."""
    s = np.asarray(scores, dtype=np.float64)
    if not len(s):
        return None
    median = float(np.median(s))
    if median <= WARN_MEDIAN:
        return None
    share = float(np.mean(s > 1.0))
    return (f"warning: {what} looks unlike the model's validation data (median shift score {median:.2f} > "
            f"{WARN_MEDIAN:g}; {share:.0%} of crops above 1.0, against 5 % in-domain): its probabilities, "
            "threshold and prediction sets may not hold; see docs/TRUST.md")


def detector_auroc(scores: Sequence[float], reference: Reference) -> float | None:
    """AUROC of the shift score at telling these crops from the in-domain validation crops (0.5: they look
    alike; 1.0: every one of these scores above every in-domain crop)."""
    if reference.validation_scores is None or not len(scores):
        return None
    from sklearn.metrics import roc_auc_score

    val = reference.validation_scores
    y = np.r_[np.zeros(len(val)), np.ones(len(scores))]
    return float(roc_auc_score(y, np.r_[val, np.asarray(scores, dtype=np.float64)]))


# --- ONNX metadata: the same reference as one compact string (float32 arrays in base64) ------------------

def encode(plain: Mapping[str, Any]) -> str:
    out = {}
    for key, value in plain.items():
        if key in ARRAYS and value is not None:
            arr = np.asarray(value, dtype="<f4")
            out[key] = {"shape": list(arr.shape), "f4": base64.b64encode(arr.tobytes()).decode("ascii")}
        else:
            out[key] = value
    return json.dumps(out)


def decode(text: str) -> dict[str, Any]:
    plain = json.loads(text)
    for key in ARRAYS:
        value = plain.get(key)
        if isinstance(value, dict) and "f4" in value:
            plain[key] = np.frombuffer(base64.b64decode(value["f4"]), dtype="<f4").reshape(value["shape"])
    return plain
