"""How far a crop lies from the data the model was validated on: the shift score, stored in the model file.

Features: the global average of every encoder stage (``MitoNet.classify``; for the default MobileNetV2
16 + 24 + 32 + 96 + 1280 channels). Per stage the reference is a probabilistic PCA (Tipping & Bishop 1999)
of the validation figures' features: mean, the top ``rank`` principal directions with their variances,
and one residual variance for every other direction (the mean of the discarded eigenvalues). A crop's
distance at a stage is its Mahalanobis distance under that Gaussian,

    d^2 = sum_k (z_k^2 / var_k) + |residual|^2 / residual_variance,

which is low-rank (``rank`` x C numbers, not a C x C precision matrix) and well-posed with fewer
validation figures than channels. The score combines the stages as Lee et al. (2018) do for their
multi-layer Mahalanobis detector: each stage's distance divided by its own in-domain 95th percentile,
averaged over the stages. Every stage matters: under leave-one-source-out the last stage (the classifier's
input, trained to ignore stain) told the held-out source from in-domain crops barely better than chance,
the early stages (colour, texture) well (docs/TRUST.md).

Scale: ``shift_score = combined / scale`` where ``scale`` is the 95th percentile of the *out-of-sample*
combined distances of the validation figures (5-fold cross-fitting: each fold scored against references
fitted on the other folds, since in-sample distances are biased low). So in-domain about 95 % of crops
score <= 1.0 and the median crop about 0.7.

Batch rule (``batch_warning``): a batch whose *median* score is above 1.0 is far out -- its typical crop is
farther than 95 % of in-domain validation crops, which an in-domain batch of more than a few crops almost
never is. The cross-fitted validation scores are stored too, so that ``evaluate`` can report the score's
AUROC at telling the evaluated crops from in-domain ones.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mitotype.errors import MitotypeError

METHOD = "ppca-mahalanobis-stages"
RANK = 64  # principal directions kept per stage (capped at a quarter of the fitting figures)
LEVEL = 0.95  # score 1.0 = this quantile of out-of-sample in-domain scores
FOLDS = 5
WARN_MEDIAN = 1.0  # a batch whose median score exceeds this is reported as far out
ARRAYS = ("mean", "components", "variances", "validation_scores")  # stored as float32


@dataclass(frozen=True)
class Gaussian:
    """One stage's PPCA Gaussian."""

    mean: np.ndarray  # (C,)
    components: np.ndarray  # (k, C), orthonormal rows
    variances: np.ndarray  # (k,)
    residual_variance: float
    scale: float = 1.0  # this stage's in-domain 95th percentile distance

    def distances(self, x: np.ndarray) -> np.ndarray:
        centred = np.asarray(x, dtype=np.float64) - self.mean
        z = centred @ self.components.T
        residual = np.maximum((centred * centred).sum(axis=1) - (z * z).sum(axis=1), 0.0)
        return np.sqrt((z * z / self.variances).sum(axis=1) + residual / self.residual_variance)


