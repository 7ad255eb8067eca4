"""Fetch AMi-Br from its public GitHub home, unpack it into the layout the ``amibr`` reader expects, verify it.

Offline users download the archive elsewhere and pass it with ``--archive`` (nothing else is fetched then,
except the split CSV, which is optional).
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from mitotype.errors import MitotypeError
from mitotype.io import atomic_write

AMIBR_ARCHIVE_URL = "https://github.com/DeepMicroscopy/AMi-Br/archive/HEAD.zip"  # default branch
AMIBR_SPLIT_URL = ("https://raw.githubusercontent.com/DeepMicroscopy/AMi-Br_Benchmark/HEAD/"
                   "AMi-Br/amibr_train_split.csv")
AMIBR_CSV = "AMI-BR.csv"
SPLIT_CSV = "amibr_train_split.csv"
TIMEOUT_S = 60


def fetch(url: str, dest: Path, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` atomically; MitotypeError (with the offline route) if unreachable."""
    try:
        response = urllib.request.urlopen(url, timeout=TIMEOUT_S)  # noqa: S310 (fixed https URLs)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MitotypeError(f"cannot download {url} ({reason}); you seem to be offline or GitHub is unreachable. "
                            "Download the archive on a machine with internet and pass it with --archive ZIP") from None
    total = int(response.headers.get("Content-Length") or 0) or None
    from tqdm.auto import tqdm

    with response, atomic_write(dest, "wb") as out, tqdm(total=total, unit="B", unit_scale=True,
                                                         desc=dest.name, disable=not progress) as bar:
        while chunk := response.read(1 << 20):
            out.write(chunk)
            bar.update(len(chunk))
    return dest


def _safe_target(root: Path, relative: PurePosixPath) -> Path:
    if relative.is_absolute() or ".." in relative.parts:
        raise MitotypeError(f"archive member {relative} escapes the target folder; refusing to unpack")
    return root / Path(*relative.parts)


def unpack_amibr(archive: Path, to: Path) -> None:
    """Extract ``AMI-BR.csv``, ``patches/`` and (if present) the split CSV from an AMi-Br archive into ``to``,
    whatever top folder the archive has (GitHub's is ``AMi-Br-<branch>/``)."""
    try:
        zf = zipfile.ZipFile(archive)
    except FileNotFoundError:
        raise MitotypeError(f"{archive}: archive not found") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise MitotypeError(f"{archive}: not a readable zip archive ({exc})") from None
    with zf:
        names = [PurePosixPath(n) for n in zf.namelist()]
        csvs = [n for n in names if n.name == AMIBR_CSV]
        if not csvs:
            raise MitotypeError(f"{archive}: no {AMIBR_CSV} inside; is this the AMi-Br repository archive "
                                f"({AMIBR_ARCHIVE_URL})?")
        top = min(csvs, key=lambda n: len(n.parts)).parent
        for info in zf.infolist():
            name = PurePosixPath(info.filename)
            if info.is_dir() or name.parent != top and top not in name.parents:
                continue
            rel = name.relative_to(top)
            if not (rel.parts[0] == "patches" or str(rel) in (AMIBR_CSV, SPLIT_CSV)):
                continue
            target = _safe_target(to, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, atomic_write(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:  # CRC error, truncated archive
                raise MitotypeError(f"{archive}: cannot extract {info.filename} ({exc})") from None


def verify_amibr(root: Path, progress: bool = False) -> dict[str, Any]:
    """Check a local AMi-Br: label CSV present, PNG count equals its rows, every listed PNG present and
    decodable (as 128 x 128). Returns counts; MitotypeError naming the problem otherwise."""
    from mitotype.data.images import load_images
    from mitotype.data.readers import read_amibr

    csv = root / AMIBR_CSV
    if not csv.is_file():
        raise MitotypeError(f"{csv}: missing after unpacking; the archive is not AMi-Br")
    n_png = sum(1 for _ in (root / "patches").rglob("*.png"))
    figures = read_amibr(str(root))  # checks columns, labels, and that every listed PNG exists
    if n_png != len(figures):
        raise MitotypeError(f"{root}/patches: {n_png} PNG files but {csv} lists {len(figures)} figures")
    load_images(figures, size=128, policy="error", progress=progress)  # every PNG decodes, at 128 x 128
    return {"root": str(root), "n_figures": len(figures), "n_atypical": sum(f.label for f in figures),
            "n_png": n_png, "has_split": (root / SPLIT_CSV).is_file()}


def download_amibr(to: str | Path, archive: str | Path | None = None, split_csv: str | Path | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """Download (or take ``archive``), unpack into ``to``, add the published split, verify."""
    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)
    warnings = []
    downloaded = archive is None
    if downloaded:
        archive = fetch(AMIBR_ARCHIVE_URL, to / "AMi-Br.zip", progress)
    unpack_amibr(Path(archive), to)
    if downloaded:
        Path(archive).unlink()  # everything needed is unpacked; the zip would double the disk use
    split_target = to / SPLIT_CSV
    if split_csv is not None:
        if not Path(split_csv).is_file():
            raise MitotypeError(f"{split_csv}: split CSV not found")
        with open(split_csv, "rb") as src, atomic_write(split_target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    elif not split_target.is_file():
        try:
            fetch(AMIBR_SPLIT_URL, split_target, progress)
        except MitotypeError as exc:
            warnings.append(f"published split not added ({exc}); the data works without :split=, "
                            f"or pass the file with --split-csv")
    report = verify_amibr(to, progress)
    report["warnings"] = warnings
    return report
