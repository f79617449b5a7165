"""Multi-band GeoTIFFs as GDAL writes them (band-interleaved, min-is-black, tiled, deflate/LZW, GDAL_NODATA):
``image.bands`` picks the channels for any band count, 16-bit bands are stretched per picked band, nodata is
left out, and a band that is not there is a counted skip naming the file."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from rs_common.errors import SampleSkip
from rs_common.imageio import ImageConfig, band_percentiles
from shards.cli import main as build_main
from shards.imageio import load_image

H, W = 64, 96
# band k: a low-frequency wave of its own (periods across x, periods down y), so every band is told apart by
# correlation, a percentile stretch keeps its structure, and 4:2:0 JPEG chroma barely touches it
WAVES = [(1, 0), (0, 1), (1, 1), (2, 0), (0, 2), (1, -1), (2, 1), (1, 2), (2, -1), (3, 0), (0, 3), (2, 2), (3, 1)]
NODATA = 0


def band(k: int) -> np.ndarray:
    fx, fy = WAVES[k]
    y, x = np.mgrid[0:H, 0:W]
    wave = np.sin(2 * np.pi * (fx * x / W + fy * y / H) + 0.3)
    return (1000 * (k + 1) + 800 * (1 + wave)).astype(np.uint16)


def bands_array(count: int) -> np.ndarray:
    """(count, H, W) uint16, band k = ``band(k)``: the planar order GDAL keeps."""
    return np.stack([band(k) for k in range(count)])


def write_gdal_tiff(path: Path, planes: np.ndarray, *, compression="zlib", tiled=True, predictor=None,
                    planarconfig="separate", nodata: int | None = None) -> Path:
    """A TIFF in GDAL's layout: min-is-black, one plane per band, tiled, compressed, GDAL_NODATA as ASCII."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = planes if planarconfig == "separate" else np.moveaxis(planes, 0, -1)
    if len(planes) == 1:  # one band has no planar layout
        data, planarconfig = planes[0], None
    extratags = [(42113, "s", 0, str(nodata), True)] if nodata is not None else []
    tifffile.imwrite(path, data, photometric="minisblack", planarconfig=planarconfig, compression=compression,
                     predictor=predictor, tile=(32, 32) if tiled else None, rowsperstrip=None if tiled else 8,
                     extratags=extratags, metadata=None)
    return path


def expected_8bit(values: np.ndarray, nodata: int | None = None) -> np.ndarray:
    """The 2-98 % stretch written out independently of shards.imageio; nodata left out and black."""
    valid = values != nodata if nodata is not None else np.ones(values.shape, bool)
    lo, hi = np.percentile(values[valid].astype(np.float64), [2, 98])
    out = np.clip((values.astype(np.float64) - lo) / (hi - lo), 0, 1) * 255
    out[~valid] = 0
    return out


def assert_channels_show(rgb: np.ndarray, planes: np.ndarray, picked: list[int], nodata: int | None = None) -> None:
    """Channel c of ``rgb`` is band ``picked[c]`` stretched, and looks like no other band."""
    assert rgb.shape == (H, W, 3)
    for c, b in enumerate(picked):
        got = rgb[:, :, c].astype(np.float64)
        want = expected_8bit(planes[b], nodata)
        corr = np.corrcoef(got.ravel(), want.ravel())[0, 1]
        assert corr > 0.97 and np.abs(got - want).mean() < 6, (c, b, corr, np.abs(got - want).mean())
        for other in set(range(len(planes))) - {b}:
            if WAVES[other] != WAVES[b]:
                assert np.corrcoef(got.ravel(), expected_8bit(planes[other], nodata).ravel())[0, 1] < 0.6, (c, b, other)


def build(root: Path, out: Path, *extra: str) -> dict:
    rc = build_main(["--input", f"folders:{root}", "--output", str(out), "--workers", "0", "--no-progress", *extra])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    for counts in [report, *report["sources"].values()]:
        assert counts["read"] == counts["written"] + sum(counts["skipped"].values()) + counts["duplicates"] + counts["contaminated"]
    return report


