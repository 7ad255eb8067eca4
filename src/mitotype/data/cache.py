"""Where derived data (masks, features) is cached: never next to the read-only source data."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$MITOTYPE_CACHE`` (or ``~/.cache/mitotype``) joined with ``parts``, created on demand."""
    root = Path(os.environ.get("MITOTYPE_CACHE") or Path.home() / ".cache" / "mitotype")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
