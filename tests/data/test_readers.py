"""Readers on the real AMi-Br, the real MIDOG25 label table (with images the tests write), the real track-2
stack, and folder/manifest layouts built from real crops; plus their bad-input errors."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mitotype.data import readers
from mitotype.data.readers import amibr_scanner, read_amibr, read_folder, read_manifest, read_midog25, read_stack
from mitotype.data.spec import load_figures
from mitotype.errors import MitotypeError

# --- AMi-Br -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def amibr(amibr_root):
    return read_amibr(str(amibr_root))


def test_amibr_counts_domains_splits(amibr):
    assert len(amibr) == 3720 and sum(f.label for f in amibr) == 832
    assert Counter(f.domain for f in amibr) == {"TUPAC16": 1999, "MIDOG21-AperioCS2": 688,
                                                "MIDOG21-HamamatsuS360": 582, "MIDOG21-HamamatsuXR": 451}
    assert Counter(f.split for f in amibr) == {"train": 2894, "test": 826}
    assert sum(f.label for f in amibr if f.split == "train") == 648
    assert len({f.group for f in amibr}) == 202
    assert all(f.source == "amibr" and f.page is None for f in amibr)
    # the PNG's class folder agrees with the majority vote for every row
    assert all(f.path.split("/")[-2] == ("atypical" if f.label else "normal") for f in amibr)
    assert all(sum(f.votes) >= 2 if f.label else sum(f.votes) <= 1 for f in amibr)


def test_amibr_one_figure_in_full(amibr):
    fig = next(f for f in amibr if f.name == "MIDOG21_7.png")
    assert (fig.label, fig.domain, fig.group, fig.slide, fig.x, fig.y) == (
        1, "MIDOG21-HamamatsuXR", "MIDOG21/002.tiff", "002.tiff", 1867, 1583)
    assert fig.subtype == "AMF segregation" and fig.votes == (1, 1, 1) and fig.split == "train"
    assert fig.meta["source"] == "MIDOG21" and fig.meta["scanner"] == fig.domain
    tupac = next(f for f in amibr if f.meta["source"] == "TUPAC16")
    assert tupac.domain == "TUPAC16" and tupac.group.startswith("TUPAC16/")


def test_amibr_subtype_follows_majority(amibr):
    for f in amibr:
        if f.subtype is not None:
            assert f.subtype.startswith("AMF" if f.label else "NMF"), f
    assert sum(f.subtype is None for f in amibr) < 50  # only where both subtype experts disagree with the majority


def test_amibr_domain_source_and_split_option(amibr_root):
    figures = read_amibr(str(amibr_root), split="test", domain="source")
    assert Counter(f.domain for f in figures).keys() == {"MIDOG21", "TUPAC16"}
    assert len(figures) == 826 and sum(f.label for f in figures) == 184


@pytest.mark.parametrize("slide,expected", [
    ("001.tiff", "MIDOG21-HamamatsuXR"), ("050.tiff", "MIDOG21-HamamatsuXR"),
    ("051.tiff", "MIDOG21-HamamatsuS360"), ("100.tiff", "MIDOG21-HamamatsuS360"),
    ("101.tiff", "MIDOG21-AperioCS2"), ("150.tiff", "MIDOG21-AperioCS2")])
def test_amibr_scanner_boundaries(slide, expected):
    assert amibr_scanner("MIDOG21", slide) == expected
    assert amibr_scanner("TUPAC16", "01_stitched1.tif") == "TUPAC16"
    with pytest.raises(ValueError):
        amibr_scanner("MIDOG21", "151.tiff")


def _amibr_copy(amibr_root, tmp_path, rows=None, drop=None):
    """A copy of the AMi-Br layout in tmp_path: edited CSV, patches linked."""
    table = pd.read_csv(amibr_root / "AMI-BR.csv", index_col=0)
    if rows is not None:
        table = table.iloc[rows]
    if drop:
        table = table.drop(columns=[drop])
    table.to_csv(tmp_path / "AMI-BR.csv")
    (tmp_path / "patches").symlink_to(amibr_root / "patches")
    return tmp_path


def test_amibr_bad_input(amibr_root, tmp_path):
    with pytest.raises(MitotypeError, match=r"AMI-BR\.csv: not found.*data download"):
        read_amibr(str(tmp_path))
    root = _amibr_copy(amibr_root, tmp_path, drop="majority_atypical")
    with pytest.raises(MitotypeError, match=r"AMI-BR\.csv: AMi-Br label table lacks column\(s\) majority_atypical"):
        read_amibr(str(root))


def test_amibr_missing_png_and_split(amibr_root, tmp_path):
    root = _amibr_copy(amibr_root, tmp_path, rows=slice(0, 20))
    figures = read_amibr(str(root))  # no split CSV: split unknown
    assert len(figures) == 20 and all(f.split is None for f in figures)
    with pytest.raises(MitotypeError, match="amibr_train_split.csv: not found"):
        read_amibr(str(root), split="train")
    table = pd.read_csv(root / "AMI-BR.csv", index_col=0)
    table.loc[table.index[0], "uid"] = 999999
    table.to_csv(root / "AMI-BR.csv")
    with pytest.raises(MitotypeError, match=r"1 of 20 listed image\(s\) are missing, e.g. .*MIDOG21_999999\.png"):
        read_amibr(str(root))


# --- MIDOG25 --------------------------------------------------------------------------------------------


def _write_pngs(folder, names, rgb=(180, 120, 200)):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(np.full((128, 128, 3), rgb, np.uint8)).save(folder / name)


@pytest.fixture(scope="module")
def midog25_subset(midog25_csv, tmp_path_factory):
    """A few real rows (every tumour type, the misspelt scanner, rows with and without expert3) and PNGs
    written under their real image_id names."""
    table = pd.read_csv(midog25_csv, dtype=str, keep_default_na=False)
    picks = pd.concat([table.groupby("Tumor").head(2), table[table.Scanner == "Hamammatsu XR"].head(1),
                       table[table.majority == "AMF"].head(2)]).drop_duplicates("image_id")
    root = tmp_path_factory.mktemp("midog25")
    picks.to_csv(root / "labels.csv", index=False)
    _write_pngs(root / "images", picks.image_id)
    return root, picks


def test_midog25_reader(midog25_subset):
    root, picks = midog25_subset
    figures = read_midog25(str(root / "labels.csv"), str(root / "images"))
    assert len(figures) == len(picks)
    by_id = {f.name: f for f in figures}
    for row in picks.to_dict("records"):
        f = by_id[row["image_id"]]
        assert f.label == (row["majority"] == "AMF")
        assert f.domain == row["Tumor"] and f.group == f.slide == row["filename"]
        assert (f.x, f.y) == (float(row["coordinateX"]), float(row["coordinateY"]))
        assert set(f.meta) == {"tumor", "scanner", "lab", "species"}
        assert len(f.votes) == (3 if row["expert3"] else 2)
    assert "Hamammatsu XR" not in {f.meta["scanner"] for f in figures}
    assert "Hamamatsu XR" in {f.meta["scanner"] for f in figures}
    assert len({f.domain for f in figures}) == 7


@pytest.mark.parametrize("domain,column", [("scanner", "Scanner"), ("lab", "Origin"), ("species", "Species")])
def test_midog25_domain_choice(midog25_subset, domain, column):
    root, picks = midog25_subset
    figures = read_midog25(str(root / "labels.csv"), str(root / "images"), domain=domain)
    expected = {readers.MIDOG25_SPELLING.get(v, v) for v in picks[column]}
    assert {f.domain for f in figures} == expected


def test_midog25_bad_input(midog25_subset, tmp_path):
    root, picks = midog25_subset
    with pytest.raises(MitotypeError, match=r"nowhere: image folder not found"):
        read_midog25(str(root / "labels.csv"), str(tmp_path / "nowhere"))
    _write_pngs(tmp_path / "partial", picks.image_id[1:])
    with pytest.raises(MitotypeError, match=rf"1 of {len(picks)} listed image\(s\) are missing"):
        read_midog25(str(root / "labels.csv"), str(tmp_path / "partial"))
    bad = picks.copy()
    bad.loc[bad.index[1], "majority"] = "maybe"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(MitotypeError, match=r"bad\.csv line 3: unknown label 'maybe'"):
        read_midog25(str(tmp_path / "bad.csv"), str(root / "images"))
    picks.drop(columns=["Scanner"]).to_csv(tmp_path / "nocol.csv", index=False)
    with pytest.raises(MitotypeError, match=r"nocol\.csv: MIDOG25 label table lacks column\(s\) Scanner"):
        read_midog25(str(tmp_path / "nocol.csv"), str(root / "images"))


def test_midog25_duplicates_amibr_midog21_part(midog25_csv, amibr, tmp_path):
    """On the two real label tables: MIDOG25's human breast part is AMi-Br's MIDOG21 part (same keys)."""
    table = pd.read_csv(midog25_csv, usecols=["image_id"])
    (tmp_path / "img").mkdir()
    for name in table.image_id:  # existence is all the reader checks; the pixels are never read here
        (tmp_path / "img" / name).touch()
    midog = read_midog25(str(midog25_csv), str(tmp_path / "img"))
    assert len(midog) == 11937 and sum(f.label for f in midog) == 1748
    shared = {f.key for f in midog} & {f.key for f in amibr}
    assert len(shared) == 1721 == sum(f.meta["source"] == "MIDOG21" for f in amibr)
    labels = {f.key: f.label for f in amibr}
    assert all(labels[f.key] == f.label for f in midog if f.key in shared)
    assert {f.meta["tumor"] for f in midog if f.key in shared} == {"human breast cancer"}
    # the spec's '+' keeps each shared figure once, from the part named first
    merged = load_figures(f"amibr:{amibr[0].path.rsplit('/patches/', 1)[0]}+midog25:{midog25_csv}:{tmp_path / 'img'}")
    assert len(merged) == 3720 + 11937 - 1721
    assert Counter(f.source for f in merged) == {"amibr": 3720, "midog25": 11937 - 1721}


# --- folder -----------------------------------------------------------------------------------------------


@pytest.fixture()
def folder_root(amibr_root, tmp_path):
    root = tmp_path / "external_site"
    (root / "Atypical").mkdir(parents=True)
    (root / "normal").mkdir()
    for name in ("MIDOG21_7.png", "TUPAC16_1107.png"):
        shutil.copy(amibr_root / "patches" / "atypical" / name, root / "Atypical" / name)
    for p in sorted((amibr_root / "patches" / "normal").glob("*.png"))[:3]:
        shutil.copy(p, root / "normal" / p.name)
    (root / "normal" / ".DS_Store").write_bytes(b"\0")
    (root / "normal" / "notes.txt").write_text("ignored")
    return root


def test_folder_reader(folder_root):
    figures = read_folder(str(folder_root))
    assert [f.label for f in figures] == [1, 1, 0, 0, 0]
    assert {f.domain for f in figures} == {"external_site"}
    assert len({f.group for f in figures}) == 5 and all(f.source == "folder" for f in figures)


def test_folder_bad_input(folder_root, tmp_path):
    (folder_root / "Mitosis").mkdir()
    with pytest.raises(MitotypeError, match=r"Mitosis: unknown class folder 'Mitosis'; expected Atypical and Normal"):
        read_folder(str(folder_root))
    (tmp_path / "empty" / "Atypical").mkdir(parents=True)
    with pytest.raises(MitotypeError, match=r"empty: no images found"):
        read_folder(str(tmp_path / "empty"))
    with pytest.raises(MitotypeError, match=r"absent: folder not found"):
        read_folder(str(tmp_path / "absent"))


# --- manifest ----------------------------------------------------------------------------------------------


def test_manifest_reader(folder_root, tmp_path):
    csv = folder_root / "list.csv"
    pngs = sorted(folder_root.rglob("*.png"))
    labels = ["1", "AMF", "normal", "Nmf", "0"]
    rows = [f"{p.relative_to(folder_root)},{lab}" for p, lab in zip(pngs, labels)]
    csv.write_text("path,label,domain,group\n" + "\n".join(r + (",siteA,case1" if i < 2 else ",,")
                                                           for i, r in enumerate(rows)) + "\n")
    figures = read_manifest(str(csv))
    assert [f.label for f in figures] == [1, 1, 0, 0, 0]
    assert [f.domain for f in figures] == ["siteA", "siteA", "list", "list", "list"]
    assert figures[0].group == "case1" and figures[3].group == figures[3].path
    assert all(f.path.startswith(str(folder_root)) for f in figures)


def test_manifest_bad_input(folder_root, tmp_path):
    png = next(folder_root.rglob("*.png"))
    (tmp_path / "a.csv").write_text(f"file,label\n{png},1\n")
    with pytest.raises(MitotypeError, match=r"a\.csv: manifest lacks column\(s\) path"):
        read_manifest(str(tmp_path / "a.csv"))
    (tmp_path / "b.csv").write_text(f"path,label\n{png},1\n{png},mitosis\n")
    with pytest.raises(MitotypeError, match=r"b\.csv line 3: unknown label 'mitosis'"):
        read_manifest(str(tmp_path / "b.csv"))
    (tmp_path / "c.csv").write_text("path,label\nmissing.png,1\n")
    with pytest.raises(MitotypeError, match=r"c\.csv: 1 of 1 listed image\(s\) are missing"):
        read_manifest(str(tmp_path / "c.csv"))
    (tmp_path / "d.csv").write_text("path,label\n")
    with pytest.raises(MitotypeError, match=r"d\.csv: manifest has no rows"):
        read_manifest(str(tmp_path / "d.csv"))


# --- stack --------------------------------------------------------------------------------------------------


def test_stack_unlabelled(track2_root):
    stack = track2_root / "input" / "stack_5.tiff"
    figures = read_stack(str(stack))
    assert [f.page for f in figures] == list(range(16))
    assert all(f.label is None and f.group == "stack_5.tiff" and f.domain == "input" for f in figures)
    assert len(read_stack(str(stack.parent))) == 16


def test_stack_with_ground_truth(track2_root, tmp_path):
    stack = track2_root / "input" / "stack_5.tiff"
    example = json.loads((track2_root / "ground_truth_example.json").read_text())
    entry = dict(example[0], image="stack_5.tiff")  # the official format, for the stack we have
    entry["tumordomains"] = [3] * 16
    (tmp_path / "gt.json").write_text(json.dumps([entry]))
    figures = read_stack(str(stack), gt=str(tmp_path / "gt.json"))
    assert [f.label for f in figures] == [int(v == "atypical") for v in example[0]["labels"]]
    assert {f.domain for f in figures} == {"3"}


def test_stack_bad_input(track2_root, tmp_path):
    stack = track2_root / "input" / "stack_5.tiff"
    with pytest.raises(MitotypeError, match=r"ground_truth_example\.json: has no entry for stack_5\.tiff"):
        read_stack(str(stack), gt=str(track2_root / "ground_truth_example.json"))
    (tmp_path / "short.json").write_text(json.dumps([{"image": "stack_5.tiff", "labels": ["normal"]}]))
    with pytest.raises(MitotypeError, match=r"short\.json: stack_5\.tiff has 1 labels but the stack has 16 pages"):
        read_stack(str(stack), gt=str(tmp_path / "short.json"))
    (tmp_path / "notgt.json").write_text('{"a": 1}')
    with pytest.raises(MitotypeError, match=r"notgt\.json: expected the track-2 ground-truth format"):
        read_stack(str(stack), gt=str(tmp_path / "notgt.json"))
    (tmp_path / "empty.tiff").write_bytes(b"II*\x00\x00\x00\x00\x00")  # a TIFF header with no pages
    with pytest.raises(MitotypeError, match=r"empty\.tiff"):
        read_stack(str(tmp_path / "empty.tiff"))
    (tmp_path / "dir").mkdir()
    with pytest.raises(MitotypeError, match=r"dir: no \.tif/\.tiff stacks"):
        read_stack(str(tmp_path / "dir"))
