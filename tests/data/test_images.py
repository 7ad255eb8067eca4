"""Image reading: real AMi-Br crops and the track-2 stack, plus the documented conversions and bad input."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tifffile
from PIL import Image

from mitotype.data import images
from mitotype.data.figure import Figure
from mitotype.data.images import fit_size, load_images, read_rgb
from mitotype.errors import MitotypeError


@pytest.fixture(scope="module")
def real_png(amibr_root):
    return amibr_root / "patches" / "atypical" / "MIDOG21_7.png"


def test_read_real_png(real_png):
    image = read_rgb(real_png)
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    assert 50 < image.mean() < 250 and image.std() > 5  # real tissue, not a blank


def test_read_real_stack_pages(track2_root):
    path = track2_root / "input" / "stack_5.tiff"
    pages = tifffile.imread(path)
    assert pages.shape == (16, 128, 128, 3)
    for page in (0, 7, 15):
        np.testing.assert_array_equal(read_rgb(path, page), pages[page])
    with pytest.raises(MitotypeError, match=r"stack_5.tiff.*page 16 does not exist"):
        read_rgb(path, 16)


def test_grayscale_becomes_rgb(tmp_path):
    gray = np.arange(128 * 128, dtype=np.uint32).reshape(128, 128).astype(np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    out = read_rgb(tmp_path / "g.png")
    assert out.shape == (128, 128, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_rgba_drops_alpha(tmp_path, real_png):
    rgb = read_rgb(real_png)
    rgba = np.dstack([rgb, np.full((128, 128), 7, np.uint8)])  # alpha nearly transparent: dropped, not blended
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "a.png"), rgb)


def test_palette_png(tmp_path, real_png):
    Image.fromarray(read_rgb(real_png)).convert("P").save(tmp_path / "p.png")
    out = read_rgb(tmp_path / "p.png")
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8


def test_16bit_gray_png_is_scaled(tmp_path):
    values = np.array([[0, 257, 65535, 32896]], dtype=np.uint16).repeat(4, axis=0)
    Image.fromarray(values).save(tmp_path / "g16.png")
    out = read_rgb(tmp_path / "g16.png")
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 255, 128])
    assert (out[..., 0] == out[..., 2]).all()


def test_16bit_rgb_png_keeps_high_byte(tmp_path):
    """Pillow reduces 48-bit PNGs itself, to the high byte: within one level of the documented scaling."""
    imagecodecs = pytest.importorskip("imagecodecs")
    rgb16 = (np.arange(8 * 8 * 3).reshape(8, 8, 3) * 1000).astype(np.uint16)
    (tmp_path / "c16.png").write_bytes(imagecodecs.png_encode(rgb16))
    out = read_rgb(tmp_path / "c16.png").astype(int)
    np.testing.assert_array_equal(out, rgb16 >> 8)
    assert np.abs(out - np.round(rgb16.astype(float) * 255 / 65535)).max() <= 1


def test_16bit_rgb_tiff_is_scaled(tmp_path):
    rgb16 = (np.arange(8 * 8 * 3).reshape(8, 8, 3) * 257).astype(np.uint16)
    tifffile.imwrite(tmp_path / "c16.tif", rgb16, photometric="rgb")
    np.testing.assert_array_equal(read_rgb(tmp_path / "c16.tif"), np.arange(8 * 8 * 3).reshape(8, 8, 3))


def test_float_images(tmp_path):
    tifffile.imwrite(tmp_path / "f.tif", np.full((4, 4, 3), 0.5, np.float32), photometric="rgb")
    assert (read_rgb(tmp_path / "f.tif") == 128).all()
    tifffile.imwrite(tmp_path / "bad.tif", np.full((4, 4, 3), 3.0, np.float32), photometric="rgb")
    with pytest.raises(MitotypeError, match=r"bad\.tif.*outside \[0, 1\]"):
        read_rgb(tmp_path / "bad.tif")


def test_truncated_png_names_file(tmp_path, real_png):
    data = real_png.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(MitotypeError, match=r"cut\.png.*(corrupt|truncated)"):
        read_rgb(tmp_path / "cut.png")


def test_corrupt_and_missing_files(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"this is not a png at all" * 10)
    with pytest.raises(MitotypeError, match=r"junk\.png.*cannot decode"):
        read_rgb(tmp_path / "junk.png")
    (tmp_path / "junk.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(MitotypeError, match=r"junk\.tif"):
        read_rgb(tmp_path / "junk.tif")
    with pytest.raises(MitotypeError, match=r"nope\.png.*not found"):
        read_rgb(tmp_path / "nope.png")


def test_fit_size_center_crop_and_pad():
    big = np.zeros((130, 140, 3), np.uint8)
    big[65, 70] = 255  # the centre pixel stays the centre pixel
    out = fit_size(big, 128)
    assert out.shape == (128, 128, 3) and out[64, 64, 0] == 255 and out.sum() == 255 * 3
    small = np.full((100, 128, 3), 9, np.uint8)
    out = fit_size(small, 128)
    assert (out[:14] == 0).all() and (out[114:] == 0).all() and (out[14:114] == 9).all()


def test_fit_size_resize_and_error():
    image = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    assert fit_size(image, 128, "resize").shape == (128, 128, 3)
    same = np.zeros((128, 128, 3), np.uint8)
    assert fit_size(same, 128, "error") is same
    with pytest.raises(MitotypeError, match=r"crop\.png: image is 64x96 pixels, expected 128x128"):
        fit_size(image, 128, "error", where="crop.png")
    with pytest.raises(MitotypeError, match="valid: center-crop, resize, error"):
        fit_size(image, 128, "stretch")


def test_load_images_matches_read_rgb(amibr_root, track2_root):
    pngs = sorted((amibr_root / "patches" / "normal").glob("*.png"))[:5]
    stack = track2_root / "input" / "stack_5.tiff"
    figures = [Figure(str(p), 0, "d", "g") for p in pngs]
    figures += [Figure(str(stack), None, "d", "s", page=p) for p in (3, 0, 15)]
    out = load_images(figures, progress=True)
    assert out.shape == (8, 128, 128, 3)
    for fig, image in zip(figures, out):
        np.testing.assert_array_equal(image, read_rgb(fig.path, fig.page))


def test_load_images_reads_each_stack_once(track2_root, monkeypatch):
    opened = []
    real = tifffile.TiffFile

    def counting(path, *args, **kwargs):
        opened.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(tifffile, "TiffFile", counting)
    stack = str(track2_root / "input" / "stack_5.tiff")
    out = load_images([Figure(stack, None, "d", "s", page=p) for p in range(16)])
    assert out.shape == (16, 128, 128, 3) and opened == [stack]


def test_load_images_size_policy(tmp_path):
    Image.fromarray(np.full((100, 100, 3), 200, np.uint8)).save(tmp_path / "small.png")
    figures = [Figure(str(tmp_path / "small.png"), 0, "d", "g")]
    assert load_images(figures, size=128).shape == (1, 128, 128, 3)
    assert (load_images(figures, size=64, policy="resize") == 200).all()
    with pytest.raises(MitotypeError, match=r"small\.png: image is 100x100"):
        load_images(figures, policy="error")
    with pytest.raises(MitotypeError, match="unknown size policy"):
        load_images(figures, policy="squash")


def test_load_images_corrupt_file_names_it(tmp_path, real_png):
    (tmp_path / "bad.png").write_bytes(real_png.read_bytes()[:300])
    figures = [Figure(str(real_png), 1, "d", "g"), Figure(str(tmp_path / "bad.png"), 0, "d", "g")]
    with pytest.raises(MitotypeError, match=r"bad\.png"):
        load_images(figures)


def test_unsupported_shape():
    with pytest.raises(MitotypeError, match="x.png: unsupported image shape"):
        images.to_rgb8(np.zeros((4, 4, 5), np.uint8), "x.png")


def test_load_all_amibr_fast(amibr_root):
    """All 3,720 AMi-Br crops in seconds (docs/DATA.md gives the measured figure); generous bound for CI."""
    from mitotype.data.spec import load_figures

    figures = load_figures(f"amibr:{amibr_root}")
    start = time.perf_counter()
    out = load_images(figures)
    elapsed = time.perf_counter() - start
    assert out.shape == (3720, 128, 128, 3)
    assert elapsed < 60, f"reading AMi-Br took {elapsed:.1f} s"
