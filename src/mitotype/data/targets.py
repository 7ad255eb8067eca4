"""Auxiliary dense targets from a crop centred on a mitotic figure.

The figure mask is a classical morphological segmentation (no annotation needed):

1. colour deconvolution to haematoxylin (Ruifrok & Johnston, ``skimage.color.rgb2hed``), Gaussian smoothing;
   black zero-padding is replaced by the tissue median first so that it neither bleeds into the
   smoothing nor enters the thresholds;
2. hysteresis threshold on tissue pixels only: low = Otsu (nuclei vs. stroma), high = the upper of a
   three-class Otsu (the darkest chromatin); a piece counts only if it holds some very dark pixels, so pale
   interphase nuclei rarely become seeds;
3. opening and hole filling, then the pieces at the centre (within ``seed_radius``) are the figure; if the
   centre falls between pieces (anaphase/telophase) or the figure sits off-centre, the nearest piece within
   ``search_radius`` and pieces of similar darkness around it are taken instead;
4. pieces of similar darkness within ``piece_radius`` of the centre and small pieces touching the figure
   (within ``gap``) are added: atypical figures come in several pieces (multipolar, lagging chromosomes);
5. if the figure grew larger than ``max_area`` (merged with neighbouring nuclei) the low threshold is
   raised and steps 2-5 repeat;
6. only when nothing plausible is found: a disk of ``fallback_radius`` at the centre, counted as fallback.

Geometry is in pixels of a 128-pixel crop at 0.25 um/px (AMi-Br, MIDOG). See docs/MASKS.md for what the
method gets wrong.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

from mitotype.errors import MitotypeError

IGNORE = 255  # mask value on pixels without tissue (zero-padding, or brought in by a rotation)
CENTRE_RADIUS = 16.0  # "covers the centre region": a figure pixel within 16 px (4 um) of the crop centre
METHOD_VERSION = "hysteresis-v1"  # bump when the algorithm changes: invalidates the disk cache


@dataclass(frozen=True)
class MaskParams:
    """Segmentation settings, in pixels (128-pixel crops at 0.25 um/px)."""

    sigma: float = 1.0  # Gaussian smoothing of the haematoxylin channel
    seed_radius: float = 10.0  # pieces reaching this close to the centre are the figure
    search_radius: float = 28.0  # otherwise the nearest piece within this radius (off-centre figures)
    piece_radius: float = 20.0  # further pieces of similar darkness within this radius are added
    darkness_ratio: float = 0.85  # "similar darkness": mean haematoxylin >= ratio x the figure's
    gap: float = 6.0  # small pieces this close to the figure are added whatever their darkness
    min_piece: int = 8  # pieces smaller than this are noise
    min_area: int = 40  # a figure smaller than this is not plausible -> fallback
    max_area: int = 1400  # a figure larger than this merged with neighbours -> raise the threshold
    fallback_radius: float = 12.0  # ~6 um diameter disk when the image gives nothing

    def key(self) -> str:
        return f"{METHOD_VERSION}:{sorted(asdict(self).items())}"


def padding_mask(image: np.ndarray, level: int = 0) -> np.ndarray:
    """True on black zero-padding: pixels with every channel <= ``level`` connected to the image border.

    Crops of figures near the border of their source image are padded with black (about 3% of AMi-Br);
    real tissue is never pure black, and the border condition keeps a dark spot inside the tissue safe.
    """
    from scipy import ndimage as ndi

    image = _check_image(image)
    # channel by channel: a reduction over the last axis of size 3 is ten times slower
    candidate = (image[..., 0] <= level) & (image[..., 1] <= level) & (image[..., 2] <= level)
    if not candidate.any():
        return candidate
    labels, _ = ndi.label(candidate)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    border = border[border > 0]
    return np.isin(labels, border)


def figure_mask(image: np.ndarray, params: MaskParams | None = None,
                pad: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
    """Binary mask of the mitotic figure around the crop centre, and whether it is the fallback disk.

    ``pad``: the image's ``padding_mask`` when the caller already has it.
    """
    from scipy import ndimage as ndi
    from skimage.color import rgb2hed
    from skimage.filters import threshold_multiotsu, threshold_otsu

    p = params or MaskParams()
    image = _check_image(image)
    pad = padding_mask(image) if pad is None else pad
    tissue = ~pad
    radius = _radius(image.shape[:2])
    if tissue.sum() < 64:  # nothing to threshold
        return _fallback(radius, pad, p), True

    h = rgb2hed(image)[..., 0]
    if pad.any():
        h = np.where(pad, np.median(h[tissue]), h)
    h = ndi.gaussian_filter(h, p.sigma)
    values = h[tissue]
    low = float(threshold_otsu(values))
    try:
        high = max(low, float(threshold_multiotsu(values, classes=3)[1]))
    except ValueError:  # too few distinct values (flat image)
        return _fallback(radius, pad, p), True
    top = float(np.percentile(values, 99.5))

    for _ in range(6):
        found = _select(h, tissue, low, high, radius, p)
        if found is None:
            return _fallback(radius, pad, p), True
        if found.sum() <= p.max_area:
            break
        low += (top - low) / 3  # merged with neighbouring nuclei: tighten and retry
        high = max(high, low)
    else:
        return _fallback(radius, pad, p), True
    if found.sum() < p.min_area:
        return _fallback(radius, pad, p), True
    return found, False


def _select(h, tissue, low, high, radius, p: MaskParams) -> np.ndarray | None:
    """The figure's pieces at one threshold pair, or None when no piece is near the centre."""
    from scipy import ndimage as ndi
    from skimage.filters import apply_hysteresis_threshold

    fg = apply_hysteresis_threshold(h, low, high) & tissue
    fg = _fill_holes(ndi.binary_opening(fg))
    labels, n = ndi.label(fg)
    if n == 0:
        return None
    flat = labels.ravel()
    areas = np.bincount(flat, minlength=n + 1)
    dark = np.bincount(flat, weights=h.ravel(), minlength=n + 1) / np.maximum(areas, 1)
    near = _label_min(flat, radius.ravel(), n)  # closest approach of each piece to the centre
    ids = np.flatnonzero(areas >= p.min_piece)
    ids = ids[ids > 0]
    if ids.size == 0:
        return None
    areas, dark, near = areas[ids], dark[ids], near[ids]

    seeds = near <= p.seed_radius
    if not seeds.any():
        reachable = (near <= p.search_radius) & (areas >= p.min_area / 2)
        if not reachable.any():
            return None
        seeds = np.zeros_like(reachable)
        seeds[np.argmin(np.where(reachable, near, np.inf))] = True
        extra_radius = p.search_radius  # centre between two daughter sets: look as far for the other
    else:
        extra_radius = p.piece_radius
    ref = dark[seeds].max()
    seeds |= (near <= extra_radius) & (areas >= p.min_area / 2) & (dark >= p.darkness_ratio * ref)
    core = np.isin(labels, ids[seeds])

    # small fragments right next to the figure (lagging chromosomes, split arms)
    gap = _label_min(flat, ndi.distance_transform_edt(~core).ravel(), n)[ids]
    out = core.copy()
    for k in np.flatnonzero(~seeds & (gap <= p.gap) & (near <= p.search_radius)):
        out |= labels == ids[k]
    return out


