"""Slide crops at the model's resolution, on pyramidal TIFFs built from real AMi-Br crops."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mitotype.errors import MitotypeError
from mitotype.predict.slide import read_coords, read_slide_crops

from .conftest import amibr_pngs

CROP = 128
PITCH = 160  # crops laid out every 160 px on a light background


def write_pyramid(path, image: np.ndarray, mpp: float | None, levels: int = 3) -> None:
    """A tiled pyramidal TIFF (SubIFDs) like a scanner's, with resolution tags when ``mpp`` is given."""
    import tifffile

    opts = dict(tile=(128, 128), photometric="rgb", compression="zlib")
    with tifffile.TiffWriter(path) as tw:
        res = {} if mpp is None else dict(resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
        tw.write(image, subifds=levels - 1, **opts, **res)
        for k in range(1, levels):
            d = 2**k
            level = np.asarray(Image.fromarray(image).reduce(d))
            res = {} if mpp is None else dict(resolution=(1e4 / mpp / d, 1e4 / mpp / d), resolutionunit="CENTIMETER")
            tw.write(level, subfiletype=1, **opts, **res)


@pytest.fixture(scope="module")
def mosaic(amibr_root):
    """A 'slide' at 0.25 µm/px (AMi-Br's resolution) made of 6 real crops; returns (image, crops, centres)."""
    crops = [np.asarray(Image.open(p).convert("RGB")) for p in amibr_pngs(amibr_root, 6)]
    image = np.full((3 * PITCH + 40, 2 * PITCH + 60, 3), 235, np.uint8)
    centres = []
    for i, crop in enumerate(crops):
        row, col = divmod(i, 2)
        y0, x0 = 20 + row * PITCH, 30 + col * PITCH
        image[y0:y0 + CROP, x0:x0 + CROP] = crop
        centres.append((x0 + CROP // 2, y0 + CROP // 2))
    return image, crops, np.array(centres, dtype=float)


def test_same_resolution_gives_the_original_pixels(tmp_path, mosaic):
    image, crops, centres = mosaic
    write_pyramid(tmp_path / "s.tif", image, 0.25)
    out = read_slide_crops(tmp_path / "s.tif", centres, CROP, 0.25)
    assert out.shape == (6, CROP, CROP, 3) and out.dtype == np.uint8
    for got, want in zip(out, crops):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("slide_mpp", [0.5, 0.125])
def test_other_resolution_is_resampled_to_the_model_scale(tmp_path, mosaic, slide_mpp):
    """A slide at 0.5 (or 0.125) µm/px: the crop must cover the same tissue as the original 0.25 µm/px crop."""
    image, crops, centres = mosaic
    factor = 0.25 / slide_mpp
    size = (round(image.shape[1] * factor), round(image.shape[0] * factor))
    scaled = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
    write_pyramid(tmp_path / "s.tif", scaled, slide_mpp)
    out = read_slide_crops(tmp_path / "s.tif", centres * factor, CROP, 0.25)
    for got, want in zip(out, crops):
        err = np.abs(got.astype(float) - want).mean()
        # a 4-pixel shift of the same crop (misplaced or wrongly scaled window) is far worse
        shifted = np.abs(np.roll(got, 4, axis=1).astype(float) - want).mean()
        assert err < 6, err
        assert shifted > 2.5 * err


def test_border_positions_are_zero_padded(tmp_path, mosaic):
    image, _, _ = mosaic
    write_pyramid(tmp_path / "s.tif", image, 0.25)
    out = read_slide_crops(tmp_path / "s.tif", np.array([[5.0, 5.0]]), CROP, 0.25)
    assert (out[0, :50, :50] == 0).all()  # beyond the top-left corner
    np.testing.assert_array_equal(out[0, 64:, 64:], image[5:69, 5:69])


def test_missing_resolution_needs_slide_mpp(tmp_path, mosaic):
    image, crops, centres = mosaic
    write_pyramid(tmp_path / "nores.tif", image, None)
    with pytest.raises(MitotypeError, match="--slide-mpp"):
        read_slide_crops(tmp_path / "nores.tif", centres, CROP, 0.25)
    out = read_slide_crops(tmp_path / "nores.tif", centres, CROP, 0.25, slide_mpp_override=0.25)
    np.testing.assert_array_equal(out[0], crops[0])


def test_bad_positions_and_files(tmp_path, mosaic):
    image, _, _ = mosaic
    write_pyramid(tmp_path / "s.tif", image, 0.25)
    with pytest.raises(MitotypeError, match="outside the slide"):
        read_slide_crops(tmp_path / "s.tif", np.array([[10.0, 10.0], [1e6, 3.0]]), CROP, 0.25)
    (tmp_path / "junk.svs").write_bytes(b"not a slide at all")
    with pytest.raises(MitotypeError, match="junk.svs"):
        read_slide_crops(tmp_path / "junk.svs", np.array([[1.0, 1.0]]), CROP, 0.25)
    with pytest.raises(MitotypeError, match="not found"):
        read_slide_crops(tmp_path / "nope.tif", np.array([[1.0, 1.0]]), CROP, 0.25)


def test_read_coords(tmp_path):
    (tmp_path / "ok.csv").write_text("id,X,Y\na,10,20.5\nb,30,40\n")
    np.testing.assert_array_equal(read_coords(tmp_path / "ok.csv"), [[10, 20.5], [30, 40]])
    (tmp_path / "cols.csv").write_text("cx,cy\n1,2\n")
    with pytest.raises(MitotypeError, match="columns x and y"):
        read_coords(tmp_path / "cols.csv")
    (tmp_path / "text.csv").write_text("x,y\n1,abc\n")
    with pytest.raises(MitotypeError, match="numbers"):
        read_coords(tmp_path / "text.csv")
    (tmp_path / "empty.csv").write_text("x,y\n")
    with pytest.raises(MitotypeError, match="no figure positions"):
        read_coords(tmp_path / "empty.csv")
