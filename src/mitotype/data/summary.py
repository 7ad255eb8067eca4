"""Counts of a figure list per class, domain, group, split and source, as a dict (JSON) or a text table."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mitotype.data.figure import LABELS, Figure


def _class_name(label: int | None) -> str:
    return "unlabelled" if label is None else LABELS[label]


def _breakdown(figures: Sequence[Figure], key: Callable[[Figure], Any]) -> dict[str, dict[str, int]]:
    """{value: {"n": .., "normal": .., "atypical": .., ["unlabelled": ..]}}, sorted by value."""
    table: dict[str, Counter] = {}
    for f in figures:
        table.setdefault(str(key(f)), Counter())[_class_name(f.label)] += 1
    return {k: {"n": sum(c.values()), **{name: c[name] for name in (*LABELS, "unlabelled") if c[name] or
                                          name != "unlabelled"}}
            for k, c in sorted(table.items())}


def summarise(figures: Sequence[Figure]) -> dict[str, Any]:
    classes = Counter(_class_name(f.label) for f in figures)
    groups = _breakdown(figures, lambda f: f.group)
    sizes = np.array([g["n"] for g in groups.values()])
    return {
        "n_figures": len(figures),
        "classes": {name: classes[name] for name in (*LABELS, "unlabelled") if classes[name] or name != "unlabelled"},
        "n_domains": len({f.domain for f in figures}),
        "domains": _breakdown(figures, lambda f: f.domain),
        "splits": _breakdown(figures, lambda f: f.split or "none"),
        "sources": _breakdown(figures, lambda f: f.source or "?"),
        "n_groups": len(groups),
        "group_size": {"min": int(sizes.min()), "median": float(np.median(sizes)), "max": int(sizes.max())},
        "groups": groups,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text report; the per-group listing is left to ``--json``."""
    classes = summary["classes"]
    cols = list(classes)
    lines = [f"{summary['n_figures']} figures: " + ", ".join(f"{classes[c]} {c}" for c in cols),
             f"{summary['n_domains']} domain(s), {summary['n_groups']} group(s) (figures per group: "
             f"min {summary['group_size']['min']}, median {summary['group_size']['median']:g}, "
             f"max {summary['group_size']['max']})"]
    for title in ("domains", "splits", "sources"):
        rows = summary[title]
        width = max(len(title), *(len(k) for k in rows))
        lines += ["", f"{title:<{width}}  {'n':>6}" + "".join(f"  {c:>10}" for c in cols) + "  %atypical"]
        for name, row in rows.items():
            labelled = row.get("atypical", 0) + row.get("normal", 0)
            share = f"{100 * row.get('atypical', 0) / labelled:>8.1f}%" if labelled else f"{'-':>9}"
            lines.append(f"{name:<{width}}  {row['n']:>6}" + "".join(f"  {row.get(c, 0):>10}" for c in cols)
                         + f"  {share}")
    return "\n".join(lines) + "\n"
