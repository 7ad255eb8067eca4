"""Data sets, splits, auxiliary targets and augmentation."""

from mitotype.data.cache import cache_dir
from mitotype.data.figure import LABELS, Figure

__all__ = ["LABELS", "Figure", "cache_dir"]
