"""The figure-mask report of ``mitotype masks``: every figure's mask computed (and cached, which is what
training reads), written as a palette PNG, a per-figure CSV, a summary (JSON and Markdown, per class and per
domain) and a gallery of crops with their mask contours. The method and what it gets wrong: docs/MASKS.md.
"""

from __future__ import annotations

import re
from pathlib import Path

PERCENTILES = (5, 25, 50, 75, 95)


def write_mask_report(spec: str, out: Path, limit: int | None = None, size: int = 128, policy: str = "center-crop",
                      gallery: int = 16, seed: int = 0, workers: int | None = None, progress: bool = True) -> dict:
    """Masks of the figures of ``spec`` (a random ``limit`` of them, by ``seed``) and the report files in
    ``out`` (an existing, checked folder); returns the report (``masks_report.json``'s content)."""
    import time

    import numpy as np

    from mitotype.data.images import load_images
    from mitotype.data.spec import load_figures
    from mitotype.data.targets import CENTRE_RADIUS, MaskParams, load_masks, mask_stats
    from mitotype.io import provenance, write_json, write_text

    out = Path(out)
    figures = load_figures(spec)
    if limit and limit < len(figures):
        keep = np.sort(np.random.default_rng(seed).choice(len(figures), limit, replace=False))
        figures = [figures[i] for i in keep]
    start = time.perf_counter()
    images = load_images(figures, size=size, policy=policy, progress=progress)
    read_s = time.perf_counter() - start
    masks, fallback = load_masks(figures, images, progress=progress, workers=workers)
    mask_s = time.perf_counter() - start - read_s
    stats = mask_stats(masks)
    names = _file_names(figures)
    _write_masks(out / "masks", names, masks, progress)

    rows = [{"name": names[i], "path": str(f.path), "page": f.page, "label": f.label, "domain": f.domain,
             "area": int(stats["area"][i]), "fallback": bool(fallback[i]),
             "centre_hit": bool(stats["centre_hit"][i]), "com_distance": round(float(stats["com_distance"][i]), 2),
             "pieces": int(stats["pieces"][i])} for i, f in enumerate(figures)]
    _write_csv(out / "masks.csv", rows)
    report = {
        "spec": spec, "out": str(out),
        **_summary(np.ones(len(figures), bool), fallback, stats),
        "centre_radius_px": CENTRE_RADIUS,
        "per_class": {name: _summary(np.array([r["label"] == k for r in rows]), fallback, stats)
                      for k, name in _class_names(rows).items()},
        "per_domain": {d: _summary(np.array([r["domain"] == d for r in rows]), fallback, stats)
                       for d in sorted({r["domain"] for r in rows})},
        "fallback_figures": [r["name"] for r in rows if r["fallback"]],
        "params": MaskParams().__dict__,
        "seconds": {"read": round(read_s, 1), "masks": round(mask_s, 1)},
        "provenance": provenance(limit=limit, seed=seed, size=size),
    }
    write_json(out / "masks_report.json", report)
    write_text(out / "masks_report.md", _markdown(report))
    _gallery(out / "gallery.png", figures, images, masks, fallback, stats, gallery, seed)
    return report


def _class_names(rows: list[dict]) -> dict:
    from mitotype.data.figure import LABELS

    present = {r["label"] for r in rows}
    names = {k: name for k, name in enumerate(LABELS) if k in present}
    if None in present:
        names[None] = "unlabelled"
    return names


def _summary(select, fallback, stats) -> dict:
    """Counts, rates and area percentiles (of masks from the image, not the fallback disk) of a subset."""
    import numpy as np

    n = int(select.sum())
    from_image = select & ~fallback
    areas = stats["area"][from_image]
    distance = stats["com_distance"][from_image]
    return {
        "n": n,
        "n_fallback": int((select & fallback).sum()),
        "fallback_rate": float((select & fallback).sum() / n) if n else 0.0,
        # masks that come from the image AND cover the centre region, over all figures (the 95% criterion)
        "centre_hit_rate": float((from_image & stats["centre_hit"]).sum() / n) if n else 0.0,
        "area_px": {f"p{q}": float(np.percentile(areas, q)) if areas.size else None for q in PERCENTILES},
        "com_distance_px": {f"p{q}": float(np.percentile(distance, q)) if distance.size else None
                            for q in (50, 95)},
        "multi_piece_rate": float((stats["pieces"][from_image] > 1).mean()) if areas.size else 0.0,
    }


def _file_names(figures) -> list[str]:
    """Mask file names after the figures (stem, plus the page for stacks), unique."""
    seen: dict[str, int] = {}
    names = []
    for f in figures:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", f.name.rsplit(".", 1)[0] if f.page is None else
                      f"{f.name.split('[')[0].rsplit('.', 1)[0]}_p{f.page}")
        count = seen.get(stem, 0)
        seen[stem] = count + 1
        names.append(stem if count == 0 else f"{stem}_{count}")
    return names


def _write_masks(folder, names, masks, progress: bool) -> None:
    import io
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from mitotype.io import write_bytes

    palette = [0, 0, 0, 255, 255, 255] + [0, 0, 0] * 253 + [128, 128, 128]

    def save(i: int) -> None:
        image = Image.fromarray(masks[i], mode="P")
        image.putpalette(palette)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=False)
        write_bytes(folder / f"{names[i]}.png", buffer.getvalue())

    folder.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=8) as pool:  # the atomic writes wait on fsync, not the CPU
        results = pool.map(save, range(len(names)))
        if progress:
            from tqdm.auto import tqdm

            results = tqdm(results, total=len(names), desc="writing masks", unit="mask")
        for _ in results:
            pass


