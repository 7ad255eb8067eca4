"""Reading figure crops as RGB uint8 arrays: PNG/JPEG/TIFF files and pages of multi-page TIFF stacks.

Conversions (documented in docs/DATA.md), applied the same way to every source:

- grayscale (1 channel, or gray + alpha) -> the gray value repeated in R, G and B;
- RGBA -> RGB, alpha dropped (not composited: crops are opaque tissue);
- palette / CMYK / YCbCr images -> RGB through Pillow;
- 16-bit (and 32-bit integer) -> 8-bit by scaling the full range: ``round(v * 255 / 65535)``; Pillow
  itself reduces 16-bit RGB PNGs to their high byte (``v >> 8``, at most one level off that);
- boolean -> 0/255; floats in [0, 1] -> ``round(v * 255)``; any other dtype or range is an error.

Sizes other than the model's are handled by :func:`fit_size` with an explicit policy.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mitotype.errors import MitotypeError

TIFF_SUFFIXES = (".tif", ".tiff")
# every image file a reader or `predict` picks up from a folder (the one list)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", *TIFF_SUFFIXES, ".bmp", ".webp")
POLICIES = ("center-crop", "resize", "error")


def _where(path: str | Path, page: int | None) -> str:
    return f"{path}" if page is None else f"{path} (page {page})"


def to_rgb8(array: np.ndarray, where: str = "") -> np.ndarray:
    """Convert a decoded image array to (H, W, 3) uint8 with the conversions listed in the module doc."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and min(a.shape[1:]) > 4:
        a = np.moveaxis(a, 0, -1)  # channels-first TIFF page
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 2, 3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise MitotypeError(f"{where}: unsupported image shape {tuple(array.shape)} (expected H x W [x 1-4 channels])")
    channels = a.shape[-1]
    if channels in (1, 2):  # gray (+ alpha)
        a = np.repeat(a[..., :1], 3, axis=-1)
    elif channels == 4:  # RGBA: alpha dropped
        a = a[..., :3]
    return _to_uint8(a, where)


def _to_uint8(a: np.ndarray, where: str) -> np.ndarray:
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.dtype.kind in "ui":
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise MitotypeError(f"{where}: integer pixel values outside 0..65535 ({a.min()}..{a.max()}); "
                                "expected 8- or 16-bit image")
        return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if a.dtype.kind == "f":
        if a.size and (not np.isfinite(a).all() or a.min() < 0 or a.max() > 1):
            raise MitotypeError(f"{where}: floating-point pixels outside [0, 1]; save the crop as 8-bit RGB")
        return np.round(a * 255).astype(np.uint8)
    raise MitotypeError(f"{where}: unsupported pixel type {a.dtype}")


