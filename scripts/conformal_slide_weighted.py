"""Slide-level split conformal on the shipped default: does weighting each validation slide equally (slides,
not figures, as the exchangeable units) bring its AMi-Br test-split coverage to 1 - alpha? (docs/TRUST.md)

    python scripts/conformal_slide_weighted.py
"""
from collections import Counter

import numpy as np

from mitotype.data.images import load_images
from mitotype.data.spec import load_figures
from mitotype.models import calibration as C
from mitotype.models.calibrate import validation_figures
from mitotype.models.inference import predict_proba
from mitotype.models.modelfile import load_model

m = load_model("default")
size = m.config.model.crop_size
val, _ = validation_figures(m)
test = load_figures("amibr:../shared/data/amibr:split=test")
pv = predict_proba([m], load_images(val, size=size), threads=1)
pt = predict_proba([m], load_images(test, size=size), threads=1)
yv, yt = np.array([f.label for f in val]), np.array([f.label for f in test])
gv = np.array([f.group for f in val])
for cls, name in ((0, "normal"), (1, "atypical")):
    sel = yv == cls
    print(name, "val figures", sel.sum(), "slides", len(set(gv[sel])),
          "largest slides", Counter(gv[sel]).most_common(3))


def weighted_q(scores, groups, alpha):
    """Slide-level split conformal: each calibration slide carries weight 1, spread over its figures; the
    test figure's own slide adds weight 1 at +inf (quantile over S + 1 slides)."""
    per = Counter(groups)
    w = np.array([1.0 / per[g] for g in groups])
    order = np.argsort(scores)
    s, w = np.asarray(scores)[order], w[order]
    cum = np.cumsum(w) / (len(per) + 1)
    k = np.searchsorted(cum, 1 - alpha - 1e-12)
    return np.inf if k >= len(s) else float(s[k])


for alpha in (0.1, 0.2):
    ref = C.conformal_scores(yv, pv)
    sets = C.prediction_sets(pt, ref, alpha)
    cov = C.coverage(yt, sets)
    print(alpha, "figure-level (shipped rule)", {k: round(v, 3) for k, v in cov.items() if v is not None})
    qn = weighted_q(pv[yv == 0], gv[yv == 0], alpha)
    qa = weighted_q(1 - pv[yv == 1], gv[yv == 1], alpha)
    has_n, has_a = pt <= qn, (1 - pt) <= qa
    sets = [C.SETS[(bool(a), bool(b))] for a, b in zip(has_n, has_a)]
    print(alpha, "slide-weighted", {k: round(v, 3) for k, v in C.coverage(yt, sets).items() if v is not None})
