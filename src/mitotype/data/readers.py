"""Readers: one function per data-set layout, each returning a list of :class:`Figure` (images unread).

The spec grammar (``mitotype.data.spec``) looks readers up in :data:`READERS`, which also says which
positional arguments and ``key=value`` options each one takes, and which values an option allows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mitotype.data.figure import LABELS, Figure
from mitotype.data.images import IMAGE_SUFFIXES
from mitotype.errors import MitotypeError

# accepted label spellings (case-insensitive) -> class index
LABEL_WORDS = {"0": 0, "1": 1, "normal": 0, "atypical": 1, "nmf": 0, "amf": 1}


def parse_label(value: object, where: str) -> int:
    text = str(value).strip().lower()
    if text in LABEL_WORDS:
        return LABEL_WORDS[text]
    raise MitotypeError(f"{where}: unknown label {value!r}; accepted (case-insensitive): "
                        "0/1, normal/atypical, NMF/AMF")


def _check_complete_rows(path: Path, what: str) -> None:
    """pandas fills a short row with empty cells, so a table cut off mid-row would read as valid rows."""
    import csv

    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise MitotypeError(f"{path}: cannot read {what} as UTF-8 text ({type(exc).__name__})") from None
    if text and not text.endswith(("\n", "\r")):
        raise MitotypeError(f"{path}: {what} ends without a line break, as a truncated file does; if it is "
                            "complete, add a newline at its end")
    rows = csv.reader(text.splitlines())
    header = next(rows, [])
    for number, row in enumerate(rows, start=2):
        if row and len(row) != len(header):
            raise MitotypeError(f"{path}: line {number} of {what} has {len(row)} fields, the header has "
                                f"{len(header)} (truncated or malformed file?)")


def _read_csv(path: Path, required: tuple[str, ...], what: str):
    import pandas as pd

    if not path.is_file():
        raise MitotypeError(f"{path}: {what} not found")
    _check_complete_rows(path, what)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise MitotypeError(f"{path}: cannot read {what} as CSV ({type(exc).__name__}: {exc})") from None
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise MitotypeError(f"{path}: {what} lacks column(s) {', '.join(missing)}; "
                            f"it has {', '.join(map(str, table.columns))}")
    if table.empty:
        raise MitotypeError(f"{path}: {what} has no rows")
    return table


def _number(value: str, where: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise MitotypeError(f"{where}: {value!r} is not a number") from None


def _listdir(folder: str | Path) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError as exc:
        raise MitotypeError(f"{folder}: cannot list this folder ({exc.strerror})") from None


def _check_label_conflicts(figures: list[Figure], rows: list[int], where: str) -> None:
    """The same image (and page) listed twice must carry one label: otherwise whichever row came first would
    win without a word."""
    first: dict[tuple[str, int | None], int] = {}
    for i, fig in enumerate(figures):
        j = first.setdefault((fig.path, fig.page), i)
        if figures[j].label != fig.label:
            page = "" if fig.page is None else f" page {fig.page}"
            raise MitotypeError(f"{where}: lines {rows[j]} and {rows[i]} list {fig.path}{page} with conflicting "
                                f"labels ({LABELS[figures[j].label]} and {LABELS[fig.label]}); keep one of them")


def _check_files_exist(paths: list[str], where: str) -> None:
    """One directory listing per folder instead of one stat per file (3,720 files: milliseconds)."""
    listing: dict[str, set[str]] = {}
    missing = []
    for p in paths:
        folder, name = os.path.split(p)
        if folder not in listing:
            listing[folder] = set(_listdir(folder)) if os.path.isdir(folder) else set()
        if name not in listing[folder]:
            missing.append(p)
    if missing:
        raise MitotypeError(f"{where}: {len(missing)} of {len(paths)} listed image(s) are missing, "
                            f"e.g. {missing[0]}")


# --- AMi-Br -----------------------------------------------------------------------------------------

AMIBR_SCANNERS = ((1, 50, "MIDOG21-HamamatsuXR"), (51, 100, "MIDOG21-HamamatsuS360"),
                  (101, 150, "MIDOG21-AperioCS2"))


def amibr_scanner(dataset: str, slide: str) -> str:
    """Domain of an AMi-Br slide: MIDOG21's scanner by slide number, or TUPAC16."""
    if dataset == "TUPAC16":
        return "TUPAC16"
    number = int(Path(slide).stem)
    for low, high, name in AMIBR_SCANNERS:
        if low <= number <= high:
            return name
    raise ValueError(f"MIDOG21 slide {slide} outside 001-150")


