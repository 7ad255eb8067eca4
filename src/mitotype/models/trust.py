"""The per-figure trust outputs that predict and evaluate add: the conformal prediction set and the shift
score, from the references a calibrated model file carries (``mitotype calibrate``).

Prediction sets need one model: a conformal reference holds for the probabilities of the model it was
fitted on, not for the mean of several. Shift scores are each model's own (scaled to its own in-domain
95th percentile, so they are comparable) and averaged when every model carries a reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mitotype.errors import MitotypeError
from mitotype.models import calibration as C
from mitotype.models.shift import reference_of

DEFAULT_ALPHA = 0.1


def check_alpha(alpha: float | None) -> float:
    """``alpha`` (None: the default 0.1) when 0 < alpha < 1, else a MitotypeError naming the range."""
    value = DEFAULT_ALPHA if alpha is None else alpha
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise MitotypeError(f"--alpha {alpha!r}: the error level must be a number in (0, 1), e.g. 0.1") from None
    if not 0.0 < value < 1.0:
        raise MitotypeError(f"--alpha {alpha}: the error level must be in (0, 1), e.g. 0.1 for sets that hold "
                            "the true class of 90 % of figures")
    return value


def conformal_reference(models: Sequence[Any]) -> dict[str, Any] | None:
    """The conformal reference of a single calibrated model, else None."""
    if len(models) != 1:
        return None
    return (models[0].meta or {}).get("conformal") or None


def prediction_sets(models: Sequence[Any], probs: np.ndarray, alpha: float | None) -> list[str] | None:
    """Each figure's set (normal / atypical / both / none) at ``alpha``, or None when the model carries no
    conformal reference; an ``alpha`` asked for explicitly then is an error that says how to get one."""
    level = check_alpha(alpha)
    ref = conformal_reference(models)
    if ref is None:
        if alpha is not None:
            why = "several models were given (a conformal reference holds for one model's probabilities)" \
                if len(models) > 1 else f"{models[0].path or 'the model'} carries no conformal reference"
            raise MitotypeError(f"--alpha: no prediction sets: {why}; run `mitotype calibrate --model M --data "
                                "val --out M_cal.pt` and predict with the calibrated file")
        return None
    return C.prediction_sets(probs, ref["scores"], level)


def shift_scores(models: Sequence[Any], features: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """(N,) mean shift score over the models, or None unless every model has a reference and features."""
    refs = [reference_of(m) for m in models]
    if not refs or any(r is None for r in refs) or any(f is None for f in features):
        return None
    return np.mean([r.scores(f) for r, f in zip(refs, features)], axis=0)


def wants_features(models: Sequence[Any]) -> bool:
    """Whether predicting needs the pooled features (every model carries a shift reference)."""
    return bool(models) and all((m.meta or {}).get("shift") for m in models)
