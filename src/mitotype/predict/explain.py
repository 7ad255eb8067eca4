"""``mitotype explain``: what the model sees, per figure and for many figures at once.

Per figure one PNG with four panels: the crop; the predicted figure mask (segmentation head); the
pixel-class map (background / normal figure / atypical figure, from the pixel-class head) over the crop;
and the class-activation map for "atypical" (Grad-CAM on the last encoder stage, ``MitoNet.cam``).
A contact sheet shows all explained figures sorted by P(atypical), each outlined in its predicted
class's colour with the CAM's hot spot contoured, so a glance tells whether the model looks at the cell.
Models without a dense head get "(no ... head)" in that panel.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mitotype.errors import MitotypeError

CLASS_COLOURS = np.array([[0, 0, 0], [40, 170, 70], [220, 40, 40]], dtype=np.float32) / 255  # bg, normal, atypical


def explain_maps(loaded: Any, images: np.ndarray, batch_size: int = 16, device: str = "cpu") -> dict[str, Any]:
    """P(atypical), figure-mask probability, pixel classes and CAM for each crop (maps at input size)."""
    import torch

    from mitotype.models.inference import model_inputs, preprocessing_of

    model = loaded.model
    out: dict[str, list] = {"p": [], "mask": [], "classes": [], "cam": []}
    for start in range(0, len(images), batch_size):
        # the same crop, stain normalisation, resize and mean/std as prediction
        x = torch.from_numpy(model_inputs(images[start:start + batch_size], preprocessing_of(loaded)))
        x = x.contiguous().to(device)
        with torch.inference_mode():
            model.eval()
            outputs = model(x, dense=True)
        out["p"].append(torch.softmax(outputs.logits.float(), 1)[:, 1].cpu().numpy())
        out["mask"].append(None if outputs.mask is None else torch.sigmoid(outputs.mask[:, 0].float()).cpu().numpy())
        out["classes"].append(None if outputs.classes is None
                              else torch.softmax(outputs.classes.float(), 1).cpu().numpy())
        out["cam"].append(model.cam(x).detach().cpu().numpy() if hasattr(model, "cam") else None)
    joined: dict[str, Any] = {}
    for key, parts in out.items():
        joined[key] = None if any(p is None for p in parts) else np.concatenate(parts)
    return joined


def _resized(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size:
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def class_overlay(image: np.ndarray, class_probs: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Crop (uint8) tinted by the argmax pixel class (background untouched); float RGB in [0, 1]. Black
    zero-padding is left untinted: it is not tissue, and training ignores the dense losses there."""
    from mitotype.data.targets import padding_mask

    resized = _resized(image, class_probs.shape[-1])
    base = resized.astype(np.float32) / 255
    label = class_probs.argmax(0)
    tint = CLASS_COLOURS[label]
    weight = ((label > 0) & ~padding_mask(resized))[..., None] * alpha
    return base * (1 - weight) + tint * weight


def figure_panel(image: np.ndarray, name: str, p: float, label: str, mask: np.ndarray | None,
                 classes: np.ndarray | None, cam: np.ndarray | None) -> Any:
    """The four-panel matplotlib figure for one crop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
    axes[0].imshow(image)
    axes[0].set_title("crop")
    if mask is not None:
        from mitotype.data.targets import padding_mask

        mask = np.where(padding_mask(_resized(image, mask.shape[-1])), 0.0, mask)  # padding is not tissue
        axes[1].imshow(mask, cmap="gray", vmin=0, vmax=1)
        axes[1].set_title("predicted figure mask")
    if classes is not None:
        axes[2].imshow(class_overlay(image, classes))
        axes[2].set_title("pixel classes (green normal, red atypical)", fontsize=9)
    if cam is not None:
        axes[3].imshow(_resized(image, cam.shape[-1]))
        axes[3].imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        axes[3].set_title("class activation (atypical)")
    for ax, what, value in zip(axes[1:], ("segmentation", "pixel-class", "CAM"), (mask, classes, cam)):
        if value is None:
            ax.text(0.5, 0.5, f"(no {what} head)", ha="center", va="center", transform=ax.transAxes)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(f"{name}   P(atypical) = {p:.3f}  ->  {label}", fontsize=11)
    fig.tight_layout()
    return fig


def contact_sheet(images: np.ndarray, names: Sequence[str], probs: np.ndarray, labels: Sequence[str],
                  cams: np.ndarray | None, columns: int = 10) -> Any:
    """All figures sorted by P(atypical), highest first, outlined by class, CAM hot spot contoured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(-np.asarray(probs), kind="stable")
    columns = max(1, min(columns, len(order)))
    rows = math.ceil(len(order) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.9 * rows + 0.4), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, i in zip(axes.flat, order):
        ax.imshow(images[i])
        if cams is not None:
            size = images[i].shape[0]
            cam = cams[i] if cams[i].shape[-1] == size else np.asarray(
                _resize_float(cams[i], size))
            ax.contour(cam, levels=[0.5], colors=["yellow"], linewidths=0.8)
        colour = CLASS_COLOURS[2 if labels[i] == "atypical" else 1]
        ax.add_patch(plt.Rectangle((0, 0), images[i].shape[1] - 1, images[i].shape[0] - 1, fill=False,
                                   edgecolor=colour, linewidth=3))
        ax.set_title(f"{probs[i]:.2f} {names[i][:18]}", fontsize=6)
    fig.suptitle("sorted by P(atypical); frame red = atypical, green = normal; yellow = CAM > 0.5", fontsize=9)
    return fig


