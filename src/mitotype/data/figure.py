"""One mitotic figure, as every reader yields it."""

from __future__ import annotations

from dataclasses import dataclass, field

# Class index -> name; index 1 (atypical) is the positive class everywhere (MIDOG 2025 track 2).
LABELS = ("normal", "atypical")


@dataclass
class Figure:
    """A mitotic figure and where it came from.

    The image itself is read on demand (``mitotype.data.images``): ``path`` is a PNG/JPEG/TIFF crop, or a
    multi-page TIFF stack with ``page`` set.
    """

    path: str
    label: int | None  # 0 normal, 1 atypical, None when unlabelled
    domain: str  # scanner / lab / tumour / species, as the reader chooses
    group: str  # slide or case: figures of one group never straddle a split
    page: int | None = None  # page in a multi-page TIFF stack
    slide: str | None = None  # source image the crop was cut from
    x: float | None = None  # figure centre in the source image, level-0 pixels
    y: float | None = None
    subtype: str | None = None  # e.g. "AMF multipolar"
    votes: tuple[int, ...] | None = None  # per-expert atypical votes (1 = atypical)
    split: str | None = None  # published split ("train"/"test") where the source has one
    source: str = ""  # the reader that produced it: amibr, midog25, folder, manifest, stack
    meta: dict[str, str] = field(default_factory=dict)  # other domain labels (tumour, scanner, lab, species)

    @property
    def key(self) -> str:
        """Identity across sources, for de-duplication: same slide and centre = same figure."""
        if self.slide is not None and self.x is not None and self.y is not None:
            return f"{self.slide}:{round(self.x)}:{round(self.y)}"
        return f"{self.path}:{self.page if self.page is not None else 0}"

    @property
    def name(self) -> str:
        """Short display name: file name, plus the page for stacks."""
        base = self.path.rsplit("/", 1)[-1]
        return base if self.page is None else f"{base}[{self.page}]"