def _label_min(flat_labels: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Per-label minimum of ``values`` (index = label), without the sort that ndimage.minimum does."""
    out = np.full(n + 1, np.inf)
    np.minimum.at(out, flat_labels, values)
    return out


def _fill_holes(fg: np.ndarray) -> np.ndarray:
    """Fill holes: background pieces that do not touch the border (faster than binary_fill_holes)."""
    from scipy import ndimage as ndi

    labels, _ = ndi.label(~fg)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return fg | ~np.isin(labels, border)


@functools.lru_cache(maxsize=8)
def _radius(shape: tuple[int, int]) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.hypot(yy - (shape[0] - 1) / 2, xx - (shape[1] - 1) / 2)


def _fallback(radius: np.ndarray, pad: np.ndarray, p: MaskParams) -> np.ndarray:
    return (radius <= p.fallback_radius) & ~pad


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise MitotypeError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    return image


def centre_heatmap(mask: np.ndarray, sigma: float) -> np.ndarray:
    """float32 Gaussian (peak 1) at the centre of mass of the figure pixels (value 1; 255 = ignore).

    An empty mask (e.g. the figure moved out by augmentation) gives an all-zero map.
    """
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    fig = mask == 1
    out = np.zeros(mask.shape, dtype=np.float32)
    if not fig.any():
        return out
    ys, xs = np.nonzero(fig)
    cy, cx = ys.mean(), xs.mean()
    gy = np.exp(-((np.arange(mask.shape[0]) - cy) ** 2) / (2 * sigma**2))
    gx = np.exp(-((np.arange(mask.shape[1]) - cx) ** 2) / (2 * sigma**2))
    return np.outer(gy, gx).astype(np.float32)


def target_mask(image: np.ndarray, params: MaskParams | None = None) -> tuple[np.ndarray, bool]:
    """uint8 mask: 0 background, 1 figure, 255 zero-padding (ignored); and the fallback flag."""
    pad = padding_mask(image)
    mask, fallback = figure_mask(image, params, pad=pad)
    out = mask.astype(np.uint8)
    out[pad] = IGNORE
    return out, fallback


def disk_masks(images: np.ndarray, radius: float | None = None) -> np.ndarray:
    """The crudest figure mask: a disk of ``radius`` pixels (default ``MaskParams.fallback_radius``) at
    every crop's centre, zero-padding ignored. The baseline that measures what mask quality is worth."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise MitotypeError(f"disk_masks: expected images (N, H, W, 3) uint8, got {images.dtype} {images.shape}")
    radius = MaskParams().fallback_radius if radius is None else radius
    disk = (_radius(images.shape[1:3]) <= radius).astype(np.uint8)
    masks = np.repeat(disk[None], len(images), axis=0)
    for mask, image in zip(masks, images, strict=True):
        mask[padding_mask(image)] = IGNORE
    return masks


def _work(batch: tuple[np.ndarray, MaskParams]) -> tuple[np.ndarray, np.ndarray]:
    images, params = batch
    results = [target_mask(im, params) for im in images]
    return np.stack([m for m, _ in results]), np.array([f for _, f in results], dtype=bool)


def compute_masks(images: np.ndarray, params: MaskParams | None = None, progress: bool = False,
                  workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``target_mask`` for every image, in a process pool (the segmentation is CPU-bound Python/NumPy)."""
    params = params or MaskParams()
    n = len(images)
    masks = np.zeros(images.shape[:3], dtype=np.uint8)
    fallback = np.zeros(n, dtype=bool)
    if n == 0:
        return masks, fallback
    chunk = 32
    batches = [(images[i:i + chunk], params) for i in range(0, n, chunk)]
    workers = workers if workers is not None else min(len(os.sched_getaffinity(0)), 8, len(batches))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="figure masks", unit="img")
    if workers <= 1:
        results = map(_work, batches)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_work, batches)
    try:
        for i, (m, f) in enumerate(results):
            masks[i * chunk:i * chunk + len(m)] = m
            fallback[i * chunk:i * chunk + len(f)] = f
            if bar is not None:
                bar.update(len(m))
    finally:
        if pool is not None:
            pool.shutdown()
        if bar is not None:
            bar.close()
    return masks, fallback


def _image_key(image: np.ndarray, method: str) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(method.encode())
    digest.update(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def load_masks(figures: Sequence, images: np.ndarray, progress: bool = False,
               params: MaskParams | None = None, workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Masks (N, H, W) uint8 (0 background, 1 figure, 255 ignore) and fallback flags (N,) for the images.

    Cached on disk under ``cache_dir('masks')``, keyed per image by a hash of its pixels and the method
    (version + parameters): a changed image or method recomputes only what changed. Each call that computes
    something stores it as one shard file (one write instead of thousands of small synced ones).
    """
    from mitotype.data.cache import cache_dir
    from mitotype.io import atomic_write

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise MitotypeError(f"load_masks: expected images (N, H, W, 3) uint8, got {images.dtype} {images.shape}")
    if len(figures) != len(images):
        raise MitotypeError(f"load_masks: {len(figures)} figures but {len(images)} images")
    params = params or MaskParams()
    method = params.key()
    folder = cache_dir("masks", METHOD_VERSION)
    keys = [_image_key(im, method) for im in images]
    masks = np.zeros(images.shape[:3], dtype=np.uint8)
    fallback = np.zeros(len(images), dtype=bool)
    wanted: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        wanted.setdefault(key, []).append(i)
    for shard in sorted(folder.glob("*.npz")):
        if not wanted:
            break
        try:
            with np.load(shard) as cached:
                shard_keys = cached["keys"]
                hits = [(j, k) for j, k in enumerate(shard_keys.tolist()) if k in wanted]
                if not hits:
                    continue
                shard_masks, shard_fallback = cached["masks"], cached["fallback"]
        except (OSError, ValueError, KeyError, EOFError):  # damaged shard: ignore, recompute
            continue
        for j, key in hits:
            if shard_masks.shape[1:] != images.shape[1:3] or key not in wanted:
                continue
            for i in wanted.pop(key):
                masks[i], fallback[i] = shard_masks[j], shard_fallback[j]
    if wanted:
        todo = [indices[0] for indices in wanted.values()]
        new_masks, new_fallback = compute_masks(images[todo], params, progress=progress, workers=workers)
        for j, indices in enumerate(wanted.values()):
            masks[indices], fallback[indices] = new_masks[j], new_fallback[j]
        new_keys = np.array([keys[i] for i in todo])
        name = hashlib.blake2b("".join(new_keys.tolist()).encode(), digest_size=12).hexdigest()
        with atomic_write(folder / f"{name}.npz", "wb") as handle:
            np.savez_compressed(handle, keys=new_keys, masks=new_masks, fallback=new_fallback)
    return masks, fallback


def mask_stats(masks: np.ndarray, centre_radius: float = CENTRE_RADIUS) -> dict[str, np.ndarray]:
    """Per-mask figure area (pixels), centre hit, distance of the centre of mass from the crop centre
    (pixels; NaN when empty) and number of pieces (8-connected), for (N, H, W) masks with 1 = figure."""
    from scipy import ndimage as ndi

    masks = np.asarray(masks)
    radius = _radius(masks.shape[1:3])
    fig = masks == 1
    area = fig.sum(axis=(1, 2))
    hit = (fig & (radius <= centre_radius)).any(axis=(1, 2))
    yy, xx = np.mgrid[: masks.shape[1], : masks.shape[2]]
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = (fig * yy).sum(axis=(1, 2)) / area
        cx = (fig * xx).sum(axis=(1, 2)) / area
    distance = np.hypot(cy - (masks.shape[1] - 1) / 2, cx - (masks.shape[2] - 1) / 2)
    pieces = np.array([ndi.label(f, structure=np.ones((3, 3)))[1] for f in fig])
    return {"area": area, "centre_hit": hit, "com_distance": distance, "pieces": pieces}