def _write_csv(path, rows: list[dict]) -> None:
    import csv

    from mitotype.io import atomic_write

    with atomic_write(path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _markdown(report: dict) -> str:
    def row(name: str, s: dict) -> str:
        a = s["area_px"]
        area = " | ".join("-" if a[f"p{q}"] is None else f"{a[f'p{q}']:.0f}" for q in PERCENTILES)
        return (f"| {name} | {s['n']} | {s['n_fallback']} | {100 * s['fallback_rate']:.1f}% | "
                f"{100 * s['centre_hit_rate']:.1f}% | {100 * s['multi_piece_rate']:.1f}% | {area} |")

    head = ("| | n | fallback | fallback rate | from image and covering centre | several pieces | "
            + " | ".join(f"area p{q}" for q in PERCENTILES) + " |\n|" + "---|" * (6 + len(PERCENTILES)))
    lines = [
        f"# Figure masks: `{report['spec']}`", "",
        f"{report['n']} figures; {report['n_fallback']} fallback disks ({100 * report['fallback_rate']:.2f}%); "
        f"{100 * report['centre_hit_rate']:.2f}% of all masks come from the image and have a figure pixel within "
        f"{report['centre_radius_px']:g} px of the crop centre. Areas in pixels, of the masks from the image; "
        f"centre of mass within {report['com_distance_px']['p50']:.1f} px of the crop centre (median), "
        f"{report['com_distance_px']['p95']:.1f} px (95th percentile).", "",
        head, row("all", report),
    ]
    lines += [row(f"class {k}", s) for k, s in report["per_class"].items()]
    lines += [row(f"domain {k}", s) for k, s in report["per_domain"].items()]
    lines += ["", f"Time: images read in {report['seconds']['read']} s, masks in {report['seconds']['masks']} s "
              "(0 s when cached).", ""]
    if report["fallback_figures"]:
        shown = report["fallback_figures"][:50]
        lines += ["Fallback figures: " + ", ".join(shown) + (" ..." if len(report["fallback_figures"]) > 50 else ""),
                  ""]
    return "\n".join(lines)


def _gallery(path, figures, images, masks, fallback, stats, per_class: int, seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from mitotype.data.figure import LABELS
    from mitotype.data.targets import CENTRE_RADIUS
    from mitotype.io import save_figure

    rng = np.random.default_rng(seed)
    labels = np.array([-1 if f.label is None else f.label for f in figures])
    panels: list[tuple[str, np.ndarray]] = []
    for k in (1, 0, -1):
        idx = np.flatnonzero(labels == k)
        if idx.size:
            name = "unlabelled" if k < 0 else LABELS[k]
            panels.append((f"random {name}", rng.choice(idx, min(per_class, idx.size), replace=False)))
    idx = np.flatnonzero(fallback)
    if idx.size:
        panels.append(("fallback disks", rng.choice(idx, min(8, idx.size), replace=False)))
    idx = np.flatnonzero(~fallback & ~stats["centre_hit"])
    if idx.size:
        panels.append(("from the image, not covering the centre region",
                       rng.choice(idx, min(8, idx.size), replace=False)))
    # the extremes are where merges with neighbours (largest) and partial figures (smallest) show up
    order = np.flatnonzero(~fallback)[np.argsort(stats["area"][~fallback], kind="stable")]
    if order.size >= 16:
        panels.append(("largest masks from the image", order[::-1][:8]))
        panels.append(("smallest masks from the image", order[:8]))
    cols = 8
    heights = [-(-len(ix) // cols) for _, ix in panels]
    fig = plt.figure(figsize=(2.0 * cols, 2.2 * sum(heights) + 0.4 * len(panels)), layout="constrained")
    fig.suptitle("Figure masks: green = from the image, red = fallback disk, cyan = zero-padding (ignored), "
                 f"yellow dotted = centre region ({CENTRE_RADIUS:g} px)", fontsize=10)
    subfigs = np.atleast_1d(fig.subfigures(len(panels), 1, height_ratios=heights))
    for sub, (title, ix), height in zip(subfigs, panels, heights):
        sub.suptitle(title, fontsize=10, fontweight="bold", x=0.01, ha="left")
        axes = sub.subplots(height, cols, squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, i in zip(axes.flat, ix):
            h, w = masks[i].shape
            ax.imshow(images[i])
            ax.contour(masks[i] == 1, [0.5], colors="red" if fallback[i] else "lime", linewidths=1.0)
            if (masks[i] == 255).any():
                ax.contour(masks[i] == 255, [0.5], colors="cyan", linewidths=0.8)
            ax.add_patch(plt.Circle(((w - 1) / 2, (h - 1) / 2), CENTRE_RADIUS, fill=False, color="yellow",
                                    linestyle=":", linewidth=0.8))
            cls = "?" if labels[i] < 0 else LABELS[labels[i]][0].upper()
            ax.set_title(f"{figures[i].name[:22]} {cls} {stats['area'][i]}px", fontsize=7)
    save_figure(fig, path, dpi=100)
    plt.close(fig)