def _truthy(value: str, where: str) -> int:
    text = value.strip().lower()
    if text in ("true", "1", "yes"):
        return 1
    if text in ("false", "0", "no"):
        return 0
    raise MitotypeError(f"{where}: expected True/False, got {value!r}")


def read_amibr(root: str, split: str | None = None, domain: str = "scanner") -> list[Figure]:
    """AMi-Br: ``ROOT/AMI-BR.csv`` + ``ROOT/patches/{atypical,normal}/{dataset}_{uid}.png``, published split
    from ``ROOT/amibr_train_split.csv`` (test = every figure not listed there)."""
    base = Path(root)
    csv = base / "AMI-BR.csv"
    if not csv.is_file():
        raise MitotypeError(f"{csv}: not found; expected the AMi-Br layout (AMI-BR.csv + patches/) in {base} "
                            "(get it with: mitotype data download amibr --to DIR)")
    cols = ("slide", "dataset", "uid", "x", "y", "expert1_label", "expert2_label", "expert1_atypical",
            "expert2_atypical", "expert3_atypical", "majority_atypical")
    table = _read_csv(csv, cols, "AMi-Br label table")
    split_csv = base / "amibr_train_split.csv"
    train_names: set[str] | None = None
    if split_csv.is_file():
        train_names = set(_read_csv(split_csv, ("dataset_uid",), "AMi-Br train split")["dataset_uid"])
    elif split is not None:
        raise MitotypeError(f"{split_csv}: not found; the published split needs it")
    figures = []
    for row_no, row in enumerate(table.to_dict("records"), start=2):
        where = f"{csv} line {row_no}"
        label = _truthy(row["majority_atypical"], where)
        name = f"{row['dataset']}_{row['uid']}.png"
        try:
            scanner = amibr_scanner(row["dataset"], row["slide"])
        except ValueError as exc:
            raise MitotypeError(f"{where}: unknown AMi-Br source ({row['dataset']!r}, slide {row['slide']!r}): "
                                f"{exc}") from None
        votes = tuple(_truthy(row[f"expert{k}_atypical"], where) for k in (1, 2, 3))
        # subtype: the first of the two subtype-labelling experts whose atypical call matches the majority
        subtype = next((row[f"expert{k}_label"] for k in (1, 2) if votes[k - 1] == label), None)
        meta = {"source": row["dataset"], "scanner": scanner, "tumor": "human breast cancer",
                "species": "Human", "expert1_label": row["expert1_label"], "expert2_label": row["expert2_label"]}
        figures.append(Figure(
            path=str(base / "patches" / ("atypical" if label else "normal") / name),
            label=label, domain=meta[domain], group=f"{row['dataset']}/{row['slide']}",
            slide=row["slide"], x=_number(row["x"], where), y=_number(row["y"], where),
            subtype=subtype, votes=votes,
            split=None if train_names is None else ("train" if name in train_names else "test"),
            source="amibr", meta=meta))
    _check_files_exist([f.path for f in figures], f"{csv}")
    if split is not None:
        figures = [f for f in figures if f.split == split]
    return figures


# --- MIDOG 2025 track 2 -----------------------------------------------------------------------------

MIDOG25_DOMAINS = {"tumor": "Tumor", "scanner": "Scanner", "lab": "Origin", "species": "Species"}
# spelling variants in the official table -> one name (451 rows say "Hamammatsu XR")
MIDOG25_SPELLING = {"Hamammatsu XR": "Hamamatsu XR"}


