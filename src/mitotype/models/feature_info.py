"""What an encoder reports about its feature maps; decoders and heads size themselves from it (as timm)."""

from __future__ import annotations


class FeatureInfo:
    """``channels()`` and ``reduction()`` per level (the part of timm's FeatureInfo the decoders use)."""

    def __init__(self, channels: list[int], reductions: list[int]):
        self._channels = list(channels)
        self._reductions = list(reductions)

    def channels(self, idx: int | None = None):
        return self._channels if idx is None else self._channels[idx]

    def reduction(self, idx: int | None = None):
        return self._reductions if idx is None else self._reductions[idx]

    def __len__(self) -> int:
        return len(self._channels)

    def __repr__(self) -> str:
        return f"FeatureInfo(channels={self._channels}, reduction={self._reductions})"
