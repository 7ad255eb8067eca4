"""The evaluation report: one Markdown file that puts metrics, plots and provenance together."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mitotype.metrics import METRICS


def fmt(value: float | None, ci: Sequence[float] | None = None, digits: int = 3) -> str:
    """``0.812 [0.780, 0.845]``; ``n/a`` for an undefined metric."""
    if value is None:
        return "n/a"
    text = f"{value:.{digits}f}"
    if ci is not None:
        text += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return text


def metrics_table(rows: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """One row per (name, summary): every metric with its interval, plus the counts."""
    head = "| | " + " | ".join(METRICS) + " | n | atypical |"
    lines = [head, "|" + "---|" * (len(METRICS) + 3)]
    for name, m in rows:
        ci = m.get("ci95") or {}
        cells = [fmt(m.get(k), ci.get(k)) for k in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {m['n']} | {m['n_atypical']} |")
    return "\n".join(lines)


def calibration_words(calibration: Mapping[str, Any], min_count: int = 20, tolerance: float = 0.05) -> str:
    """The reliability diagram in one sentence: each bin (of at least ``min_count`` figures) where the mean
    P(atypical) over- or under-states the observed atypical rate by more than ``tolerance``."""
    bins = [(p, o, n) for p, o, n in zip(calibration["mean_predicted"], calibration["observed"],
                                         calibration["count"]) if n >= min_count and p is not None]
    if not bins:
        return f"too few figures per bin (< {min_count}) to judge."
    parts = []
    for sign, word in ((1, "over-confident (P(atypical) above the observed rate)"),
                       (-1, "under-confident (P(atypical) below the observed rate)")):
        off = [f"{p:.2f} -> {o:.2f} ({n})" for p, o, n in bins if sign * (p - o) > tolerance]
        if off:
            parts.append(f"{word} in {len(off)} bin(s), predicted -> observed (figures): " + ", ".join(off))
    if not parts:
        return (f"P(atypical) matches the observed atypical rate within {tolerance:.2f} in every bin with "
                f"at least {min_count} figures.")
    return "; ".join(parts) + f". Bins of at least {min_count} figures, differences over {tolerance:.2f}."


def evaluation_report(metrics: Mapping[str, Any], models: Sequence[Mapping[str, Any]], spec: str,
                      plots: Mapping[str, str], provenance: Mapping[str, Any],
                      calibration: Mapping[str, Any] | None = None) -> str:
    """Markdown text; ``plots`` maps a caption to a PNG path relative to the report."""
    boot = metrics["bootstrap"]
    unit = "groups (slides or cases)" if boot["unit"] == "group" else "figures (no shared slides known)"
    if len(models) == 1:
        m = models[0]
        kind = f"`{m['path']}`" + (f" (`{m['file']}`)" if m.get("file") and m["file"] != m["path"] else "")
    else:
        kind = f"ensemble of {len(models)} models (mean P(atypical))"
    out = [
        "# mitotype evaluation",
        "",
        (f"**Data:** `{spec}` — {metrics['n']} labelled figures, {metrics['n_atypical']} atypical, "
         f"{len(metrics['per_domain'])} domain(s).  "),
        (f"**Model:** {kind}; threshold {metrics['threshold']:.4f} "
         "(P(atypical) >= threshold is called atypical).  "),
        f"**Intervals:** 95% percentile bootstrap, {boot['n_boot']} resamples of {boot['n_units']} {unit}.",
        "",
        "## Metrics (MIDOG 2025 track 2: atypical = positive, figures pooled)",
        "",
        metrics_table([("all", metrics)] + sorted(metrics["per_domain"].items())),
        "",
    ]
    c = metrics["confusion"]
    out += [f"Confusion: TP {c['tp']}, FN {c['fn']}, TN {c['tn']}, FP {c['fp']}."]
    if calibration is not None:
        out[-1] += f" Expected calibration error (10 bins): {calibration['ece']:.3f}."
        out += ["", f"**Calibration:** {calibration_words(calibration)}"]
    undefined = [d for d, m in metrics["per_domain"].items() if m["auroc"] is None]
    if undefined:
        out += ["", f"Domains with one class only (AUROC, balanced accuracy undefined): {', '.join(undefined)}."]
    out += ["", "## Plots", ""]
    for caption, rel in plots.items():
        out += [f"### {caption}", "", f"![{caption}]({rel})", ""]
    out += ["## Models", "", "| # | file | encoder | dense tasks | threshold |", "|---|---|---|---|---|"]
    for i, m in enumerate(models):
        tasks = ", ".join(m.get("dense_tasks") or []) or "none"
        out.append(f"| {i} | `{m['path']}` | {m.get('encoder', '?')} | {tasks} | {fmt(m.get('threshold'), digits=4)} |")
    out += ["", "## Provenance", "", "| | |", "|---|---|"]
    for key, value in provenance.items():
        if key != "models":
            out.append(f"| {key} | `{value}` |")
    out += ["", ("Files: `metrics.json` (all numbers above), `predictions.csv` (one row per figure), "
                 "`run.json` (provenance)."), ""]
    return "\n".join(out)