def _resize_float(array: np.ndarray, size: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()


def _safe(name: str) -> str:
    """A file-name part without the image's own suffix: runs of other characters become one '_', none left
    at the ends ('crop.png' -> 'crop', 'stack.tiff[3]' -> 'stack_3')."""
    name = re.sub(r"\.(png|jpe?g|tiff?|webp)(?=\[|$)", "", name, flags=re.IGNORECASE)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:80]


def explain(
    inputs: Sequence[str | Path] = (),
    out_dir: str | Path = "explain",
    model_path: str = "default",
    limit: int = 100,
    batch_size: int = 16,
    device: str = "auto",
    slide: str | Path | None = None,
    coords: str | Path | None = None,
    slide_mpp: float | None = None,
    progress: bool | None = None,
) -> Path:
    """Write per-figure PNGs, ``contact_sheet.png``, ``explain.csv`` and ``run.json`` into ``out_dir``."""
    import matplotlib.pyplot as plt
    from tqdm.auto import tqdm

    from mitotype.data.figure import LABELS
    from mitotype.io import provenance, save_figure, write_json, write_text
    from mitotype.predict.run import check_sources, csv_text, gather_images, load_models, make_rows, resolve_device

    if limit < 1:
        raise MitotypeError(f"--limit must be at least 1, got {limit}")
    check_sources(inputs, slide, coords)
    device = resolve_device(device)
    (loaded,) = load_models([model_path], device)
    cfg = loaded.config.model
    images, sources, indices, xy = gather_images(inputs, cfg.crop_size, cfg.mpp, slide, coords, slide_mpp, progress)
    images, sources, indices = images[:limit], sources[:limit], indices[:limit]
    xy = None if xy is None else xy[:limit]
    maps = explain_maps(loaded, images, batch_size=batch_size, device=device)
    rows = make_rows(sources, indices, maps["p"], loaded.threshold, xy)
    out_dir = Path(out_dir)
    repeated = {s for s in sources if sources.count(s) > 1}  # stacks and slides: name the page / row
    names = [Path(s).name + (f"[{i}]" if s in repeated else "") for s, i in zip(sources, indices)]
    files = []
    show = len(rows) >= 16 if progress is None else progress
    for k, row in enumerate(tqdm(rows, desc="explaining", unit="fig", disable=not show)):
        fig = figure_panel(images[k], names[k], row["p_atypical"], row["class"],
                           None if maps["mask"] is None else maps["mask"][k],
                           None if maps["classes"] is None else maps["classes"][k],
                           None if maps["cam"] is None else maps["cam"][k])
        path = out_dir / "figures" / f"{k:04d}_{_safe(names[k])}.png"
        save_figure(fig, path, dpi=100)
        plt.close(fig)
        files.append(str(path.relative_to(out_dir)))
    sheet = contact_sheet(images, names, maps["p"], [r["class"] for r in rows], maps["cam"])
    save_figure(sheet, out_dir / "contact_sheet.png", dpi=110)
    plt.close(sheet)
    table = csv_text(rows).splitlines()
    table = [table[0] + ",png"] + [f"{line},{f}" for line, f in zip(table[1:], files)]
    write_text(out_dir / "explain.csv", "\n".join(table) + "\n")
    write_json(out_dir / "run.json", provenance(model=str(model_path), threshold=loaded.threshold,
                                                 figures=len(rows), labels=list(LABELS)))
    return out_dir
