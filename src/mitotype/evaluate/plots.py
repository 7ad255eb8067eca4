"""Evaluation plots (matplotlib, Agg backend), each from plain arrays or a metrics dict, saved atomically.

Each function returns nothing and writes one PNG; the report links them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mitotype.io import save_figure

_DPI = 120


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display needed; a no-op if Agg is already in use
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> None:
    plt = _pyplot()
    fig.tight_layout()
    save_figure(fig, path, dpi=_DPI)
    plt.close(fig)


def roc_plot(labels: np.ndarray, probs: np.ndarray, threshold: float, path: str | Path,
             auroc: float | None = None, title: str = "ROC (atypical = positive)") -> None:
    """ROC curve of P(atypical), with the operating point at ``threshold`` marked."""
    from sklearn.metrics import roc_curve

    plt = _pyplot()
    labels, probs = np.asarray(labels), np.asarray(probs)
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--", label="chance")
    if len(np.unique(labels)) == 2:
        fpr, tpr, _ = roc_curve(labels, probs)
        ax.plot(fpr, tpr, lw=2, label="ROC" + (f" (AUROC {auroc:.3f})" if auroc is not None else ""))
        pred = probs >= threshold
        sens = pred[labels == 1].mean()
        spec = 1 - pred[labels == 0].mean()
        ax.plot([1 - spec], [sens], "o", color="C3",
                label=f"threshold {threshold:.3f}: sens {sens:.3f}, spec {spec:.3f}")
    else:
        ax.text(0.5, 0.5, "one class only: no ROC curve", ha="center", va="center")
    ax.set(xlabel="1 - specificity (false positive rate)", ylabel="sensitivity (true positive rate)",
           xlim=(0, 1), ylim=(0, 1.01), title=title, aspect="equal")
    ax.legend(loc="lower right", fontsize=7)
    _save(fig, path)


def confusion_plot(confusion: Mapping[str, int], path: str | Path, title: str = "Confusion matrix") -> None:
    """2x2 counts (rows: truth, columns: prediction) with row percentages."""
    plt = _pyplot()
    m = np.array([[confusion["tn"], confusion["fp"]], [confusion["fn"], confusion["tp"]]])
    rows = m.sum(axis=1, keepdims=True)
    frac = np.divide(m, rows, out=np.zeros(m.shape), where=rows > 0)
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(2):
        for j in range(2):
            ax.text(j, i, f"{m[i, j]}\n{frac[i, j]:.1%}", ha="center", va="center",
                    color="white" if frac[i, j] > 0.6 else "black")
    ax.set_xticks([0, 1], ["normal", "atypical"])
    ax.set_yticks([0, 1], ["normal", "atypical"])
    ax.set(xlabel="predicted", ylabel="truth", title=title)
    _save(fig, path)


def domain_plot(metrics: Mapping[str, Any], path: str | Path, metric: str = "balanced_accuracy") -> None:
    """``metric`` per domain with its bootstrap 95% interval, pooled value as a reference line."""
    plt = _pyplot()
    domains = list(metrics.get("per_domain", {}))
    rows = [(d, metrics["per_domain"][d]) for d in domains] + [("all (pooled)", metrics)]
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(rows) + 1.2))
    for y, (name, m) in enumerate(rows):
        value, ci = m.get(metric), (m.get("ci95") or {}).get(metric)
        color = "C3" if name == "all (pooled)" else "C0"
        if value is None:
            ax.text(0.5, y, "undefined (one class)", va="center", fontsize=8, color="0.4")
            continue
        err = None if ci is None else [[value - ci[0]], [ci[1] - value]]
        ax.errorbar(value, y, xerr=err, fmt="o", color=color, capsize=3)
        ax.text(1.01, y, f"{value:.3f} (n={m['n']}, {m['n_atypical']} atyp.)", va="center", fontsize=7,
                transform=ax.get_yaxis_transform())
    if metrics.get(metric) is not None:
        ax.axvline(metrics[metric], color="C3", lw=1, ls=":")
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.set_xlim(*_spread_limits(rows, metric))
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.invert_yaxis()
    ax.set(xlabel=f"{metric.replace('_', ' ')} (95% bootstrap interval)", title=f"{metric} per domain")
    _save(fig, path)


def _spread_limits(rows: Sequence[tuple[str, Mapping[str, Any]]], metric: str) -> tuple[float, float]:
    """An axis that shows the domains' spread (values and intervals, a margin around them) instead of
    0-1, where every domain would sit in the same few millimetres; never beyond [0, 1]."""
    ends = []
    for _, m in rows:
        if m.get(metric) is not None:
            ends.append(m[metric])
            ends.extend((m.get("ci95") or {}).get(metric) or [])
    if not ends:
        return 0.0, 1.0
    lo, hi = min(ends), max(ends)
    margin = max(0.02, 0.1 * (hi - lo))
    return max(0.0, lo - margin), min(1.0, hi + margin)


def reliability_plot(calibration: Mapping[str, Any], path: str | Path) -> None:
    """Observed atypical fraction against mean P(atypical) per bin, with the bin counts below."""
    plt = _pyplot()
    edges = np.asarray(calibration["edges"])
    centres = (edges[:-1] + edges[1:]) / 2
    mean_p = np.array([np.nan if v is None else v for v in calibration["mean_predicted"]])
    observed = np.array([np.nan if v is None else v for v in calibration["observed"]])
    fig, (ax, hx) = plt.subplots(2, 1, figsize=(4.6, 5.4), sharex=True,
                                 gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="0.7", ls="--", lw=1, label="perfectly calibrated")
    ok = np.isfinite(observed)
    ax.plot(mean_p[ok], observed[ok], "o-", label=f"model (ECE {calibration['ece']:.3f})")
    ax.set(ylabel="observed fraction atypical", xlim=(0, 1), ylim=(0, 1), title="Reliability diagram")
    ax.legend(loc="upper left", fontsize=7)
    hx.bar(centres, calibration["count"], width=np.diff(edges), color="0.6", edgecolor="white")
    hx.set_yscale("symlog")
    hx.set(xlabel="predicted P(atypical)", ylabel="figures")
    _save(fig, path)


def experiment_plot(rows: Sequence[Mapping[str, Any]], path: str | Path, metric: str = "balanced_accuracy",
                    reference: str | None = None) -> None:
    """Per test set (columns): ``metric`` per config, mean ± sd over seeds with the single seeds as dots
    (top), and the paired difference to the reference config with its bootstrap 95% interval (bottom).

    ``rows``: dicts with ``test_set``, ``config``, ``mean``, ``sd``, ``values`` (per seed), ``delta``,
    ``delta_ci_low``, ``delta_ci_high``.
    """
    plt = _pyplot()
    test_sets = list(dict.fromkeys(r["test_set"] for r in rows)) or ["(no finished runs)"]
    configs = list(dict.fromkeys(r["config"] for r in rows))
    width = 1.5 + max(2.2, 0.8 * len(configs)) * len(test_sets)
    fig, axes = plt.subplots(2, len(test_sets), figsize=(width, 6.4), sharey="row", squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2]})
    label = metric.replace("_", " ")
    for col, test_set in enumerate(test_sets):
        top, bottom = axes[0][col], axes[1][col]
        for x, config in enumerate(configs):
            r = next((r for r in rows if r["test_set"] == test_set and r["config"] == config), None)
            if r is None or r["mean"] is None:
                continue
            vals = [v for v in r["values"] if v is not None]
            top.errorbar(x, r["mean"], yerr=r["sd"] or 0, fmt="o", color=f"C{x}", capsize=4, ms=7)
            top.plot(np.full(len(vals), x + 0.15), vals, ".", color=f"C{x}", alpha=0.6)
            if r.get("delta") is not None:
                err = [[r["delta"] - r["delta_ci_low"]], [r["delta_ci_high"] - r["delta"]]]
                bottom.errorbar(x, r["delta"], yerr=err, fmt="s", color=f"C{x}", capsize=4)
        bottom.axhline(0, color="0.5", lw=1, ls="--")
        for ax in (top, bottom):
            ax.set_xlim(-0.5, max(len(configs), 1) - 0.5)
            ax.grid(axis="y", alpha=0.3)
            ax.set_xticks(range(len(configs)), configs if ax is bottom else [""] * len(configs),
                          rotation=30, ha="right")
        top.set_title(test_set, fontsize=9)
    axes[0][0].set_ylabel(f"{label}\n(mean ± sd over seeds)")
    axes[1][0].set_ylabel(f"Δ vs {reference or 'reference'}\n(95% bootstrap interval)")
    _save(fig, path)
