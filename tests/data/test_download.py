"""`data download amibr`: unpacking and verification on a small archive built from real AMi-Br files.
The network is never touched: urlopen is replaced in every test."""

from __future__ import annotations

import urllib.error
import urllib.request
import zipfile

import pandas as pd
import pytest

from mitotype.cli import main
from mitotype.data import download
from mitotype.data.spec import load_figures
from mitotype.errors import MitotypeError


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    def refuse(url, *args, **kwargs):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _rows(amibr_root):
    table = pd.read_csv(amibr_root / "AMI-BR.csv", index_col=0)
    # a few figures of both classes and both sources
    return pd.concat([table[table.majority_atypical].head(3), table[~table.majority_atypical].head(3),
                      table[table.dataset == "TUPAC16"].head(2)]).drop_duplicates("uid")


def _build_zip(amibr_root, path, rows, extra=(), top="AMi-Br-main/", truncate=()):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{top}README.md", "AMi-Br")
        zf.writestr(f"{top}images/subclassification.jpg", b"not needed")
        zf.writestr(f"{top}AMI-BR.csv", rows.to_csv())
        for row in rows.itertuples():
            cls = "atypical" if row.majority_atypical else "normal"
            name = f"{row.dataset}_{row.uid}.png"
            data = (amibr_root / "patches" / cls / name).read_bytes()
            zf.writestr(f"{top}patches/{cls}/{name}", data[:200] if name in truncate else data)
        for name, data in extra:
            zf.writestr(name, data)
    return path


def test_unpack_and_verify_archive(amibr_root, tmp_path, capsys):
    rows = _rows(amibr_root)
    archive = _build_zip(amibr_root, tmp_path / "AMi-Br-main.zip", rows)
    split = pd.read_csv(amibr_root / "amibr_train_split.csv")
    split = split[split.dataset_uid.isin(rows.dataset + "_" + rows.uid.astype(str) + ".png")]
    split.to_csv(tmp_path / "split.csv", index=False)
    to = tmp_path / "data"
    code = main(["data", "download", "amibr", "--to", str(to), "--archive", str(archive),
                 "--split-csv", str(tmp_path / "split.csv"), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert '"n_figures": 8' in out and "use the spec amibr:" in out
    assert not (to / "README.md").exists() and not (to / "images").exists()
    figures = load_figures(f"amibr:{to}")
    assert len(figures) == 8 and sum(f.label for f in figures) == rows.majority_atypical.sum()
    assert {f.split for f in figures} <= {"train", "test"} and "train" in {f.split for f in figures}


def test_archive_offline_without_split_warns(amibr_root, tmp_path):
    archive = _build_zip(amibr_root, tmp_path / "a.zip", _rows(amibr_root), top="")
    report = download.download_amibr(tmp_path / "data", archive=archive, progress=False)
    assert report["n_figures"] == 8 and not report["has_split"]
    assert "published split not added" in report["warnings"][0] and "--split-csv" in report["warnings"][0]


def test_offline_without_archive_says_so(tmp_path, capsys):
    message = r"cannot download https://github.com/DeepMicroscopy/AMi-Br.*offline.*--archive"
    with pytest.raises(MitotypeError, match=message):
        download.download_amibr(tmp_path / "data", progress=False)
    assert main(["data", "download", "amibr", "--to", str(tmp_path / "d2"), "--no-progress"]) == 2
    assert "--archive ZIP" in capsys.readouterr().err


def test_verification_catches_bad_archives(amibr_root, tmp_path):
    rows = _rows(amibr_root)
    extra_png = (amibr_root / "patches" / "normal" / "MIDOG21_6.png").read_bytes()
    archive = _build_zip(amibr_root, tmp_path / "extra.zip", rows.iloc[1:],
                         extra=[("AMi-Br-main/patches/normal/stray.png", extra_png)])
    with pytest.raises(MitotypeError, match=r"patches: 8 PNG files but .*AMI-BR\.csv lists 7 figures"):
        download.download_amibr(tmp_path / "d1", archive=archive, progress=False)

    last = rows.iloc[-1]
    corrupt = _build_zip(amibr_root, tmp_path / "corrupt.zip", rows, truncate={f"{last.dataset}_{last.uid}.png"})
    with pytest.raises(MitotypeError, match=rf"{last.dataset}_{last.uid}\.png.*cannot decode"):
        download.download_amibr(tmp_path / "d2", archive=corrupt, progress=False)


def test_unpack_rejects_non_amibr(tmp_path):
    (tmp_path / "not.zip").write_bytes(b"plain text")
    with pytest.raises(MitotypeError, match=r"not\.zip: not a readable zip archive"):
        download.unpack_amibr(tmp_path / "not.zip", tmp_path / "out")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("repo/README.md", "x")
    with pytest.raises(MitotypeError, match=r"other\.zip: no AMI-BR\.csv inside"):
        download.unpack_amibr(tmp_path / "other.zip", tmp_path / "out")
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr("AMI-BR.csv", "x")
        zf.writestr("patches/../../escape.png", "x")
    with pytest.raises(MitotypeError, match="escapes the target folder"):
        download.unpack_amibr(tmp_path / "evil.zip", tmp_path / "out")
    assert not (tmp_path / "escape.png").exists()