def _read_pil(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im.load()  # decode now, so a truncated file fails here and not later
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        elif im.mode in ("PA", "La"):
            im = im.convert("RGBA")
        return np.asarray(im)


class _Errors(logging.Handler):
    """Collects tifffile's ERROR log records: where it stops reading a damaged file, it only logs."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def tiff_page_count(path: str | Path) -> int:
    """The number of pages of a TIFF file, every one of them complete; MitotypeError naming the file and its
    first bad page otherwise.

    tifffile stops at a page offset past the end of the file with nothing but a log line, so a truncated
    stack would read as a shorter one (4 entries for 16 figures); and a page whose pixel data run past the
    end of the file is cut off. Both are errors here, with the page they start at.
    """
    import tifffile

    path = Path(path)
    errors = _Errors()
    log = logging.getLogger("tifffile")
    log.addHandler(errors)
    try:
        with tifffile.TiffFile(path) as tif:
            pages = list(tif.pages)
            size = tif.filehandle.size
            for i, page in enumerate(pages):
                if any(o + c > size for o, c in zip(page.dataoffsets, page.databytecounts)):
                    raise MitotypeError(f"{path}: page {i} is cut off (its pixel data run past the end of the "
                                        f"file: truncated?); pages 0..{i - 1} are complete" if i else
                                        f"{path}: page 0 is cut off (its pixel data run past the end of the file: "
                                        "truncated?)")
    except MitotypeError:
        raise
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise MitotypeError(f"{path}: cannot read as a TIFF file ({type(exc).__name__}: {exc})") from None
    finally:
        log.removeHandler(errors)
    if errors.messages:
        n = len(pages)
        raise MitotypeError(f"{path}: page {n} cannot be read ({errors.messages[0].split('> ', 1)[-1]}): the file "
                            f"is truncated or corrupt after {n} complete page(s)")
    return len(pages)


def list_images(folder: str | Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The image files under ``folder`` (recursive; names starting with '.' skipped), sorted.

    Unlike ``Path.rglob``, which skips what it cannot read without a word, a sub-folder that cannot be listed
    and a broken link with an image suffix are errors: a result must never hold fewer images than the
    folder does without saying so.
    """
    def fail(exc: OSError) -> None:
        raise MitotypeError(f"{exc.filename}: cannot list this folder ({exc.strerror}); fix its permissions or "
                            "leave it out") from None

    found = []
    for dirpath, _, filenames in os.walk(folder, onerror=fail):
        for name in filenames:
            if name.startswith(".") or not name.lower().endswith(suffixes):
                continue
            path = Path(dirpath) / name
            if not path.is_file():
                raise MitotypeError(f"{path}: not a readable file (a broken symbolic link?)")
            found.append(path)
    return sorted(found)


def _read_tiff_pages(path: Path, pages: Sequence[int] | None = None) -> list[np.ndarray]:
    """Decode the given pages (all when None) of a TIFF file, opening it once."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        n = len(tif.pages)
        if n == 0:
            raise MitotypeError(f"{path}: TIFF file has no pages (empty stack)")
        wanted = range(n) if pages is None else pages
        out = []
        for p in wanted:
            if not 0 <= p < n:
                raise MitotypeError(f"{path}: page {p} does not exist (the file has {n} pages)")
            out.append(tif.pages[p].asarray())
        return out


def read_rgb(path: str | Path, page: int | None = None) -> np.ndarray:
    """One image (or one page of a TIFF stack) as (H, W, 3) uint8; MitotypeError naming the file if unreadable."""
    path = Path(path)
    where = _where(path, page)
    if not path.is_file():
        raise MitotypeError(f"{path}: image file not found")
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            array = _read_tiff_pages(path, [page or 0])[0]
        else:
            if page not in (None, 0):
                raise MitotypeError(f"{where}: only TIFF files have pages")
            array = _read_pil(path)
    except MitotypeError:
        raise
    except Exception as exc:  # Pillow/tifffile raise many types for corrupt or truncated files
        raise MitotypeError(f"{where}: cannot decode image ({type(exc).__name__}: {exc}); "
                            "the file is corrupt, truncated or not an image") from None
    return to_rgb8(array, where)


def fit_size(image: np.ndarray, size: int, policy: str = "center-crop", where: str = "") -> np.ndarray:
    """Bring an (H, W, 3) image to (size, size, 3).

    ``center-crop``: crop larger sides around the centre and pad smaller ones with black (zero) borders,
    the convention AMi-Br uses for crops at a slide's edge (the targets treat it as ignore), so the figure
    stays centred at the original scale. ``resize``: bilinear (antialiased) resize to size x size, aspect
    ratio not kept. ``error``: MitotypeError naming ``where``.
    """
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    if policy == "error":
        raise MitotypeError(f"{where}: image is {h}x{w} pixels, expected {size}x{size} "
                            "(use the center-crop or resize size policy to convert)")
    if policy == "resize":
        from PIL import Image

        return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
    if policy != "center-crop":
        raise MitotypeError(f"unknown size policy {policy!r}; valid: {', '.join(POLICIES)}")
    out = np.zeros((size, size, image.shape[2]), dtype=image.dtype)
    # source window [sy, sy+ch) lands at [dy, dy+ch) in the output, centred on both sides
    ch, cw = min(h, size), min(w, size)
    sy, sx = (h - ch) // 2, (w - cw) // 2
    dy, dx = (size - ch) // 2, (size - cw) // 2
    out[dy:dy + ch, dx:dx + cw] = image[sy:sy + ch, sx:sx + cw]
    return out


def load_images(figures: Sequence, size: int = 128, policy: str = "center-crop", progress: bool = False,
                workers: int | None = None) -> np.ndarray:
    """All figures' images as (N, size, size, 3) uint8, in the order given.

    Files are decoded in a thread pool (Pillow and tifffile release the GIL while decoding); every TIFF
    stack is opened once and all its needed pages are read together.
    """
    if policy not in POLICIES:
        raise MitotypeError(f"unknown size policy {policy!r}; valid: {', '.join(POLICIES)}")
    out = np.empty((len(figures), size, size, 3), dtype=np.uint8)
    # one job per file: a plain image, or a stack with all the pages wanted from it
    jobs: dict[str, list[tuple[int, int | None]]] = defaultdict(list)
    for i, fig in enumerate(figures):
        jobs[str(fig.path)].append((i, fig.page))

    def work(item: tuple[str, list[tuple[int, int | None]]]) -> int:
        path, wanted = item
        if Path(path).suffix.lower() in TIFF_SUFFIXES and len(wanted) > 1:
            pages = [p or 0 for _, p in wanted]
            try:
                arrays = _read_tiff_pages(Path(path), sorted(set(pages)))
            except MitotypeError:
                raise
            except Exception as exc:
                raise MitotypeError(f"{path}: cannot decode TIFF stack ({type(exc).__name__}: {exc})") from None
            by_page = dict(zip(sorted(set(pages)), arrays))
            for (i, _), p in zip(wanted, pages):
                where = _where(path, p)
                out[i] = fit_size(to_rgb8(by_page[p], where), size, policy, where)
        else:
            for i, page in wanted:
                out[i] = fit_size(read_rgb(path, page), size, policy, _where(path, page))
        return len(wanted)

    items = list(jobs.items())
    n_workers = workers or min(16, (os.cpu_count() or 1) * 4)
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        results = pool.map(work, items)
        if progress:
            from tqdm.auto import tqdm

            with tqdm(total=len(figures), desc="reading images", unit="img") as bar:
                for n in results:
                    bar.update(n)
        else:
            for _ in results:
                pass
    return out
