"""``mitotype predict``: P(atypical) for figure crops, folders, TIFF stacks or slide positions.

Inputs become one list of figures (a crop file, a page of a stack, or a position on a slide), their crops
are read at the model's crop size, and ``models.inference.predict_proba`` gives P(atypical) (mean over
ensemble members and TTA views). One output row per figure::

    source, index, x, y, p_atypical, class

``index`` is the page of a stack (0 for a single crop) or the row of the coordinates CSV; ``x``/``y`` are
level-0 pixels for slide positions and empty otherwise. ``class`` compares ``p_atypical`` with the model's
stored threshold (the mean of the members' thresholds for an ensemble). A calibrated model file
(``mitotype calibrate``) adds ``prediction_set`` (normal / atypical / both / none at ``--alpha``) and
``shift_score`` (``models.shift``; 1.0 = the in-domain 95th percentile) after them (``models.trust``).

Crops are decoded chunk by chunk in a background thread while the network runs on the previous chunk,
one batch per core (Pillow, tifffile and onnxruntime release the GIL, so all of it overlaps). On CPU the default
backend is onnxruntime on the model's cached ONNX graph (``models.inference``, ``models.onnx``).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mitotype.data.figure import LABELS, Figure
from mitotype.data.images import IMAGE_SUFFIXES
from mitotype.errors import MitotypeError
from mitotype.models.inference import ensemble_threshold, resolve_device  # their one owner

FIELDS = ("source", "index", "x", "y", "p_atypical", "class")
TRUST_FIELDS = ("prediction_set", "shift_score")  # appended when the model file carries the references
FORMATS = (".csv", ".json", ".geojson")
# An input this many times larger than the crop is a slide or a field of view, not a figure crop:
# centre-cropping it would classify an arbitrary spot, so it is refused with a hint.
MAX_CROP_FACTOR = 4
# Crops decoded ahead of the network: a few batches, so the overlap starts early and memory stays small.
CHUNK = 512


def _image_files(path: Path) -> list[Path]:
    if path.is_dir():
        from mitotype.data.images import list_images

        files = list_images(path, IMAGE_SUFFIXES)
        if not files:
            raise MitotypeError(f"{path}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return files
    if not path.is_file():
        raise MitotypeError(f"{path}: no such file or folder")
    return [path]


def _pages(path: Path) -> list[tuple[int, int]]:
    """(height, width) of every page of an image file, from its header only."""
    if path.suffix.lower() in (".tif", ".tiff"):
        from mitotype.data.images import tiff_page_count

        tiff_page_count(path)  # a truncated stack is an error naming its first bad page, not fewer pages
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                return [tuple(p.shape[:2]) if p.shape[-1] in (1, 3, 4) or len(p.shape) == 2
                        else tuple(p.shape[-2:]) for p in tif.pages]
        from PIL import Image

        with Image.open(path) as im:
            return [(im.height, im.width)]
    except Exception as exc:  # Pillow/tifffile raise many types for non-images
        raise MitotypeError(f"{path}: cannot read as an image ({type(exc).__name__}: {exc})") from None


def collect_figures(inputs: Sequence[str | Path], crop_size: int) -> list[Figure]:
    """Image files, folders (recursive) and multi-page TIFF stacks -> one Figure per crop or page."""
    if not inputs:
        raise MitotypeError("no input given: name image files, folders or TIFF stacks (or --slide/--coords)")
    figures = []
    for item in inputs:
        for path in _image_files(Path(item)):
            pages = _pages(path)
            if not pages:
                raise MitotypeError(f"{path}: TIFF file has no pages")
            for page, (h, w) in enumerate(pages):
                if max(h, w) > MAX_CROP_FACTOR * crop_size:
                    raise MitotypeError(
                        f"{path}: image is {w}x{h} pixels, far larger than a figure crop ({crop_size}x{crop_size}); "
                        "for a whole-slide image give the figure positions: --slide SLIDE --coords CSV"
                    )
                if len(pages) > 1 and (h, w) != pages[0]:
                    raise MitotypeError(
                        f"{path}: pages of different sizes ({pages[0][1]}x{pages[0][0]} and {w}x{h}): a pyramidal "
                        "slide, not a stack of crops; use --slide SLIDE --coords CSV"
                    )
                figures.append(Figure(path=str(path), label=None, domain="", group=str(path),
                                      page=page if len(pages) > 1 else None, source="predict"))
    return figures


def load_models(model_paths: Sequence[str], device: str, backend: str = "torch",
                threads: int | None = None) -> list[Any]:
    """The models, opened for ``backend``: from their cached ONNX graphs (no torch import) when it
    resolves to onnxruntime, else as LoadedModel with the torch network built."""
    from mitotype.models.inference import resolve_backend, split_threads

    if not model_paths:
        raise MitotypeError("no model given")
    if resolve_backend(backend, device) == "onnx":
        from mitotype.models.onnx import open_model

        intra, _ = split_threads(backend, device, threads)  # the sessions Predictor would open
        return [open_model(m, device=device, threads=intra) for m in model_paths]
    from mitotype.models.modelfile import load_model

    return [load_model(m, device=device) for m in model_paths]


def check_sources(inputs: Sequence[str | Path], slide: Any, coords: Any) -> None:
    """Crops or a slide with positions, not both, not neither (checked before any model is loaded)."""
    if (slide is None) != (coords is None):
        raise MitotypeError("--slide and --coords go together: the slide and the CSV of figure positions")
    if slide is not None and inputs:
        raise MitotypeError("give either INPUT files/folders or --slide with --coords, not both")
    if slide is None and not inputs:
        raise MitotypeError("no input given: name image files, folders or TIFF stacks (or --slide/--coords)")


def predict_figures(predictor: Any, figures: Sequence[Figure], crop_size: int, batch_size: int = 64,
                    progress: bool = False, workers: int | None = None) -> Any:
    """``Prediction`` (P(atypical), features) of ``figures``: chunk k+1 is decoded in a background thread
    while ``predictor`` (``models.inference.Predictor``, its batches side by side on the cores) runs on
    chunk k. Chunks are whole batches of one call on all crops."""
    from concurrent.futures import ThreadPoolExecutor

    from mitotype.data.images import load_images

    batch_size = predictor.batch_for(len(figures), batch_size)
    chunk = batch_size * max(1, CHUNK // batch_size)
    parts = [figures[i:i + chunk] for i in range(0, len(figures), chunk)]
    if not parts:
        return _join([], len(predictor.members))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=predictor.steps(len(figures), batch_size), desc="predict", unit="batch")
    out = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        def read(part: Sequence[Figure]):
            return pool.submit(load_images, part, crop_size, "center-crop", False, workers)

        pending = read(parts[0])
        for k in range(len(parts)):
            images = pending.result()
            if k + 1 < len(parts):
                pending = read(parts[k + 1])
            out.append(predictor.run(images, batch_size, on_batch=bar.update if bar else None))
    if bar is not None:
        bar.close()
    return _join(out, len(predictor.members))


def _join(chunks: Sequence[Any], n_models: int) -> Any:
    """One Prediction from the chunks' (features stay None for a model that gave none)."""
    from mitotype.models.inference import Prediction

    if not chunks:
        return Prediction(np.zeros(0, dtype=np.float32), [None] * n_models)
    feats = [None if any(c.features[i] is None for c in chunks)
             else np.concatenate([c.features[i] for c in chunks]) for i in range(n_models)]
    return Prediction(np.concatenate([c.probs for c in chunks]), feats)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n: part i of n (0-based, as Slurm's ``SLURM_ARRAY_TASK_ID``)."""
    index, sep, count = str(text).partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i, n = -1, 0
    if not sep or not 0 <= i < n:
        raise MitotypeError(f"--shard {text!r}: expected i/n with 0 <= i < n, e.g. 0/8 ... 7/8")
    return i, n


def shard_range(total: int, shard: tuple[int, int] | None) -> range:
    """The items of part i of n: a contiguous block of the input order (``n`` blocks whose sizes differ by at
    most one), so the parts' outputs concatenated in order are the unsharded output, row for row."""
    if shard is None:
        return range(total)
    i, n = shard
    return range(i * total // n, (i + 1) * total // n)


def gather_images(
    inputs: Sequence[str | Path],
    crop_size: int,
    mpp: float,
    slide: str | Path | None = None,
    coords: str | Path | None = None,
    slide_mpp: float | None = None,
    progress: bool | None = None,
    shard: tuple[int, int] | None = None,
) -> tuple[np.ndarray, list[str], list[int], np.ndarray | None]:
    """Crops (N, crop, crop, 3) uint8 with their source, index and slide positions (None for crops);
    ``shard``: only part i of n of them (:func:`shard_range`)."""
    from mitotype.data.images import load_images

    check_sources(inputs, slide, coords)
    if slide is not None:
        from mitotype.predict.slide import read_coords, read_slide_crops

        xy = read_coords(coords)
        rows = shard_range(len(xy), shard)
        xy = xy[rows.start:rows.stop]
        show = len(xy) >= 64 if progress is None else progress
        images = read_slide_crops(slide, xy, crop_size, mpp, slide_mpp, progress=show)
        return images, [str(slide)] * len(xy), list(rows), xy
    figures = collect_figures(inputs, crop_size)
    figures = [figures[k] for k in shard_range(len(figures), shard)]
    show = len(figures) >= 64 if progress is None else progress
    images = load_images(figures, size=crop_size, policy="center-crop", progress=show)
    return images, [f.path for f in figures], [f.page or 0 for f in figures], None


def _predict_all(predictor: Any, images: np.ndarray, batch_size: int, progress: bool) -> Any:
    if not progress:
        return predictor.run(images, batch_size)
    from tqdm.auto import tqdm

    with tqdm(total=predictor.steps(len(images), batch_size), desc="predict", unit="batch") as bar:
        return predictor.run(images, batch_size, on_batch=bar.update)


def make_rows(sources: Sequence[str], indices: Sequence[int], probs: np.ndarray, threshold: float,
              coords: np.ndarray | None = None, sets: Sequence[str] | None = None,
              shift: np.ndarray | None = None) -> list[dict[str, Any]]:
    rows = []
    for i, (source, index, p) in enumerate(zip(sources, indices, probs)):
        x, y = (None, None) if coords is None else (float(coords[i, 0]), float(coords[i, 1]))
        row = {"source": source, "index": int(index), "x": x, "y": y, "p_atypical": float(p),
               "class": LABELS[int(p >= threshold)]}
        if sets is not None:
            row["prediction_set"] = sets[i]
        if shift is not None:
            row["shift_score"] = float(shift[i])
        rows.append(row)
    return rows


def fields_of(rows: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """FIELDS, then the trust columns the rows carry."""
    return FIELDS + tuple(k for k in TRUST_FIELDS if rows and k in rows[0])


def predict(
    inputs: Sequence[str | Path] = (),
    model_paths: Sequence[str] = ("default",),
    tta: bool = False,
    batch_size: int = 64,
    device: str = "auto",
    backend: str = "auto",
    slide: str | Path | None = None,
    coords: str | Path | None = None,
    slide_mpp: float | None = None,
    progress: bool | None = None,
    threads: int | None = None,
    shard: tuple[int, int] | None = None,
    alpha: float | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Predict every figure; returns (rows, info) where info names the models, threshold and settings.

    ``backend``: auto (onnxruntime on CPU, torch on GPUs), onnx, torch; ``threads``: the network's
    intra-op threads (None: OMP_NUM_THREADS, else all cores); ``shard=(i, n)``: only part i of n of the
    figures (:func:`shard_range`), for spreading one job over processes or machines. ``alpha``: error level
    of the prediction sets (None: 0.1; given for a model without a conformal reference: an error);
    ``info["shift_warning"]`` is the batch's warning line (``models.shift.batch_warning``) or None."""
    from mitotype.models import shift as S
    from mitotype.models import trust
    from mitotype.models.inference import Predictor

    trust.check_alpha(alpha)
    check_sources(inputs, slide, coords)
    device = resolve_device(device)
    models = load_models(model_paths, device, backend, threads)
    mpps = {m.config.model.mpp for m in models}
    if slide is not None and len(mpps) > 1:
        raise MitotypeError(f"ensemble members were trained at different resolutions {sorted(mpps)} µm/px; "
                            "a slide is read at one resolution")
    crop_size = max(m.config.model.crop_size for m in models)
    predictor = Predictor(models, backend, device, tta=tta, threads=threads, features=trust.wants_features(models))
    trust.prediction_sets(models, np.zeros(0), alpha)  # an --alpha without a reference fails before any work
    if slide is not None:
        images, sources, indices, xy = gather_images(inputs, crop_size, models[0].config.model.mpp, slide,
                                                     coords, slide_mpp, progress, shard)
        show = len(images) >= 64 if progress is None else progress
        predicted = _predict_all(predictor, images, batch_size, show)
    else:
        figures = collect_figures(inputs, crop_size)
        figures = [figures[k] for k in shard_range(len(figures), shard)]
        show = len(figures) >= 64 if progress is None else progress
        predicted = predict_figures(predictor, figures, crop_size, batch_size, show, workers=threads or None)
        sources, indices, xy = [f.path for f in figures], [f.page or 0 for f in figures], None
    probs = predicted.probs
    sets = trust.prediction_sets(models, probs, alpha)
    shift = trust.shift_scores(models, predicted.features)
    threshold = ensemble_threshold(models)
    info = {"models": [str(m) for m in model_paths], "thresholds": [float(m.threshold) for m in models],
            "threshold": threshold, "tta": predictor.tta, "backend": predictor.backend, "crop_size": crop_size,
            "mpp": models[0].config.model.mpp, "slide": str(slide) if slide else None,
            "slide_mpp": slide_mpp, "shard": f"{shard[0]}/{shard[1]}" if shard else None,
            "alpha": trust.check_alpha(alpha) if sets is not None else None,
            "shift_median": float(np.median(shift)) if shift is not None and len(shift) else None,
            "shift_warning": S.batch_warning(shift) if shift is not None else None}
    return make_rows(sources, indices, probs, threshold, xy, sets, shift), info


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if not value.is_integer() or abs(value) < 1 else f"{value:g}"
    return str(value)


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    fields = fields_of(rows)
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row[k] is None else row[k]) for k in fields})
    return buffer.getvalue()


def table_text(rows: Sequence[dict[str, Any]], threshold: float) -> str:
    """A readable table for the terminal (x, y only for slide positions), with a one-line summary."""
    fields = [k for k in fields_of(rows) if k not in ("x", "y") or any(r[k] is not None for r in rows)]
    shown = [[_fmt(r[k]) for k in fields] for r in rows]
    widths = [max([len(k)] + [len(s[i]) for s in shown]) for i, k in enumerate(fields)]
    right = [k in ("index", "x", "y", "p_atypical", "shift_score") for k in fields]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)).rstrip()

    lines = [line(fields)] + [line(s) for s in shown]
    n_atyp = sum(r["class"] == "atypical" for r in rows)
    lines.append(f"{len(rows)} figures: {n_atyp} atypical, {len(rows) - n_atyp} normal "
                 f"(threshold {threshold:.3f} on p_atypical)")
    return "\n".join(lines) + "\n"


def check_output(path: str | Path, slide: bool) -> None:
    """Refuse an unusable output path before any work is done."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise MitotypeError(f"{path}: unknown output format {suffix or '(none)'}; use one of {', '.join(FORMATS)}")
    if suffix == ".geojson" and not slide:
        raise MitotypeError(f"{path}: GeoJSON needs figure positions on a slide (--slide SLIDE --coords CSV)")


def write_output(path: str | Path, rows: Sequence[dict[str, Any]], info: dict[str, Any]) -> None:
    """CSV, JSON (rows + models + provenance) or GeoJSON (slides only) by the suffix, atomically."""
    from mitotype.io import provenance, write_json, write_text

    check_output(path, bool(info.get("slide")))
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        write_text(path, csv_text(rows))
    elif suffix == ".json":
        write_json(path, {"predictions": list(rows), **info, "provenance": provenance()})
    else:
        from mitotype.predict.geojson import write_geojson

        write_geojson(path, rows, info["slide"], info.get("square_side"))
