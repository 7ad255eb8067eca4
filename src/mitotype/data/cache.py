"""Where derived data (masks, features, exported graphs) is cached: never next to the read-only source data."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str, create: bool = True) -> Path:
    """``$MITOTYPE_CACHE`` (else ``$XDG_CACHE_HOME/mitotype``, else ``~/.cache/mitotype``) joined with
    ``parts``, created on demand (``create=False``: only the path, e.g. to look into a read-only cache)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    root = Path(os.environ.get("MITOTYPE_CACHE") or (Path(xdg) if xdg else Path.home() / ".cache") / "mitotype")
    path = root.joinpath(*parts)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path