def read_midog25(csv: str, image_dir: str, domain: str = "tumor") -> list[Figure]:
    """MIDOG 2025 atypical training set: label CSV + a folder of ``image_id`` PNGs."""
    csv_path, images = Path(csv), Path(image_dir)
    cols = ("image_id", "filename", "coordinateX", "coordinateY", *MIDOG25_DOMAINS.values(),
            "expert1", "expert2", "expert3", "majority")
    table = _read_csv(csv_path, cols, "MIDOG25 label table")
    if not images.is_dir():
        raise MitotypeError(f"{images}: image folder not found (the MIDOG25 PNGs; doi:10.5281/zenodo.16044804)")
    figures = []
    for row_no, row in enumerate(table.to_dict("records"), start=2):
        where = f"{csv_path} line {row_no}"
        meta = {key: MIDOG25_SPELLING.get(row[col], row[col]) for key, col in MIDOG25_DOMAINS.items()}
        votes = tuple(parse_label(row[f"expert{k}"], where) for k in (1, 2, 3) if row[f"expert{k}"].strip())
        figures.append(Figure(
            path=str(images / row["image_id"]), label=parse_label(row["majority"], where),
            domain=meta[domain], group=row["filename"], slide=row["filename"],
            x=_number(row["coordinateX"], where), y=_number(row["coordinateY"], where),
            votes=votes or None, source="midog25", meta=meta))
    _check_label_conflicts(figures, list(range(2, len(figures) + 2)), str(csv_path))
    _check_files_exist([f.path for f in figures], f"{csv_path} (images in {images})")
    return figures


# --- folder and manifest ------------------------------------------------------------------------------

def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


def read_folder(root: str) -> list[Figure]:
    """``ROOT/{Atypical,Normal}/*.png`` (class folder names case-insensitive); domain = ROOT's name, and each
    image is its own group (the layout carries no slide)."""
    base = Path(root)
    if not base.is_dir():
        raise MitotypeError(f"{base}: folder not found")
    domain = base.resolve().name
    figures = []
    subs = sorted(base / n for n in _listdir(base) if (base / n).is_dir() and not n.startswith((".", "__")))
    for sub in subs:
        if sub.name.lower() not in ("atypical", "normal"):
            raise MitotypeError(f"{sub}: unknown class folder {sub.name!r}; expected Atypical and Normal "
                                "(case-insensitive)")
        label = LABEL_WORDS[sub.name.lower()]
        for name in sorted(_listdir(sub)):
            if _is_image(name):
                path = str(sub / name)
                figures.append(Figure(path=path, label=label, domain=domain, group=path, source="folder"))
    if not figures:
        raise MitotypeError(f"{base}: no images found; expected {base}/Atypical/*.png and {base}/Normal/*.png")
    return figures


def read_manifest(csv: str) -> list[Figure]:
    """A CSV with ``path,label[,domain,group,page,slide,x,y]``; relative paths are relative to the CSV."""
    csv_path = Path(csv)
    table = _read_csv(csv_path, ("path", "label"), "manifest")
    default_domain = csv_path.stem
    figures = []
    for row_no, row in enumerate(table.to_dict("records"), start=2):
        where = f"{csv_path} line {row_no}"
        if not row["path"].strip():
            raise MitotypeError(f"{where}: empty path")
        path = Path(row["path"].strip())
        path = str(path if path.is_absolute() else csv_path.parent / path)
        has = {k: bool(str(row.get(k, "")).strip()) for k in ("domain", "group", "page", "slide", "x", "y")}
        figures.append(Figure(
            path=path, label=parse_label(row["label"], where),
            domain=row["domain"].strip() if has["domain"] else default_domain,
            group=row["group"].strip() if has["group"] else path,
            page=int(_number(row["page"], where)) if has["page"] else None,
            slide=row["slide"].strip() if has["slide"] else None,
            x=_number(row["x"], where) if has["x"] else None,
            y=_number(row["y"], where) if has["y"] else None,
            source="manifest"))
    _check_label_conflicts(figures, list(range(2, len(figures) + 2)), str(csv_path))
    _check_files_exist(sorted({f.path for f in figures}), str(csv_path))
    return figures


