"""The data-set spec: grammar, helpful errors, the published split counts and '+' de-duplication."""

from __future__ import annotations

import pytest

from mitotype.data import readers, spec
from mitotype.data.spec import load_figures, parse_spec
from mitotype.errors import MitotypeError


def test_parse_spec_parts():
    parts = parse_spec("amibr:/d:split=train+midog25:l.csv:img:domain=lab+stack:s.tiff:gt=g.json")
    assert [(p.reader, p.args, p.options) for p in parts] == [
        ("amibr", ("/d",), {"split": "train"}), ("midog25", ("l.csv", "img"), {"domain": "lab"}),
        ("stack", ("s.tiff",), {"gt": "g.json"})]


@pytest.mark.parametrize("text,message", [
    ("", "empty data spec"),
    ("amibrr:/d", "unknown reader 'amibrr'; valid readers: amibr, midog25, folder, manifest, stack"),
    ("amibr:/d:spilt=train", "unknown option 'spilt' for amibr; valid options: split, domain"),
    ("amibr:/d:split=val", "split='val' is not valid; choose one of train, test"),
    ("midog25:l.csv:img:domain=organ", "choose one of tumor, scanner, lab, species"),
    ("folder:/d:domain=x", "unknown option 'domain' for folder; valid options: none"),
    ("midog25:l.csv", r"midog25 takes 2 argument\(s\) \(CSV, IMAGEDIR\), got 1"),
    ("amibr", r"amibr takes 1 argument\(s\) \(PATH\), got 0"),
    ("amibr:/d+", "unknown reader ''"),
])
def test_spec_errors_say_what_is_valid(text, message):
    with pytest.raises(MitotypeError, match=message):
        parse_spec(text)


def test_bare_path_gets_a_hint(amibr_root, track2_root):
    with pytest.raises(MitotypeError, match=f"did you mean amibr:{amibr_root}"):
        parse_spec(str(amibr_root))
    with pytest.raises(MitotypeError, match="did you mean stack:"):
        parse_spec(str(track2_root / "input" / "stack_5.tiff"))


@pytest.mark.parametrize("suffix,n,n_atypical", [("", 3720, 832), (":split=train", 2894, 648),
                                                 (":split=test", 826, 184)])
def test_amibr_published_counts(amibr_root, suffix, n, n_atypical):
    figures = load_figures(f"amibr:{amibr_root}{suffix}")
    assert len(figures) == n and sum(f.label for f in figures) == n_atypical


def test_plus_deduplicates(amibr_root):
    both = load_figures(f"amibr:{amibr_root}:split=train+amibr:{amibr_root}")
    assert len(both) == 3720
    assert [f.split for f in both[:2894]] == ["train"] * 2894  # first part kept, its order first


def test_empty_result_is_an_error(monkeypatch):
    nothing = readers.Reader(lambda path: [], ("PATH",), {}, "none:x")
    monkeypatch.setitem(readers.READERS, "none", nothing)
    with pytest.raises(MitotypeError, match="selects no figures"):
        spec.load_figures("none:x")
