"""Property-based fuzzing of every reader with random, truncated and bit-flipped bytes (hypothesis).

The property: a reader given damaged input raises MitotypeError (naming the file) or returns the correct
result -- never another exception, a hang (hypothesis ``deadline``) or silently wrong output. "Correct"
is checked wherever the format allows: a truncated CSV may only yield a prefix of the real rows, a
truncated PNG only the real pixels; formats without checksums (TIFF pixel data) may change pixel values
under a bit flip, and that is all they may do. The model file has its own test module
(tests/models/test_fuzz_modelfile.py).
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mitotype.errors import MitotypeError

# The machine is shared: a generous per-example deadline still catches hangs (a hang never ends).
FUZZ = settings(max_examples=40, deadline=timedelta(seconds=10), derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def damaged(data: bytes) -> st.SearchStrategy[bytes]:
    """Truncations, bit flips (1-4) and random bytes, all derived from ``data``."""
    n = len(data)
    truncated = st.integers(0, n - 1).map(lambda k: data[:k])

    def flip(positions: list[tuple[int, int]]) -> bytes:
        out = bytearray(data)
        for pos, bit in positions:
            out[pos] ^= 1 << bit
        return bytes(out)

    flipped = st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 7)), min_size=1, max_size=4).map(flip)
    return st.one_of(truncated, flipped, st.binary(max_size=2048))


def attempt(fn):
    """fn() or None on MitotypeError (whose message must name something); anything else propagates."""
    try:
        return fn()
    except MitotypeError as exc:
        assert str(exc).strip()
        return None


# --- PNG ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def png(amibr_root):
    from mitotype.data.images import read_rgb

    path = min((amibr_root / "patches" / "atypical").glob("*.png"))
    return path.read_bytes(), read_rgb(path)


def test_fuzz_png(png, tmp_path_factory):
    from mitotype.data.images import read_rgb

    data, pixels = png
    folder = tmp_path_factory.mktemp("png")

    @FUZZ
    @given(blob=damaged(data))
    def check(blob):
        path = folder / "crop.png"
        path.write_bytes(blob)
        out = attempt(lambda: read_rgb(path))
        if out is not None:  # PNG has CRCs and zlib checksums: a readable result is the real image
            assert out.dtype == np.uint8 and out.shape == pixels.shape
            np.testing.assert_array_equal(out, pixels)

    check()


# --- TIFF stack -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stack(track2_root):
    from mitotype.data.images import read_rgb

    path = track2_root / "input" / "stack_5.tiff"
    return path.read_bytes(), [read_rgb(path, page) for page in range(16)]


def test_fuzz_tiff_stack(stack, tmp_path_factory):
    from mitotype.data.images import read_rgb
    from mitotype.data.readers import read_stack

    data, pages = stack
    folder = tmp_path_factory.mktemp("tiff")

    @FUZZ
    @given(blob=damaged(data), page=st.sampled_from([0, 7, 15]))
    def check(blob, page):
        path = folder / "stack.tiff"
        path.write_bytes(blob)
        figures = attempt(lambda: read_stack(str(path)))
        if figures is not None:
            assert [f.page for f in figures] == list(range(len(figures))) and figures
        out = attempt(lambda: read_rgb(path, page))
        if out is not None:
            assert out.dtype == np.uint8 and out.shape == pages[page].shape
            if len(blob) < len(data):  # a truncated file may not come back with made-up pixels
                np.testing.assert_array_equal(out, pages[page])

    check()


# --- CSV readers --------------------------------------------------------------------------------------------

FIELDS = ("path", "label", "domain", "group", "slide", "x", "y", "votes", "split")


def _facts(figures) -> list[tuple]:
    return [tuple(getattr(f, k) for k in FIELDS) for f in figures]


def _prefix_of(result, full) -> None:
    """A truncated table may yield some leading rows, each exactly as in the full table."""
    got, want = _facts(result), _facts(full)
    assert got == want[: len(got)], "a damaged table gave rows that differ from the real ones"


def _csv_head(path: Path, rows: int) -> bytes:
    return b"".join(path.read_bytes().splitlines(keepends=True)[: rows + 1])


def _fuzz_table(path: Path, data: bytes, read) -> list:
    """Damaged copies of a table's bytes ``data`` written to ``path``: ``read()`` answers with a
    MitotypeError or rows; a truncated table's rows are a prefix of the full table's."""
    path.write_bytes(data)
    full = read()

    @FUZZ
    @given(blob=damaged(data))
    def check(blob):
        path.write_bytes(blob)
        result = attempt(read)
        if result is not None and len(blob) < len(data):
            _prefix_of(result, full)

    check()
    return full


def test_fuzz_amibr_csv(amibr_root, tmp_path_factory):
    from mitotype.data.readers import read_amibr

    root = tmp_path_factory.mktemp("amibr")
    os.symlink(amibr_root / "patches", root / "patches")
    shutil.copy(amibr_root / "amibr_train_split.csv", root / "amibr_train_split.csv")
    full = _fuzz_table(root / "AMI-BR.csv", _csv_head(amibr_root / "AMI-BR.csv", 12), lambda: read_amibr(str(root)))
    assert len(full) == 12


# Found by this test (fixed in readers._check_complete_rows): a manifest cut short inside its last row, after
# the label, is read as a complete row with its optional cells empty (domain = the CSV's name, x/y = None) -- e.g. the
# first 302 bytes of the table below. data/readers.py's _read_csv does not reject rows with fewer fields
# than the header.
def test_fuzz_manifest_csv(amibr_root, tmp_path_factory):
    from mitotype.data.readers import read_manifest

    folder = tmp_path_factory.mktemp("manifest")
    pngs = sorted((amibr_root / "patches" / "normal").glob("*.png"))[:6]
    text = "path,label,domain,x,y\n" + "".join(f"{p},{'normal' if i % 2 else 'atypical'},d{i % 3},{i}.5,{2 * i}\n"
                                             for i, p in enumerate(pngs))
    csv = folder / "figures.csv"
    _fuzz_table(csv, text.encode(), lambda: read_manifest(str(csv)))


def test_fuzz_midog25_csv(midog25_csv, tmp_path_factory):
    import pandas as pd

    from mitotype.data.readers import read_midog25

    folder = tmp_path_factory.mktemp("midog25")
    head = _csv_head(midog25_csv, 10)
    csv = folder / "labels.csv"
    csv.write_bytes(head)
    images = folder / "images"
    images.mkdir()
    for name in pd.read_csv(csv, dtype=str)["image_id"]:  # the reader checks that the files exist
        (images / name).write_bytes(b"")
    _fuzz_table(csv, head, lambda: read_midog25(str(csv), str(images)))


# --- ground-truth JSON -----------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 20) | st.floats(allow_nan=False) | st.sampled_from(
        ["stack.tiff", "normal", "atypical", "AMF", "x", ""]),
    lambda inner: st.lists(inner, max_size=17) | st.dictionaries(
        st.sampled_from(["image", "labels", "tumordomains", "other"]), inner, max_size=4),
    max_leaves=40)
label_words = st.sampled_from(["normal", "atypical", "NMF", "AMF", "1", "0", "x"]) | json_values
# Entries shaped like the real format with one field wrong at a time: the cases a random JSON rarely hits.
gt_entries = st.fixed_dictionaries(
    {"image": st.sampled_from(["stack.tiff"]) | json_values,
     "labels": st.lists(label_words, min_size=14, max_size=17) | json_values},
    optional={"tumordomains": st.lists(st.integers(0, 3) | json_values, min_size=14, max_size=17) | json_values})


def test_fuzz_ground_truth_json(track2_root, tmp_path_factory):
    from mitotype.data.readers import read_stack

    folder = tmp_path_factory.mktemp("gt")
    os.symlink(track2_root / "input" / "stack_5.tiff", folder / "stack.tiff")
    truth = [{"image": "stack.tiff", "labels": ["normal", "atypical"] * 8, "tumordomains": list(range(16))}]
    data = json.dumps(truth).encode()
    gt = folder / "gt.json"
    gt.write_bytes(data)
    full = read_stack(str(folder / "stack.tiff"), gt=str(gt))
    assert [f.label for f in full] == [0, 1] * 8

    @settings(FUZZ, max_examples=150)  # cheap (no image decoding); the structured cases need more draws
    @given(blob=damaged(data) | json_values.map(lambda v: json.dumps(v).encode())
           | st.lists(gt_entries, min_size=1, max_size=2).map(lambda v: json.dumps(v).encode()))
    def check(blob):
        gt.write_bytes(blob)
        result = attempt(lambda: read_stack(str(folder / "stack.tiff"), gt=str(gt)))
        if result is not None:
            assert len(result) == 16 and all(f.label in (0, 1) for f in result)
            if len(blob) < len(data) and blob == data[: len(blob)]:
                _prefix_of(result, full)

    check()
