"""The error gallery: the false positives and false negatives, most confidently wrong first, since that is
what a pathologist looks at first. Each crop carries P(atypical), its domain and label, and the outline of
the figure mask that the model's segmentation head predicts (when it has one)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mitotype.io import save_figure


def ranked_errors(labels: np.ndarray, probs: np.ndarray, threshold: float, limit: int = 24
                  ) -> dict[str, np.ndarray]:
    """Indices of false positives and false negatives, each sorted by how far P(atypical) lies on the
    wrong side of the threshold (most wrong first), at most ``limit`` of each."""
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=float)
    called = probs >= threshold
    out = {}
    for kind, wrong, badness in (("false positives", called & (labels == 0), probs),
                                 ("false negatives", ~called & (labels == 1), -probs)):
        idx = np.flatnonzero(wrong)
        out[kind] = idx[np.argsort(-badness[idx], kind="stable")][:limit]
    return out


def predicted_masks(loaded: Any, images: np.ndarray, device: str = "cpu") -> np.ndarray | None:
    """(N, H, W) figure-mask probability from the segmentation head at crop size, or None without one."""
    from mitotype.predict.explain import _resize_float, explain_maps

    if len(images) == 0 or "segmentation" not in loaded.config.model.dense_tasks:
        return None
    masks = explain_maps(loaded, images, device=device)["mask"]
    size = images.shape[1]
    return np.stack([m if m.shape[-1] == size else _resize_float(m, size) for m in masks])


def error_gallery(path: str | Path, images: np.ndarray, labels: np.ndarray, probs: np.ndarray,
                  threshold: float, domains: Sequence[str], names: Sequence[str],
                  masks: np.ndarray | None = None, columns: int = 8) -> dict[str, list[int]]:
    """Write the gallery PNG (one block per error kind, ``columns`` crops a row); return the indices shown.

    ``masks`` (optional) aligns with ``images`` and is outlined at 0.5."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ranked = ranked_errors(labels, probs, threshold)
    row_counts = [max(1, -(-len(idx) // columns)) for idx in ranked.values()]
    fig = plt.figure(figsize=(1.75 * columns, 2.05 * sum(row_counts) + 0.9 * len(ranked)), layout="constrained")
    blocks = fig.subfigures(len(ranked), 1, height_ratios=row_counts, squeeze=False)[:, 0]
    for block, (kind, idx), n_rows in zip(blocks, ranked.items(), row_counts):
        truth = "normal" if kind == "false positives" else "atypical"
        block.suptitle(f"{kind} ({len(idx)} shown; truth {truth}, most confidently wrong first)", fontsize=10)
        axes = block.subplots(n_rows, columns, squeeze=False)
        for ax in axes.flat:
            ax.set_axis_off()
        if len(idx) == 0:
            axes.flat[0].text(0, 0.5, "none", fontsize=9)
        for ax, i in zip(axes.flat, idx):
            ax.imshow(images[i])
            if masks is not None and masks[i].max() >= 0.5:
                ax.contour(masks[i], levels=[0.5], colors=["yellow"], linewidths=0.9)
            ax.set_title(f"P={probs[i]:.2f} {domains[i][:14]}\n{names[i][:22]}", fontsize=6)
    fig.suptitle(f"Errors at threshold {threshold:.3f}; yellow = predicted figure mask"
                 + ("" if masks is not None else " (this model has no segmentation head)"), fontsize=11)
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return {kind: [int(i) for i in idx] for kind, idx in ranked.items()}
