"""Atomic output files and run provenance.

Every file a command writes goes through :func:`atomic_write` (temporary file in the same folder, then
``os.replace``), so a crash never leaves a half-written result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from mitotype.errors import MitotypeError


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file 0600; a result must be readable as any other new file would be (0644 under
        # the usual umask), e.g. challenge output written by a container's user and read by the host's
        os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _current_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it: put it straight back
    os.umask(mask)
    return mask


def absolute_path(path: str | Path) -> str:
    """The one rule for paths written into outputs (manifests, predictions): absolute, as the user gave it,
    symbolic links kept (not resolved), so that every output names a file the same way."""
    return os.path.abspath(path)


def check_output_file(path: str | Path, option: str = "--out") -> Path:
    """Refuse, before any work, an output file that cannot be written: an existing folder (or a link to one),
    a path under a regular file, or a folder this process cannot write into."""
    path = Path(path)
    if path.is_dir():
        raise MitotypeError(f"{option} {path}: is a folder; expected a file name")
    _check_creatable(path.parent, path, option)
    return path


def check_output_dir(path: str | Path, option: str = "--out") -> Path:
    """Refuse, before any work, an output folder that cannot be used: an existing file, a path under a regular
    file, or a folder (or the nearest existing parent) this process cannot write into."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MitotypeError(f"{option} {path}: exists and is not a folder")
    _check_creatable(path, path, option)
    return path


def _check_creatable(folder: Path, target: Path, option: str) -> None:
    """``folder`` is writable, or can be created inside its nearest existing parent."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link: mkdir would fail on it
            raise MitotypeError(f"{option} {target}: {existing} is a broken symbolic link")
        existing = existing.parent
    if not existing.is_dir():
        raise MitotypeError(f"{option} {target}: {existing} is a file, not a folder, so {target} cannot be created")
    if not _writable(existing):
        raise MitotypeError(f"{option} {target}: the folder {existing} is not writable")


def _writable(folder: Path) -> bool:
    """Try it: permission bits say nothing for root, nor for read-only mounts or ACLs."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".mitotype-write-probe.", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


def write_json(path: str | Path, data: Any) -> None:
    with atomic_write(path) as handle:
        json.dump(data, handle, indent=2, default=_json_default)
        handle.write("\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_write(path) as handle:
        handle.write(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def save_figure(fig: Any, path: str | Path, **kwargs: Any) -> None:
    """Save a matplotlib figure atomically (format from the suffix)."""
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format=path.suffix.lstrip(".") or "png", **kwargs)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The commit of the source tree mitotype runs from (None outside a git checkout)."""
    where = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(**extra: Any) -> dict[str, Any]:
    """What produced an output: versions, argv, commit, time, machine."""
    from mitotype import __version__

    info: dict[str, Any] = {
        "mitotype_version": __version__,
        "git_commit": git_commit(),
        "argv": sys.argv,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "time_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with contextlib.suppress(ImportError):
        import torch

        info["torch"] = torch.__version__
        info["threads"] = torch.get_num_threads()
    info.update(extra)
    return info
