"""``mitotype predict``: inputs, outputs, TTA, ensembles, slides, through the real CLI."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from mitotype.cli import main
from mitotype.errors import MitotypeError
from mitotype.predict.run import collect_figures, predict

from .conftest import amibr_pngs
from .test_slide import write_pyramid


@pytest.fixture(scope="module")
def stack(track2_root):
    return track2_root / "input" / "stack_5.tiff"


@pytest.fixture(scope="module")
def second_model(small_model, tmp_path_factory):
    """Another model file: the small model with a shifted atypical bias and its own threshold."""
    import torch

    from mitotype.models.modelfile import load_model, save_model

    loaded = load_model(small_model)
    with torch.no_grad():
        loaded.model.head.mlp[-1].bias[1] += 0.3
    path = tmp_path_factory.mktemp("model2") / "second.pt"
    save_model(path, loaded.model, loaded.config, threshold=loaded.threshold + 0.05)
    return path


def test_collect_figures(tmp_path, amibr_root, stack):
    pngs = amibr_pngs(amibr_root, 3)
    (tmp_path / "a" / "b").mkdir(parents=True)
    shutil.copy(pngs[0], tmp_path / "a" / "one.png")
    shutil.copy(pngs[1], tmp_path / "a" / "b" / "two.png")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "a" / ".hidden.png").write_bytes(b"")
    figures = collect_figures([tmp_path / "a", stack, pngs[2]], 128)
    assert [f.name for f in figures[:2]] == ["two.png", "one.png"]  # sorted by path: a/b/ before a/one
    assert [f.page for f in figures[2:18]] == list(range(16))
    assert figures[18].path == str(pngs[2]) and figures[18].page is None
    assert len(figures) == 19


def test_collect_figures_refuses_bad_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MitotypeError, match="no images"):
        collect_figures([tmp_path / "empty"], 128)
    with pytest.raises(MitotypeError, match="no such file"):
        collect_figures([tmp_path / "missing.png"], 128)
    Image.new("RGB", (2000, 1500)).save(tmp_path / "field.png")
    with pytest.raises(MitotypeError, match="--slide"):
        collect_figures([tmp_path / "field.png"], 128)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(MitotypeError, match="broken.png"):
        collect_figures([tmp_path / "broken.png"], 128)


def test_predict_stack_table(small_model, stack, capsys):
    assert main(["predict", str(stack), "--model", str(small_model)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["source", "index", "p_atypical", "class"]  # no x/y for crops
    assert len(lines) == 1 + 16 + 1
    assert lines[-1].startswith("16 figures:")


def test_predict_matches_inference_and_threshold(small_loaded, small_model, stack):
    from mitotype.data.images import load_images
    from mitotype.models.inference import predict_proba
    from mitotype.predict.challenge import stack_figures

    rows, info = predict([stack], [str(small_model)], device="cpu")
    direct = predict_proba([small_loaded], load_images(stack_figures(stack)), backend="onnx")  # predict's CPU default
    np.testing.assert_allclose([r["p_atypical"] for r in rows], direct, atol=1e-6)
    assert [r["index"] for r in rows] == list(range(16)) and info["backend"] == "onnx"
    assert info["threshold"] == pytest.approx(small_loaded.threshold)
    assert all(r["class"] == ("atypical" if r["p_atypical"] >= info["threshold"] else "normal") for r in rows)


def test_outputs_csv_json(tmp_path, small_model, stack):
    assert main(["predict", str(stack), "--model", str(small_model), "--out", str(tmp_path / "p.csv")]) == 0
    with open(tmp_path / "p.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["source", "index", "x", "y", "p_atypical", "class"]
    assert len(rows) == 16 and all(0 <= float(r["p_atypical"]) <= 1 for r in rows)
    assert rows[0]["x"] == "" and rows[3]["index"] == "3"
    assert main(["predict", str(stack), "--model", str(small_model), "--out", str(tmp_path / "p.json")]) == 0
    data = json.loads((tmp_path / "p.json").read_text())
    assert len(data["predictions"]) == 16 and "provenance" in data and data["models"] == [str(small_model)]
    assert [r["p_atypical"] for r in data["predictions"]] == pytest.approx([float(r["p_atypical"]) for r in rows])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "p.json"]  # no temporary leftovers


def test_output_errors_come_before_work(tmp_path, stack, capsys):
    # the model does not exist: the bad suffix must be reported first, without a traceback
    assert main(["predict", str(stack), "--model", "nope.pt", "--out", str(tmp_path / "p.xlsx")]) == 2
    assert "unknown output format" in capsys.readouterr().err
    assert main(["predict", str(stack), "--model", "nope.pt", "--out", str(tmp_path / "p.geojson")]) == 2
    assert "--slide" in capsys.readouterr().err
    assert main(["predict", "--slide", str(stack), "--model", "nope.pt"]) == 2
    assert "--coords" in capsys.readouterr().err
    assert main(["predict", str(stack), "--model", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt" in capsys.readouterr().err


def test_tta_is_invariant_to_flips_and_rotations(small_model, amibr_root, tmp_path):
    crops = [np.asarray(Image.open(p).convert("RGB")) for p in amibr_pngs(amibr_root, 4)]
    for i, crop in enumerate(crops):
        Image.fromarray(crop).save(tmp_path / f"{i}.png")
        # flips and 180-degree turns: the 128 -> 64 px resize commutes with these exactly (transposes differ
        # by uint8 rounding between its two separable passes)
        turned = crop[:, ::-1] if i % 2 else crop[::-1, ::-1]
        Image.fromarray(np.ascontiguousarray(turned)).save(tmp_path / f"{i}_t.png")
    rows, info = predict([tmp_path], [str(small_model)], tta=True, device="cpu")
    p = {r["source"].rsplit("/", 1)[-1]: r["p_atypical"] for r in rows}
    for i in range(4):
        assert p[f"{i}.png"] == pytest.approx(p[f"{i}_t.png"], abs=1e-5)
    plain, _ = predict([tmp_path], [str(small_model)], tta=False, device="cpu")
    plain_p = {r["source"].rsplit("/", 1)[-1]: r["p_atypical"] for r in plain}
    assert max(abs(plain_p[f"{i}.png"] - plain_p[f"{i}_t.png"]) for i in range(4)) > 1e-4  # TTA did something
    assert info["tta"] is True


def test_ensemble_is_the_mean(small_model, second_model, stack):
    one, info1 = predict([stack], [str(small_model)], device="cpu")
    two, info2 = predict([stack], [str(second_model)], device="cpu")
    both, info = predict([stack], [str(small_model), str(second_model)], device="cpu")
    want = (np.array([r["p_atypical"] for r in one]) + [r["p_atypical"] for r in two]) / 2
    np.testing.assert_allclose([r["p_atypical"] for r in both], want, atol=1e-6)
    assert not np.allclose([r["p_atypical"] for r in one], [r["p_atypical"] for r in two])
    assert info["threshold"] == pytest.approx((info1["threshold"] + info2["threshold"]) / 2)


def test_slide_positions_to_geojson(tmp_path, small_model, amibr_root):
    """Figures on a 0.5 µm/px slide are predicted like the original 0.25 µm/px crops."""
    from mitotype.models.modelfile import load_model

    crops = [np.asarray(Image.open(p).convert("RGB")) for p in amibr_pngs(amibr_root, 4)]
    image = np.full((200, 4 * 160, 3), 235, np.uint8)
    for i, crop in enumerate(crops):
        image[36:164, 16 + 160 * i:144 + 160 * i] = crop
    half = np.asarray(Image.fromarray(image).resize((320, 100), Image.Resampling.LANCZOS))
    write_pyramid(tmp_path / "slide.tif", half, 0.5, levels=2)
    (tmp_path / "xy.csv").write_text("x,y\n" + "".join(f"{(80 + 160 * i) / 2},{50}\n" for i in range(4)))
    out = tmp_path / "figs.geojson"
    assert main(["predict", "--slide", str(tmp_path / "slide.tif"), "--coords", str(tmp_path / "xy.csv"),
                 "--model", str(small_model), "--out", str(out)]) == 0
    features = json.loads(out.read_text())["features"]
    assert [f["geometry"]["coordinates"] for f in features] == [[(80 + 160 * i) / 2, 50.0] for i in range(4)]
    from mitotype.models.inference import predict_proba

    p_orig = predict_proba([load_model(small_model)], np.stack(crops))
    p_slide = [f["properties"]["measurements"]["p_atypical"] for f in features]
    np.testing.assert_allclose(p_slide, p_orig, atol=0.01)

    # --shape square: the crop's field of view, 128 px at 0.25 µm/px = 64 level-0 px of this 0.5 µm/px slide
    squares = tmp_path / "squares.geojson"
    assert main(["predict", "--slide", str(tmp_path / "slide.tif"), "--coords", str(tmp_path / "xy.csv"),
                 "--model", str(small_model), "--out", str(squares), "--shape", "square"]) == 0
    for feature, point in zip(json.loads(squares.read_text())["features"], features):
        ring = np.array(feature["geometry"]["coordinates"][0])
        assert feature["geometry"]["type"] == "Polygon" and len(ring) == 5 and (ring[0] == ring[-1]).all()
        x, y = point["geometry"]["coordinates"]
        assert ring[:, 0].min() == x - 32 and ring[:, 0].max() == x + 32 and ring[:, 1].max() == y + 32
        assert feature["id"] == point["id"]
        assert feature["properties"]["measurements"]["x"] == x
    # --mpp overrides the slide's metadata: claiming 0.25 µm/px halves the field read around each point
    assert main(["predict", "--slide", str(tmp_path / "slide.tif"), "--coords", str(tmp_path / "xy.csv"),
                 "--model", str(small_model), "--out", str(squares), "--shape", "square", "--mpp", "0.25"]) == 0
    ring = np.array(json.loads(squares.read_text())["features"][0]["geometry"]["coordinates"][0])
    assert ring[:, 0].max() - ring[:, 0].min() == 128
    assert main(["predict", str(tmp_path / "xy.csv"), "--shape", "square", "--out", str(tmp_path / "p.csv")]) == 2

def test_shards_partition_the_figures_in_order(tmp_path, small_model, stack):
    whole = tmp_path / "whole.csv"
    assert main(["predict", str(stack), "--model", str(small_model), "--out", str(whole), "--threads", "1"]) == 0
    parts = []
    for i in range(3):  # 16 pages in 3 parts: 5, 5, 6
        out = tmp_path / f"part-{i}.csv"
        assert main(["predict", str(stack), "--model", str(small_model), "--out", str(out), "--threads", "1",
                     "--shard", f"{i}/3"]) == 0
        parts.append(out.read_text().splitlines())
    assert [len(p) - 1 for p in parts] == [5, 5, 6]
    assert [parts[0][0], *(line for p in parts for line in p[1:])] == whole.read_text().splitlines()


@pytest.mark.parametrize("text", ["3/3", "-1/2", "1", "a/b", "0/0"])
def test_bad_shards_are_refused(text):
    from mitotype.predict.run import parse_shard

    with pytest.raises(MitotypeError, match="--shard"):
        parse_shard(text)


def test_shard_ranges_cover_everything_once():
    from mitotype.predict.run import shard_range

    for total in (0, 1, 7, 16, 3720):
        for n in (1, 2, 3, 8, 20):
            got = [k for i in range(n) for k in shard_range(total, (i, n))]
            assert got == list(range(total))
