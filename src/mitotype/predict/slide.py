"""Crops around figure positions in a whole-slide image, at the model's microns per pixel.

A figure at level-0 pixel ``(x, y)`` becomes the crop that covers ``crop_size * model_mpp`` microns
centred there: for a slide at the model's resolution exactly the pixels ``[x - c/2, x + c/2)`` (as
``image[y-64:y+64, x-64:x+64]`` for c = 128); at another resolution that field of view is read from the
pyramid level just finer than needed and resampled (antialiased) to ``crop_size`` pixels. Beyond the slide
border the crop is zero-padded (black), the convention of the training crops.

Slides are read with tiffslide (SVS, generic and pyramidal TIFF, NDPI, ...) and openslide when installed
(MRXS, ...). A slide without resolution metadata needs ``slide_mpp`` from the user: guessing it would
silently change the figure's size.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from mitotype.errors import MitotypeError


def open_slide(path: str | Path) -> Any:
    """An openslide-like object (tiffslide first, openslide as fallback); MitotypeError if neither reads it."""
    path = Path(path)
    if not path.is_file():
        raise MitotypeError(f"{path}: slide not found")
    errors = []
    try:
        import tiffslide

        return tiffslide.TiffSlide(path)
    except Exception as exc:  # tiffslide raises many types for unsupported files
        errors.append(f"tiffslide: {exc}")
    try:
        import openslide

        return openslide.OpenSlide(str(path))
    except ImportError:
        errors.append("openslide: not installed (pip install 'mitotype[openslide]')")
    except Exception as exc:
        errors.append(f"openslide: {exc}")
    raise MitotypeError(f"{path}: cannot read as a slide ({'; '.join(errors)})")


def slide_mpp(slide: Any, path: str | Path, override: float | None = None) -> float:
    """Microns per pixel at level 0: ``override`` if given, else the slide's metadata, else an error."""
    if override is not None:
        if not override > 0:
            raise MitotypeError(f"--slide-mpp must be positive, got {override}")
        return float(override)
    props = slide.properties
    values = []
    for axis in ("x", "y"):
        raw = props.get(f"tiffslide.mpp-{axis}", props.get(f"openslide.mpp-{axis}"))
        try:
            values.append(float(raw))
        except (TypeError, ValueError):
            values.append(float("nan"))
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise MitotypeError(
            f"{path}: the slide has no resolution metadata (microns per pixel); give it with --slide-mpp, "
            "e.g. --slide-mpp 0.25"
        )
    if abs(values[0] - values[1]) > 0.01 * values[0]:
        raise MitotypeError(f"{path}: non-square pixels ({values[0]} x {values[1]} µm) are not supported")
    return values[0]


def read_coords(path: str | Path) -> np.ndarray:
    """Figure positions from a CSV with columns ``x`` and ``y`` (level-0 pixels; other columns ignored)."""
    path = Path(path)
    if not path.is_file():
        raise MitotypeError(f"{path}: coordinates file not found")
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            fields = {name.strip().lower(): name for name in reader.fieldnames or []}
            if "x" not in fields or "y" not in fields:
                raise MitotypeError(
                    f"{path}: needs columns x and y (level-0 pixels); found {reader.fieldnames}"
                )
            rows = [(row[fields["x"]], row[fields["y"]]) for row in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise MitotypeError(f"{path}: not a readable CSV ({exc})") from None
    try:
        coords = np.array(rows, dtype=np.float64).reshape(-1, 2)
    except ValueError:
        raise MitotypeError(f"{path}: x and y must be numbers") from None
    if len(coords) == 0:
        raise MitotypeError(f"{path}: no figure positions")
    if not np.isfinite(coords).all():
        raise MitotypeError(f"{path}: x and y must be finite numbers")
    return coords


def _read_rgb(slide: Any, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
    region = np.asarray(slide.read_region(location, level, size))
    if region.shape[-1] == 4:  # openslide: RGBA, transparent (alpha 0) outside the slide -> black
        region = np.where(region[..., 3:] > 0, region[..., :3], 0)
    return np.ascontiguousarray(region[..., :3], dtype=np.uint8)


def read_crop(slide: Any, x: float, y: float, crop_size: int, scale: float) -> np.ndarray:
    """The ``crop_size`` crop centred at level-0 ``(x, y)`` covering ``crop_size * scale`` level-0 pixels."""
    from PIL import Image

    level = slide.get_best_level_for_downsample(scale)
    down = float(slide.level_downsamples[level])
    half = crop_size * scale / down / 2  # half the field of view, in level pixels
    cx, cy = x / down, y / down
    x0, y0 = math.floor(cx - half) - 2, math.floor(cy - half) - 2  # a margin for the resampling kernel
    w, h = math.ceil(cx + half) + 2 - x0, math.ceil(cy + half) + 2 - y0
    # read_region takes its location in level-0 pixels whatever the level
    region = _read_rgb(slide, (round(x0 * down), round(y0 * down)), level, (w, h))
    box = (cx - half - x0, cy - half - y0, cx + half - x0, cy + half - y0)
    out = Image.fromarray(region).resize((crop_size, crop_size), Image.Resampling.BICUBIC, box=box)
    return np.asarray(out, dtype=np.uint8)


def field_of_view(path: str | Path, crop_size: int, mpp: float, slide_mpp_override: float | None = None) -> float:
    """Side, in level-0 pixels, of the square a crop covers on this slide (``crop_size * mpp`` microns)."""
    slide = open_slide(path)
    try:
        return crop_size * mpp / slide_mpp(slide, path, slide_mpp_override)
    finally:
        slide.close()


def read_slide_crops(
    path: str | Path,
    coords: np.ndarray,
    crop_size: int,
    mpp: float,
    slide_mpp_override: float | None = None,
    progress: bool = False,
) -> np.ndarray:
    """(N, crop_size, crop_size, 3) uint8 crops at ``mpp`` µm/px around level-0 ``coords`` (N, 2)."""
    from tqdm.auto import tqdm

    slide = open_slide(path)
    try:
        scale = mpp / slide_mpp(slide, path, slide_mpp_override)
        width, height = slide.dimensions
        outside = (coords[:, 0] < 0) | (coords[:, 1] < 0) | (coords[:, 0] >= width) | (coords[:, 1] >= height)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise MitotypeError(
                f"{path}: {int(outside.sum())} position(s) outside the slide ({width} x {height} level-0 "
                f"pixels), e.g. row {i}: x={coords[i, 0]:g}, y={coords[i, 1]:g}"
            )
        crops = np.zeros((len(coords), crop_size, crop_size, 3), np.uint8)
        for i, (x, y) in enumerate(tqdm(coords, desc="reading slide", unit="fig", disable=not progress)):
            crops[i] = read_crop(slide, float(x), float(y), crop_size, scale)
        return crops
    finally:
        slide.close()
