"""The trust section of an evaluation: calibration (ECE, Brier score), conformal coverage and the shift
score, overall and per domain, from the references a calibrated model file carries.

- ``calibration``: ECE (10 bins) and Brier score of the evaluated P(atypical) ("after"), and where the
  model file has the calibration record (``mitotype calibrate``) also of the uncalibrated P(atypical)
  ("before": the baked-in temperature T undone, ``sigmoid(logit(p) * T)``).
- ``conformal``: at error level ``alpha``, the share of each class's figures whose prediction set holds
  the true class (in-domain it is >= 1 - alpha by construction), the share flagged (set "both") and the
  set counts.
- ``shift``: the median shift score, the share of crops above 1.0 (5 % in-domain by construction), the
  batch warning, and the score's AUROC at telling these crops from the in-domain validation crops the
  reference stores (``models.shift.detector_auroc``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mitotype import metrics as M
from mitotype.models import calibration as C
from mitotype.models import shift as S


def _calibration_numbers(labels: np.ndarray, probs: np.ndarray, before: np.ndarray | None) -> dict[str, Any]:
    out = {"n": int(len(labels)), "ece": M.calibration(labels, probs)["ece"],
           "brier": float(np.mean((probs - labels) ** 2))}
    if before is not None:
        out["ece_before"] = M.calibration(labels, before)["ece"]
        out["brier_before"] = float(np.mean((before - labels) ** 2))
    return out


def _shift_numbers(scores: np.ndarray, reference: S.Reference | None) -> dict[str, Any]:
    return {"n": int(len(scores)), "median": float(np.median(scores)), "share_above_1": float(np.mean(scores > 1)),
            "detector_auroc": S.detector_auroc(scores, reference) if reference is not None else None}


def trust_section(labels: Sequence[int], probs: Sequence[float], domains: Sequence[str], models: Sequence[Any],
                  sets: Sequence[str] | None, shift: np.ndarray | None, alpha: float | None) -> dict[str, Any]:
    """The metrics.json ``trust`` section (module docstring); parts without a reference are absent."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    d = np.asarray([str(v) for v in domains])
    names = sorted(np.unique(d))
    record = (models[0].meta or {}).get("calibration") if len(models) == 1 else None
    before = C.sigmoid(C.logit(p) * record["temperature"]) if record else None

    def per(fn):  # fn(mask) for all figures and for each domain
        return {"all": fn(np.ones(len(y), dtype=bool)), "domains": {n: fn(d == n) for n in names}}

    out: dict[str, Any] = {"calibration": {
        "temperature": record["temperature"] if record else None,
        **per(lambda m: _calibration_numbers(y[m], p[m], None if before is None else before[m]))}}
    if sets is not None:
        s = np.asarray(sets)

        def cov(m: np.ndarray) -> dict[str, Any]:
            counts = {k: int(np.sum(s[m] == k)) for k in ("normal", "atypical", "both", "none")}
            return {**C.coverage(y[m], list(s[m])), "n": int(m.sum()), "sets": counts}

        out["conformal"] = {"alpha": alpha, "level": 1 - alpha, **per(cov)}
    if shift is not None:
        refs = [S.reference_of(m) for m in models]
        ref = refs[0] if len(refs) == 1 else None  # the AUROC needs one model's in-domain scores
        out["shift"] = {"rule": f"warn when the median shift score exceeds {S.WARN_MEDIAN:g}",
                        "warning": S.batch_warning(shift, "the evaluated data"),
                        **per(lambda m: _shift_numbers(shift[m], ref))}
    return out


def _f(v: float | None, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def trust_report(section: Mapping[str, Any]) -> str:
    """The report.md section: the tables of :func:`trust_section` and what they mean."""
    cal = section["calibration"]
    rows = [("all", cal["all"])] + sorted(cal["domains"].items())
    before = "ece_before" in cal["all"]
    out = ["## Trust (docs/TRUST.md)", "", "### Calibration", ""]
    if before:
        out += [f"Temperature T = {cal['temperature']:.3f} fitted by `mitotype calibrate`; \"before\" undoes it.",
                "", "| | n | ECE before | ECE after | Brier before | Brier after |", "|---|---|---|---|---|---|"]
        out += [f"| {k} | {v['n']} | {_f(v['ece_before'])} | {_f(v['ece'])} | {_f(v['brier_before'])} | "
                f"{_f(v['brier'])} |" for k, v in rows]
    else:
        out += ["The model file has no calibration record (`mitotype calibrate`).", "",
                "| | n | ECE | Brier |", "|---|---|---|---|"]
        out += [f"| {k} | {v['n']} | {_f(v['ece'])} | {_f(v['brier'])} |" for k, v in rows]
    if "conformal" in section:
        conf = section["conformal"]
        out += ["", f"### Prediction sets (alpha = {conf['alpha']:g}: each class covered >= {conf['level']:.0%} "
                "in-domain)", "", "| | n | coverage normal | coverage atypical | flagged (both) | empty (none) |",
                "|---|---|---|---|---|---|"]
        out += [f"| {k} | {v['n']} | {_f(v['normal'])} | {_f(v['atypical'])} | {_f(v['flagged'])} | "
                f"{_f(v['empty'])} |" for k, v in [("all", conf["all"])] + sorted(conf["domains"].items())]
    if "shift" in section:
        sh = section["shift"]
        out += ["", "### Shift score (1.0 = the in-domain 95th percentile)", "",
                "| | n | median | share > 1.0 | AUROC vs in-domain validation |", "|---|---|---|---|---|"]
        out += [f"| {k} | {v['n']} | {_f(v['median'], 2)} | {_f(v['share_above_1'])} | {_f(v['detector_auroc'])} |"
                for k, v in [("all", sh["all"])] + sorted(sh["domains"].items())]
        out += ["", f"Rule: {sh['rule']}. " + (sh["warning"] or "No warning: the data look in-domain.")]
    return "\n".join(out) + "\n"