# --- TIFF stacks (MIDOG 2025 track-2 input) -------------------------------------------------------------

def _page_count(path: Path) -> int:
    from mitotype.data.images import tiff_page_count

    return tiff_page_count(path)  # every page complete, or an error naming the first bad one


def _load_ground_truth(path: Path) -> dict[str, dict]:
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        raise MitotypeError(f"{path}: ground-truth JSON not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MitotypeError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("image"), str)
                                                 and isinstance(e.get("labels"), list)
                                                 and isinstance(e.get("tumordomains", []), (list, type(None)))
                                                 for e in entries):
        raise MitotypeError(f"{path}: expected the track-2 ground-truth format, a list of "
                            '{"image": ..., "labels": [...], "tumordomains": [...]}')
    return {e["image"]: e for e in entries}


def read_stack(file_or_dir: str, gt: str | None = None) -> list[Figure]:
    """Multi-page TIFF stacks, one figure per page; unlabelled unless ``gt`` names a ground-truth JSON in the
    official track-2 evaluator's format. Domain = the tumour domain there, else the stack's folder name;
    group = the stack file."""
    base = Path(file_or_dir)
    if base.is_dir():
        stacks = sorted(p for p in base.iterdir() if p.is_file() and p.suffix.lower() in (".tif", ".tiff"))
        if not stacks:
            raise MitotypeError(f"{base}: no .tif/.tiff stacks in this folder")
    elif base.is_file():
        stacks = [base]
    else:
        raise MitotypeError(f"{base}: stack file or folder not found")
    truth = _load_ground_truth(Path(gt)) if gt else None
    figures = []
    for stack in stacks:
        n = _page_count(stack)
        if n == 0:
            raise MitotypeError(f"{stack}: TIFF file has no pages (empty stack)")
        labels: list[int | None] = [None] * n
        domains = [stack.parent.resolve().name] * n
        if truth is not None:
            entry = truth.get(stack.name)
            if entry is None:
                raise MitotypeError(f"{gt}: has no entry for {stack.name} (it lists {len(truth)} stacks)")
            if len(entry["labels"]) != n:
                raise MitotypeError(f"{gt}: {stack.name} has {len(entry['labels'])} labels but the stack has "
                                    f"{n} pages")
            labels = [parse_label(v, f"{gt} ({stack.name} page {i})") for i, v in enumerate(entry["labels"])]
            if entry.get("tumordomains") is not None:
                if len(entry["tumordomains"]) != n:
                    raise MitotypeError(f"{gt}: {stack.name} has {len(entry['tumordomains'])} tumordomains but "
                                        f"the stack has {n} pages")
                domains = [str(d) for d in entry["tumordomains"]]
        for page in range(n):
            figures.append(Figure(path=str(stack), label=labels[page], domain=domains[page], group=stack.name,
                                  page=page, source="stack"))
    return figures


# --- registry ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reader:
    """How a spec names a reader: its positional arguments and its options (None = any value)."""

    read: Callable[..., list[Figure]]
    args: tuple[str, ...]
    options: dict[str, tuple[str, ...] | None]
    example: str


READERS: dict[str, Reader] = {
    "amibr": Reader(read_amibr, ("PATH",), {"split": ("train", "test"), "domain": ("scanner", "source")},
                    "amibr:../shared/data/amibr:split=train"),
    "midog25": Reader(read_midog25, ("CSV", "IMAGEDIR"), {"domain": tuple(MIDOG25_DOMAINS)},
                      "midog25:MIDOG25_labels.csv:MIDOG25_Binary_Classification_Train_Set:domain=scanner"),
    "folder": Reader(read_folder, ("PATH",), {}, "folder:external/ROOT"),
    "manifest": Reader(read_manifest, ("CSV",), {}, "manifest:figures.csv"),
    "stack": Reader(read_stack, ("FILE_OR_DIR",), {"gt": None}, "stack:input/stack_5.tiff:gt=ground_truth.json"),
}