def shard_images(out: Path) -> dict[str, tuple[np.ndarray, dict]]:
    """rel_path -> (decoded shard JPEG, sample json)."""
    members: dict[str, dict[str, bytes]] = {}
    for shard in sorted(out.glob("shard-*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                key, ext = m.name.rsplit(".", 1)
                members.setdefault(key, {})[ext] = tar.extractfile(m).read()
    samples = {}
    for parts in members.values():
        meta = json.loads(parts["json"])
        samples[meta["rel_path"]] = (np.asarray(Image.open(io.BytesIO(parts["jpg"])).convert("RGB")), meta)
    return samples


def issues(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "issues.jsonl").read_text().splitlines()]


CASES = {
    "4band_tiled_deflate_bgr": (4, dict(), ["2", "1", "0"]),
    "4band_nir_as_red_striped_lzw": (4, dict(compression="lzw", tiled=False), ["3", "1", "0"]),
    "4band_pixel_interleaved": (4, dict(planarconfig="contig", predictor=2), ["2", "1", "0"]),
    "6band_tiled_lzw_predictor": (6, dict(compression="lzw", predictor=2), ["5", "3", "1"]),
    "6band_bgr": (6, dict(), ["2", "1", "0"]),
    "13band_bgr": (13, dict(compression="lzw"), ["2", "1", "0"]),
    "13band_sentinel2_true_colour": (13, dict(), ["3", "2", "1"]),
    "13band_sentinel2_false_colour": (13, dict(compression="lzw"), ["7", "3", "2"]),
}


@pytest.mark.parametrize("case", CASES)
def test_gdal_layout_tiff_channels_are_the_picked_bands(tmp_path, case):
    count, layout, picked = CASES[case]
    planes = bands_array(count)
    write_gdal_tiff(tmp_path / "in" / "farmland" / "scene.tif", planes, **layout)
    report = build(tmp_path / "in", tmp_path / "out", "--image.bands", *picked)
    assert report["written"] == 1 and report["skipped"] == {}
    rgb, meta = shard_images(tmp_path / "out")["farmland/scene.tif"]
    assert_channels_show(rgb, planes, [int(b) for b in picked])
    assert meta["conversion"] == [f"{count}-band uint16 TIFF: bands {[int(b) for b in picked]} used as RGB, "
                                  "stretched to 8 bit (percentiles 2-98 %)"]


def test_default_bands_take_the_first_three_of_a_4band_tiff(tmp_path):
    planes = bands_array(4)
    write_gdal_tiff(tmp_path / "in" / "harbor" / "rgbn.tif", planes)
    build(tmp_path / "in", tmp_path / "out")
    rgb, _ = shard_images(tmp_path / "out")["harbor/rgbn.tif"]
    assert_channels_show(rgb, planes, [0, 1, 2])


def test_gdal_nodata_is_left_out_of_the_stretch_and_written_black(tmp_path):
    planes = bands_array(4)
    planes[:, :16, :24] = NODATA  # a no-data corner, 6 % of the scene: it would be the 2 % point otherwise
    write_gdal_tiff(tmp_path / "in" / "farmland" / "edge.tif", planes, nodata=NODATA)
    build(tmp_path / "in", tmp_path / "out", "--image.bands", "2", "1", "0")
    rgb, meta = shard_images(tmp_path / "out")["farmland/edge.tif"]
    assert_channels_show(rgb, planes, [2, 1, 0], nodata=NODATA)
    assert rgb[2:14, 2:22].max() < 12  # black, up to JPEG ringing
    assert "nodata 0 left out" in meta["conversion"][0]
    # with the no-data pixels in the percentiles, the valid area would come out far darker/flatter
    assert np.abs(expected_8bit(planes[2]) - expected_8bit(planes[2], NODATA))[16:, 24:].mean() > 20


def test_band_past_the_last_is_a_counted_skip_naming_the_file(tmp_path):
    write_gdal_tiff(tmp_path / "in" / "farmland" / "rgbn.tif", bands_array(4))
    planes6 = bands_array(6)
    write_gdal_tiff(tmp_path / "in" / "farmland" / "six.tif", planes6)
    out = tmp_path / "out"
    report = build(tmp_path / "in", out, "--image.bands", "5", "1", "0")
    assert report["read"] == 2 and report["written"] == 1 and report["skipped"] == {"band_out_of_range": 1}
    [issue] = [i for i in issues(out) if i["reason"] == "band_out_of_range"]
    assert "rgbn.tif: has 4 bands" in issue["message"] and "band 5 (0-based)" in issue["message"]
    assert "image.bands=[5, 1, 0]" in issue["message"]
    rgb, _ = shard_images(out)["farmland/six.tif"]
    assert_channels_show(rgb, planes6, [5, 1, 0])


def test_single_band_is_grey_by_default_and_must_have_the_bands_picked(tmp_path):
    path = write_gdal_tiff(tmp_path / "dem.tif", bands_array(1))
    grey = np.asarray(load_image(path, ImageConfig()).rgb)
    assert (grey[:, :, 0] == grey[:, :, 1]).all() and (grey[:, :, 1] == grey[:, :, 2]).all()
    assert np.corrcoef(grey[:, :, 0].ravel(), expected_8bit(band(0)).ravel())[0, 1] > 0.99
    assert (np.asarray(load_image(path, ImageConfig(bands=[0, 0, 0])).rgb) == grey).all()
    with pytest.raises(SampleSkip) as info:
        load_image(path, ImageConfig(bands=[2, 1, 0]))
    assert info.value.reason == "band_out_of_range"
    assert "dem.tif: has 1 band," in str(info.value) and "band 1, 2 (0-based)" in str(info.value)


def test_8bit_rgb_is_the_same_through_pillow_and_tifffile_and_bands_apply(tmp_path):
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    contig = tmp_path / "contig.tif"  # plain RGB: Pillow's route
    tifffile.imwrite(contig, pixels, photometric="rgb", compression="zlib")
    planar = tmp_path / "planar.tif"  # band-interleaved: tifffile's route
    tifffile.imwrite(planar, np.moveaxis(pixels, -1, 0), photometric="rgb", planarconfig="separate", tile=(32, 32))
    png = tmp_path / "a.png"
    Image.fromarray(pixels).save(png)
    for path in (contig, planar, png):
        plain = load_image(path, ImageConfig())
        assert (np.asarray(plain.rgb) == pixels).all() and plain.notes == [], path
        swapped = load_image(path, ImageConfig(bands=[2, 1, 0]))
        assert (np.asarray(swapped.rgb) == pixels[:, :, ::-1]).all(), path
        assert swapped.notes == [f"3-band uint8 {'PNG' if path == png else 'TIFF'}: bands [2, 1, 0] used as RGB"]
    # a TIFF Orientation tag (180 degrees here) is applied, or with image.exif_orientation=ignore not, on both layouts
    for planarconfig in ("contig", "separate"):
        turned = tmp_path / f"turned-{planarconfig}.tif"
        tifffile.imwrite(turned, pixels if planarconfig == "contig" else np.moveaxis(pixels, -1, 0), photometric="rgb",
                         planarconfig=planarconfig, extratags=[(274, "H", 1, 3, True)])
        loaded = load_image(turned, ImageConfig(bands=[2, 1, 0]))
        assert (np.asarray(loaded.rgb) == pixels[::-1, ::-1, ::-1]).all(), planarconfig
        assert any("orientation 3 applied" in n for n in loaded.notes), loaded.notes
        kept = load_image(turned, ImageConfig(bands=[2, 1, 0], exif_orientation="ignore"))
        assert (np.asarray(kept.rgb) == pixels[:, :, ::-1]).all(), planarconfig


def test_float_raster_nodata_and_nan_left_out(tmp_path):
    values = np.linspace(-1.0, 1.0, H * W, dtype=np.float32).reshape(H, W)  # an NDVI-like ramp
    values[0, :10] = np.nan
    values[1, :10] = -9999.9
    path = tmp_path / "ndvi.tif"
    tifffile.imwrite(path, values, photometric="minisblack", compression="zlib", predictor=3,
                     extratags=[(42113, "s", 0, "-9999.9", True)])
    loaded = load_image(path, ImageConfig())
    grey = np.asarray(loaded.rgb)[:, :, 0]
    assert grey[0, :10].max() == 0 and grey[1, :10].max() == 0
    assert grey[-1, -1] == 255 and grey[H // 2, 0] < grey[H // 2, -1]
    assert loaded.notes == ["1-band float32 TIFF: stretched to 8 bit (percentiles 2-98 %, nodata -9999.9 left out)"]


def test_size_is_checked_from_the_header_and_truncation_is_named(tmp_path):
    path = write_gdal_tiff(tmp_path / "big.tif", bands_array(13))
    with pytest.raises(SampleSkip) as info:
        load_image(path, ImageConfig(max_pixels=H * W - 1))
    assert info.value.reason == "too_large"
    cut = tmp_path / "cut.tif"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    with pytest.raises(SampleSkip) as info:
        load_image(cut, ImageConfig(bands=[3, 2, 1]))
    assert info.value.reason == "truncated_image" and "cut.tif" in str(info.value)


def test_histogram_percentiles_equal_numpy():
    rng = np.random.default_rng(0)
    for i in range(200):
        dtype = np.uint8 if i % 2 else np.uint16
        values = rng.integers(0, int(rng.choice([3, 255, 4000, 65535])) if dtype == np.uint16 else 255,
                              int(rng.integers(1, 3000))).astype(dtype)
        qs = sorted(rng.uniform(0, 100, 2).tolist()) if i % 3 else [2.0, 98.0]
        assert np.array_equal(band_percentiles(values, qs), np.percentile(values, qs)), (i, qs)
