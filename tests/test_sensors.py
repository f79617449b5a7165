"""Sensors (optical, SAR, infrared): SAR rasters go to 8 bit through dB + a percentile stretch, infrared like grey,
and every sample says its sensor (sample json, report per source, optionally its captions)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from rs_common.config import ConfigError
from rs_common.imageio import ImageConfig, decode, sar_db, stretch_to_uint8
from shards.build_config import BuildConfig, InputConfig
from shards.cli import main as build_main

W, H = 80, 64
SHIPS = [(10, 10, 22, 18), (64, 40, 76, 50), (30, 50, 40, 60)]  # x1 y1 x2 y2


def sar_intensity(seed: int = 0) -> np.ndarray:
    """Linear intensity: sea clutter (gamma speckle, 4 looks) with a few bright ships, float32."""
    rng = np.random.default_rng(seed)
    mean = np.full((H, W), 0.02, np.float32)
    for x1, y1, x2, y2 in SHIPS:
        mean[y1:y2, x1:x2] = 2.0
    return (mean * rng.gamma(4.0, 1 / 4.0, (H, W))).astype(np.float32)


def sar_amplitude_u16(seed: int = 1) -> np.ndarray:
    """Amplitude DN as uint16 (sqrt of intensity, scaled like a GRD product)."""
    return np.clip(np.sqrt(sar_intensity(seed)) * 4000, 1, 65535).astype(np.uint16)


def reference_8bit(db: np.ndarray, lo_hi=(1.0, 99.0)) -> np.ndarray:
    """What the SAR rule must give: percentile stretch of the dB values, clipped, rounded."""
    finite = db[np.isfinite(db)]
    lo, hi = np.percentile(finite, lo_hi)
    return np.clip(np.rint((db.astype(np.float32) - lo) * np.float32(255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def tiff_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, array)
    return buf.getvalue()


def decoded(array: np.ndarray, sensor: str, **image) -> tuple[np.ndarray, list[str]]:
    rgb, fmt, notes = decode(tiff_bytes(array), Path("x.tif"), ImageConfig(**image), sensor)
    assert fmt == "TIFF" and rgb.mode == "RGB"
    out = np.asarray(rgb)
    assert (out[:, :, 0] == out[:, :, 1]).all() and (out[:, :, 0] == out[:, :, 2]).all()  # grey on 3 channels
    return out[:, :, 0], notes


# ---------------------------------------------------------------- decoding


def test_sar_float_intensity_uses_db_and_percentiles():
    x = sar_intensity()
    got, notes = decoded(x, "sar")
    want = reference_8bit(10 * np.log10(x.astype(np.float64)))
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    assert (got == want).mean() > 0.99
    assert "SAR intensity to dB" in notes[0] and "1-99 %" in notes[0]
    # the speckle's dB range fills 0..255 and the median (sea clutter) sits well inside it, not clipped
    assert got.min() == 0 and got.max() == 255
    assert 40 < np.median(got) < 215
    ships = np.zeros((H, W), bool)
    for x1, y1, x2, y2 in SHIPS:
        ships[y1:y2, x1:x2] = True
    assert got[ships].mean() > got[~ships].mean() + 60


def test_sar_uint16_amplitude_uses_20_log10():
    x = sar_amplitude_u16()
    got, notes = decoded(x, "sar", sar_input="amplitude", sar_percentiles=[2.0, 98.0])
    want = reference_8bit(20 * np.log10(x.astype(np.float64)), (2.0, 98.0))
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    assert "SAR amplitude to dB" in notes[0] and "2-98 %" in notes[0]
    # 20*log10(amplitude) = 10*log10(intensity): the same picture as the intensity it came from
    as_intensity, _ = decoded(x.astype(np.float32) ** 2, "sar")
    assert np.abs(as_intensity.astype(int) - decoded(x, "sar", sar_input="amplitude")[0].astype(int)).max() <= 1


def test_sar_db_input_is_only_stretched():
    db = (10 * np.log10(sar_intensity())).astype(np.float32)
    got, notes = decoded(db, "sar", sar_input="db")
    assert np.abs(got.astype(int) - reference_8bit(db).astype(int)).max() <= 1
    assert "to dB" not in notes[0]


def test_sar_zero_nan_and_nodata_are_black():
    x = sar_intensity()
    x[0, :5] = 0.0
    x[1, :5] = np.nan
    x[2, :5] = -1.0
    got, _ = decoded(x, "sar")
    assert (got[:3, :5] == 0).all()
    db = sar_db(np.array([[1.0, 7.0, 0.0]], np.float32), "intensity", nodata=7.0)
    assert db[0, 0] == 0.0 and np.isnan(db[0, 1]) and db[0, 2] == -np.inf


def test_sar_differs_from_the_optical_stretch_and_optical_is_unchanged():
    x = sar_intensity()
    sar, _ = decoded(x, "sar")
    optical, notes = decoded(x, "optical")
    assert np.array_equal(optical, stretch_to_uint8(x, [2.0, 98.0]))
    assert notes == ["1-band float32 TIFF: stretched to 8 bit (percentiles 2-98 %)"]
    assert np.median(optical) < 20 < np.median(sar)  # linear speckle crushes the sea into black; dB does not


def test_infrared_is_stretched_like_grey_without_db():
    ir = np.random.default_rng(3).normal(30000, 400, (H, W)).clip(0, 65535).astype(np.uint16)
    got, notes = decoded(ir, "infrared")
    assert np.array_equal(got, stretch_to_uint8(ir, [2.0, 98.0]))
    assert np.array_equal(got, decoded(ir, "optical")[0])
    assert "dB" not in notes[0]


def test_eight_bit_images_are_kept_for_every_sensor():
    grey = np.random.default_rng(4).integers(0, 255, (H, W), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="PNG")
    for sensor in ("sar", "infrared"):
        rgb, _, _ = decode(buf.getvalue(), Path("x.png"), ImageConfig(), sensor)
        assert np.array_equal(np.asarray(rgb)[:, :, 1], grey)


def test_settings_are_checked():
    for bad in (dict(sar_input="power"), dict(sar_percentiles=[99.0, 1.0])):
        with pytest.raises(ConfigError):
            ImageConfig(**bad).validate()
    with pytest.raises(ConfigError):
        InputConfig(sensor=["radar"]).validate()
    with pytest.raises(ConfigError):
        InputConfig(sensor=["sar", "optical"]).resolve(3)
    assert InputConfig(sensor=["sar"]).resolve(2) == ["sar", "sar"]
    cfg = BuildConfig()
    cfg.b2c.sensor_templates = {"sar": "a SAR image"}
    with pytest.raises(ConfigError):
        cfg.validate()


# ---------------------------------------------------------------- builds


def dota_sar(root: Path, n: int = 3) -> Path:
    """DOTA layout with float32 SAR intensity GeoTIFF-like rasters and a few ships each."""
    (root / "images").mkdir(parents=True)
    (root / "labelTxt").mkdir(parents=True)
    for k in range(n):
        tifffile.imwrite(root / "images" / f"S{k}.tif", sar_intensity(seed=10 + k))
        lines = [f"{x1} {y1} {x2} {y1} {x2} {y2} {x1} {y2} ship 0" for x1, y1, x2, y2 in SHIPS]
        (root / "labelTxt" / f"S{k}.txt").write_text("\n".join(lines) + "\n")
    return root


def build(out: Path, *args: str) -> dict:
    # the test scenes share one ship layout, so p-Hash would call them duplicates: keep them all
    assert build_main([*args, "--output", str(out), "--workers", "0", "--no-progress", "--dedup.within", "false"]) == 0
    return json.loads((out / "report.json").read_text())


def shard_samples(out: Path) -> dict[str, dict]:
    samples: dict[str, dict] = {}
    for shard in sorted(out.glob("shard-*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


def balances(c: dict) -> bool:
    return c["read"] == c["written"] + sum(c["skipped"].values()) + c["duplicates"] + c["contaminated"]


def test_sar_build_carries_the_sensor_and_scales_through_db(tmp_path):
    root = dota_sar(tmp_path / "sar")
    report = build(tmp_path / "out", "--input", f"dota:{root}", "--input.sensor", "sar")
    assert report["written"] == 3 and balances(report)
    assert report["sources"]["sar"]["sensor"] == "sar" and balances(report["sources"]["sar"])
    samples = shard_samples(tmp_path / "out")
    assert len(samples) == 3
    for key, members in samples.items():
        meta = json.loads(members["json"])
        assert meta["sensor"] == "sar"
        assert any("SAR intensity to dB" in n for n in meta["conversion"])
        assert all("SAR" not in c for c in meta["captions"])  # no template: captions as B2C makes them
        k = int(meta["rel_path"].split("S")[-1].split(".")[0])
        want = reference_8bit(10 * np.log10(sar_intensity(seed=10 + k).astype(np.float64)))
        got = np.asarray(Image.open(io.BytesIO(members["jpg"])).convert("L")).astype(int)
        assert np.abs(got - want.astype(int)).mean() < 6  # JPEG at quality 95 over speckle
    assert "sar (sar)" in (tmp_path / "out" / "report.html").read_text()


def test_caption_template_and_one_sensor_per_input(tmp_path):
    sar = dota_sar(tmp_path / "sar", n=2)
    opt = tmp_path / "opt"
    (opt / "images").mkdir(parents=True)
    (opt / "labelTxt").mkdir(parents=True)
    for k in range(2):
        pixels = np.random.default_rng(50 + k).integers(0, 255, (H, W, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(opt / "images" / f"P{k}.png")
        (opt / "labelTxt" / f"P{k}.txt").write_text("10 10 30 10 30 20 10 20 ship 0\n")
    template = json.dumps({"sar": "a SAR image with {caption}"})
    report = build(tmp_path / "out", "--input", f"dota:{sar}", "--input", f"dota:{opt}",
                   "--input.sensor", "sar", "optical", "--b2c.sensor-templates", template)
    assert balances(report) and report["written"] == 4
    assert {n: c["sensor"] for n, c in report["sources"].items()} == {"sar": "sar", "opt": "optical"}
    for members in shard_samples(tmp_path / "out").values():
        meta = json.loads(members["json"])
        if meta["source"] == "sar":
            assert meta["sensor"] == "sar"
            assert all(c.startswith("a SAR image with ") for c in meta["captions"])
            assert "a SAR image with 3 ships at the edge of the picture." in meta["captions"]
            assert members["txt"].decode().startswith("a SAR image with ")
        else:
            assert meta["sensor"] == "optical" and not any("SAR" in c for c in meta["captions"])


def test_sensor_count_must_match_the_inputs(tmp_path, capsys):
    sar = dota_sar(tmp_path / "sar", n=1)
    with pytest.raises(SystemExit) as exc:
        build_main(["--input", f"dota:{sar}", "--input.sensor", "sar", "optical", "infrared",
                    "--output", str(tmp_path / "out"), "--no-progress"])
    assert exc.value.code == 2 and "one per --input" in capsys.readouterr().err


def test_tiled_sar_scenes_keep_the_sensor(tmp_path):
    root = dota_sar(tmp_path / "sar", n=1)
    report = build(tmp_path / "out", "--input", f"dota:{root}", "--input.sensor", "sar", "--tile.size", "40",
                   "--tile.overlap", "0", "--b2c.sensor-templates", '{"sar": "{caption} (SAR)"}')
    assert balances(report) and report["written"] >= 2 and report["sources"]["sar"]["sensor"] == "sar"
    for members in shard_samples(tmp_path / "out").values():
        meta = json.loads(members["json"])
        assert meta["sensor"] == "sar" and "tile" in meta
        assert any("SAR intensity to dB" in n for n in meta["conversion"])
        assert all(c.endswith(" (SAR)") and c[0].isupper() for c in meta["captions"])
