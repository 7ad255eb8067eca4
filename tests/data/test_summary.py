"""`mitotype data summary` on the real AMi-Br: the issue's done-when numbers, as JSON and as a table."""

from __future__ import annotations

import json

import pytest

from mitotype.cli import main
from mitotype.data.spec import load_figures
from mitotype.data.summary import format_summary, summarise


def _summary_json(capsys, spec):
    assert main(["data", "summary", spec, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("suffix,n,n_atypical", [("", 3720, 832), (":split=train", 2894, 648),
                                                 (":split=test", 826, 184)])
def test_summary_json_done_when(capsys, amibr_root, suffix, n, n_atypical):
    out = _summary_json(capsys, f"amibr:{amibr_root}{suffix}")
    assert out["n_figures"] == n and out["classes"] == {"normal": n - n_atypical, "atypical": n_atypical}
    assert out["n_domains"] == 4 and len(out["domains"]) == 4
    assert sum(d["n"] for d in out["domains"].values()) == n
    assert sum(g["atypical"] for g in out["groups"].values()) == n_atypical


def test_summary_counts(amibr_root):
    s = summarise(load_figures(f"amibr:{amibr_root}"))
    assert s["splits"] == {"test": {"n": 826, "normal": 642, "atypical": 184},
                           "train": {"n": 2894, "normal": 2246, "atypical": 648}}
    assert s["domains"]["TUPAC16"]["n"] == 1999 and s["n_groups"] == 202
    assert s["groups"]["MIDOG21/002.tiff"]["n"] >= 1 and s["group_size"]["max"] >= s["group_size"]["median"]


def test_summary_table_and_out_file(capsys, amibr_root, tmp_path):
    assert main(["data", "summary", f"amibr:{amibr_root}:domain=source", "--out", str(tmp_path / "s.json")]) == 0
    text = capsys.readouterr().out
    assert text.startswith("3720 figures: 2888 normal, 832 atypical")
    assert "MIDOG21" in text and "TUPAC16" in text and "%atypical" in text
    assert json.loads((tmp_path / "s.json").read_text())["n_domains"] == 2


def test_summary_unlabelled_stack(track2_root):
    text = format_summary(summarise(load_figures(f"stack:{track2_root / 'input'}")))
    assert text.startswith("16 figures: 0 normal, 0 atypical, 16 unlabelled")


def test_summary_bad_spec_exits_2(capsys):
    assert main(["data", "summary", "amibr:/no/such/dir"]) == 2
    assert "AMI-BR.csv: not found" in capsys.readouterr().err
