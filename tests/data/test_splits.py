"""Splits on the real AMi-Br: no slide in two parts of any split, stratification roughly holds."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from mitotype.data import splits
from mitotype.data.figure import Figure
from mitotype.data.spec import load_figures
from mitotype.errors import MitotypeError


@pytest.fixture(scope="module")
def amibr(amibr_root):
    return load_figures(f"amibr:{amibr_root}")


def _slides(figures, idx):
    return {figures[i].group for i in idx}


def _atypical_rate(figures, idx):
    return np.mean([figures[i].label for i in idx])


def _check_partition(figures, a, b, complete=True):
    assert a.dtype == np.int64 and b.dtype == np.int64
    assert not set(a) & set(b)
    if complete:
        assert len(a) + len(b) == len(figures)
    assert not _slides(figures, a) & _slides(figures, b), "a slide straddles the split"


def test_published_split(amibr):
    train, test = splits.published_split(amibr)
    _check_partition(amibr, train, test)
    assert (len(train), len(test)) == (2894, 826)
    assert len(_slides(amibr, train)) == 146 and len(_slides(amibr, test)) == 56


def test_group_kfold(amibr):
    overall = np.mean([f.label for f in amibr])
    folds = splits.group_kfold(amibr, k=5, seed=0)
    assert len(folds) == 5
    seen = np.concatenate([test for _, test in folds])
    assert sorted(seen) == list(range(len(amibr)))  # every figure tested exactly once
    for train, test in folds:
        _check_partition(amibr, train, test)
        assert abs(_atypical_rate(amibr, test) - overall) < 0.04
        assert 0.1 < len(test) / len(amibr) < 0.3
    again = splits.group_kfold(amibr, k=5, seed=0)
    assert all((a[1] == b[1]).all() for a, b in zip(folds, again))
    other = splits.group_kfold(amibr, k=5, seed=1)
    assert [a[1].tolist() for a in folds] != [b[1].tolist() for b in other]


def test_leave_one_domain_out(amibr):
    parts = splits.leave_one_domain_out(amibr)
    assert set(parts) == {"TUPAC16", "MIDOG21-AperioCS2", "MIDOG21-HamamatsuS360", "MIDOG21-HamamatsuXR"}
    for name, (train, test) in parts.items():
        _check_partition(amibr, train, test)
        assert {amibr[i].domain for i in test} == {name} and name not in {amibr[i].domain for i in train}


@pytest.mark.parametrize("by", ["source", lambda f: f.meta["source"]])
def test_leave_one_source_out(amibr, by):
    parts = splits.leave_one_domain_out(amibr, by=by)
    assert {k: (len(tr), len(te)) for k, (tr, te) in parts.items()} == {
        "MIDOG21": (1999, 1721), "TUPAC16": (1721, 1999)}
    for train, test in parts.values():
        _check_partition(amibr, train, test)


def test_leave_one_domain_out_from_spec_option(amibr_root):
    figures = load_figures(f"amibr:{amibr_root}:domain=source")
    assert set(splits.leave_one_domain_out(figures)) == {"MIDOG21", "TUPAC16"}


def test_group_holdout(amibr):
    train, val = splits.group_holdout(amibr, fraction=0.2, seed=0)
    _check_partition(amibr, train, val)
    assert 0.15 < len(val) / len(amibr) < 0.25
    assert abs(_atypical_rate(amibr, val) - _atypical_rate(amibr, train)) < 0.04


def _fig(i, domain, group, label=0):
    return Figure(f"{i}.png", label, domain, group, meta={"site": domain})


def test_groups_spanning_domains_are_dropped_from_training():
    figures = [_fig(0, "a", "g1"), _fig(1, "b", "g1", 1), _fig(2, "b", "g2"), _fig(3, "a", "g3", 1)]
    parts = splits.leave_one_domain_out(figures)
    assert parts["a"][1].tolist() == [0, 3] and parts["a"][0].tolist() == [2]  # figure 1 shares slide g1


def test_split_errors(amibr):
    unsplit = [_fig(i, "a" if i % 2 else "b", f"g{i}", i % 2) for i in range(6)]
    with pytest.raises(MitotypeError, match="no published train/test split"):
        splits.published_split(unsplit)
    with pytest.raises(MitotypeError, match=r"2 <= k <= number of groups \(6\)"):
        splits.group_kfold(unsplit, k=7)
    with pytest.raises(MitotypeError, match="at least 2 domains"):
        splits.leave_one_domain_out([_fig(0, "a", "g")])
    with pytest.raises(MitotypeError, match="between 0 and 1"):
        splits.group_holdout(unsplit, fraction=1.5)
    with pytest.raises(MitotypeError, match="no domain attribute 'lab'"):
        splits.leave_one_domain_out(amibr, by="lab")


def test_group_holdout_spreads_validation_over_many_slides(amibr):
    """No single slide may dominate the validation part (checkpoint choice and threshold rest on it)."""
    train_part = [f for f in amibr if f.split == "train"]
    for seed in range(3):
        _, val = splits.group_holdout(train_part, fraction=0.15, seed=seed)
        counts = collections.Counter(train_part[i].group for i in val)
        assert len(counts) >= 10
        assert max(counts.values()) <= 0.25 * len(val)
        assert abs(len(val) - 0.15 * len(train_part)) < 0.05 * len(train_part)