@dataclass(frozen=True)
class Reference:
    stages: list[Gaussian]
    scale: float
    validation_scores: np.ndarray | None = None  # cross-fitted in-domain scores (already divided by scale)

    @property
    def channels(self) -> list[int]:
        return [len(g.mean) for g in self.stages]

    @classmethod
    def from_plain(cls, plain: Mapping[str, Any]) -> Reference:
        if plain.get("method") != METHOD:
            raise MitotypeError(f"shift reference of unknown method {plain.get('method')!r}; upgrade mitotype "
                                "or calibrate the model again")
        stages = [Gaussian(mean=np.asarray(g["mean"], dtype=np.float64),
                           components=np.asarray(g["components"], dtype=np.float64),
                           variances=np.asarray(g["variances"], dtype=np.float64),
                           residual_variance=float(g["residual_variance"]), scale=float(g["scale"]))
                  for g in plain["stages"]]
        val = plain.get("validation_scores")
        return cls(stages, float(plain["scale"]), None if val is None else np.asarray(val, dtype=np.float64))

    def scores(self, features: np.ndarray) -> np.ndarray:
        """(N,) shift scores of (N, sum C) features (module docstring)."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != sum(self.channels):
            raise MitotypeError(f"shift score: features of shape {x.shape}, the reference has "
                                f"{sum(self.channels)} channels ({'+'.join(map(str, self.channels))})")
        return _combined(self.stages, _split(x, self.channels)) / self.scale


def _split(x: np.ndarray, channels: Sequence[int]) -> list[np.ndarray]:
    return np.split(x, np.cumsum(channels)[:-1], axis=1)


def _combined(stages: Sequence[Gaussian], parts: Sequence[np.ndarray]) -> np.ndarray:
    return np.mean([g.distances(p) / g.scale for g, p in zip(stages, parts)], axis=0)


def _fit(x: np.ndarray, rank: int) -> Gaussian:
    n, c = x.shape
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    eig = s * s / max(n - 1, 1)  # eigenvalues of the sample covariance, descending (at most n of them)
    k = max(1, min(rank, n // 4, c - 1))
    rest = max(float(eig.sum() - eig[:k].sum()), 0.0)
    floor = 1e-12 * max(float(eig[0]), 1.0)
    residual = max(rest / (c - k), floor)
    return Gaussian(mean=mean, components=vt[:k], variances=np.maximum(eig[:k], residual),
                    residual_variance=residual)


def _fit_stages(parts: Sequence[np.ndarray], rank: int, scales: Sequence[float] | None = None) -> list[Gaussian]:
    fitted = [_fit(p, rank) for p in parts]
    if scales is None:
        return fitted
    return [Gaussian(g.mean, g.components, g.variances, g.residual_variance, s) for g, s in zip(fitted, scales)]


def fit_reference(features: np.ndarray, channels: Sequence[int] | None = None, rank: int = RANK,
                  folds: int = FOLDS, seed: int = 0, fitted_on: str = "") -> dict[str, Any]:
    """The plain (model-file) reference of (n, sum C) in-domain features, ``channels`` per stage (None: one
    stage), with the cross-fitted scales."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2 * folds:
        raise MitotypeError(f"the shift reference needs at least {2 * folds} figures, got {len(x)}")
    channels = [x.shape[1]] if channels is None else [int(c) for c in channels]
    if sum(channels) != x.shape[1]:
        raise MitotypeError(f"shift reference: {x.shape[1]} features, stages of {channels} channels")
    parts = _split(x, channels)
    order = np.random.default_rng(seed).permutation(len(x))
    out = np.empty((len(channels), len(x)))  # out-of-sample distance per stage and figure
    for held in np.array_split(order, folds):
        rest = np.setdiff1d(order, held)
        for k, g in enumerate(_fit_stages([p[rest] for p in parts], rank)):
            out[k, held] = g.distances(parts[k][held])
    stage_scales = np.quantile(out, LEVEL, axis=1)
    combined = (out / stage_scales[:, None]).mean(axis=0)
    scale = float(np.quantile(combined, LEVEL))

    def f4(a: np.ndarray) -> list:  # float32 values: the ONNX metadata's copy (encode) is then exact
        return np.asarray(a, dtype=np.float32).tolist()

    stages = [{"mean": f4(g.mean), "components": f4(g.components), "variances": f4(g.variances),
               "residual_variance": g.residual_variance, "scale": g.scale}
              for g in _fit_stages(parts, rank, [float(s) for s in stage_scales])]
    return {"method": METHOD, "level": LEVEL, "n": int(len(x)), "fitted_on": fitted_on, "channels": channels,
            "ranks": [len(s["variances"]) for s in stages], "stages": stages, "scale": scale,
            "validation_scores": f4(combined / scale)}


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

def _pack(value: Any) -> dict[str, Any]:
    arr = np.asarray(value, dtype="<f4")
    return {"shape": list(arr.shape), "f4": base64.b64encode(arr.tobytes()).decode("ascii")}


def _unpack(value: Any) -> Any:
    if isinstance(value, dict) and "f4" in value:
        return np.frombuffer(base64.b64decode(value["f4"]), dtype="<f4").reshape(value["shape"])
    return value


def encode(plain: Mapping[str, Any]) -> str:
    def pack(d: Mapping[str, Any]) -> dict[str, Any]:
        return {k: _pack(v) if k in ARRAYS and v is not None else v for k, v in d.items()}

    return json.dumps({**pack(plain), "stages": [pack(s) for s in plain["stages"]]})


def decode(text: str) -> dict[str, Any]:
    plain = json.loads(text)

    def unpack(d: dict[str, Any]) -> dict[str, Any]:
        return {k: _unpack(v) if k in ARRAYS else v for k, v in d.items()}

    return {**unpack(plain), "stages": [unpack(s) for s in plain["stages"]]}
