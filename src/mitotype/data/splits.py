"""Leakage-free splits. Every function returns sorted int64 index arrays into the figure list, and no group
(slide or case) ever has figures on both sides of a split."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from mitotype.data.figure import Figure
from mitotype.errors import MitotypeError


def _labels(figures: Sequence[Figure]) -> np.ndarray:
    """Labels for stratification; unlabelled figures form their own stratum (-1)."""
    return np.array([-1 if f.label is None else f.label for f in figures], dtype=np.int64)


def _groups(figures: Sequence[Figure]) -> np.ndarray:
    return np.array([f.group for f in figures], dtype=object)


def _idx(mask: np.ndarray) -> np.ndarray:
    return np.flatnonzero(mask).astype(np.int64)


def published_split(figures: Sequence[Figure]) -> tuple[np.ndarray, np.ndarray]:
    """The split the data set was published with (``Figure.split``: AMi-Br's train/test)."""
    splits = np.array([f.split for f in figures], dtype=object)
    unknown = {f.source or "?" for f in figures if f.split not in ("train", "test")}
    if unknown:
        raise MitotypeError(f"no published train/test split for figures from {', '.join(sorted(unknown))}; "
                            "use group_kfold or group_holdout instead")
    train, test = _idx(splits == "train"), _idx(splits == "test")
    shared = set(_groups(figures)[train]) & set(_groups(figures)[test])
    if shared:
        raise MitotypeError(f"the published split puts {len(shared)} group(s) on both sides, e.g. {min(shared)}")
    return train, test


def group_kfold(figures: Sequence[Figure], k: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified (by label) k-fold cross-validation, grouped by ``Figure.group``."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups = _groups(figures)
    n_groups = len(set(groups))
    if k < 2 or k > n_groups:
        raise MitotypeError(f"group k-fold needs 2 <= k <= number of groups ({n_groups}); got k={k}")
    folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(np.sort(tr).astype(np.int64), np.sort(te).astype(np.int64))
            for tr, te in folds.split(np.zeros(len(figures)), _labels(figures), groups)]


def domain_of(by: str | Callable[[Figure], str] | None) -> Callable[[Figure], str]:
    """``None`` -> ``Figure.domain``; a string -> that key of ``Figure.meta`` (e.g. ``"source"`` for AMi-Br's
    MIDOG21 vs TUPAC16, ``"scanner"``, ``"tumor"``); a callable is used as is."""
    if by is None:
        return lambda f: f.domain
    if callable(by):
        return by

    def get(f: Figure) -> str:
        if by == "domain":
            return f.domain
        if by not in f.meta:
            raise MitotypeError(f"{f.path}: figure has no domain attribute {by!r} (it has "
                                f"{', '.join(['domain', *f.meta]) or 'none'})")
        return f.meta[by]

    return get


def leave_one_domain_out(figures: Sequence[Figure], by: str | Callable[[Figure], str] | None = None
                         ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """For each domain: (train = all other domains, test = that domain).

    A group that has figures in the held-out domain is dropped from training altogether, so no group
    straddles even when the domain varies inside a group.
    """
    get = domain_of(by)
    domains = np.array([get(f) for f in figures], dtype=object)
    groups = _groups(figures)
    names = sorted(set(domains))
    if len(names) < 2:
        raise MitotypeError(f"leave-one-domain-out needs at least 2 domains; the figures have {names}")
    out = {}
    for name in names:
        test = domains == name
        tainted = np.isin(groups, list(set(groups[test])))
        out[name] = (_idx(~test & ~tainted), _idx(test))
    return out


def group_holdout(figures: Sequence[Figure], fraction: float = 0.2, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One grouped, label-stratified hold-out: about ``fraction`` of the figures for validation.

    Groups are visited in a seeded random order and taken while they keep the validation part near its
    target size and atypical share. A group larger than half the target is never taken: on the AMi-Br
    train split one TUPAC16 slide holds 319 figures, and a k-fold part would make it most of the
    validation set (checkpoint choice and threshold would then rest on one slide).
    """
    if not 0 < fraction < 1:
        raise MitotypeError(f"hold-out fraction must be between 0 and 1, got {fraction}")
    groups, labels = _groups(figures), _labels(figures)
    names, inverse = np.unique(groups, return_inverse=True)
    if len(names) < 2:
        raise MitotypeError("a grouped hold-out needs at least 2 groups (slides or cases)")
    sizes = np.bincount(inverse)
    positives = np.bincount(inverse, weights=(labels == 1).astype(float))
    target = fraction * len(figures)
    share = positives.sum() / len(figures)
    rng = np.random.default_rng(seed)
    taken: list[int] = []
    n = pos = 0.0
    for g in rng.permutation(len(names)):
        if n >= target:
            break
        if sizes[g] > max(1.0, 0.5 * target) or n + sizes[g] > 1.1 * target:
            continue
        new_share = (pos + positives[g]) / (n + sizes[g])
        # stratify: once the part has some figures, refuse groups that pull its atypical share away
        if n >= 0.2 * target and abs(new_share - share) > max(0.05, abs(pos / n - share)):
            continue
        taken.append(g)
        n += sizes[g]
        pos += positives[g]
    if not taken:  # only huge groups: fall back to the smallest one
        taken = [int(np.argmin(sizes))]
    in_val = np.isin(inverse, taken)
    if in_val.all():
        raise MitotypeError("a grouped hold-out left nothing for training (too few groups)")
    return np.flatnonzero(~in_val), np.flatnonzero(in_val)
