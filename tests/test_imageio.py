"""Image decoding of the inputs RS users actually have: RGBA PNG, 16-bit and 4-band TIFF, broken files."""

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from rs_common.errors import SampleSkip
from rs_common.imageio import ImageConfig, configure_pillow
from shards.imageio import jpeg_bytes, load_image


def noise(h=64, w=80, c=3, dtype=np.uint8, high=255, seed=0):
    rng = np.random.default_rng(seed)
    shape = (h, w, c) if c > 1 else (h, w)
    return rng.integers(0, high, size=shape).astype(dtype)


def skip_reason(path, cfg=None):
    with pytest.raises(SampleSkip) as info:
        load_image(path, cfg or ImageConfig())
    assert str(path) in str(info.value)
    return info.value.reason


def test_rgb_jpeg_passes_through_byte_for_byte(tmp_path):
    path = tmp_path / "a.jpg"
    Image.fromarray(noise()).save(path, quality=90)
    loaded = load_image(path, ImageConfig())
    assert loaded.jpeg_bytes == path.read_bytes()
    assert jpeg_bytes(loaded, 95) == path.read_bytes()
    assert loaded.size == (80, 64) and loaded.scale == 1.0


def test_rgba_png_drops_alpha_and_reencodes(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(noise(c=4)).save(path)
    loaded = load_image(path, ImageConfig())
    assert loaded.rgb.mode == "RGB" and loaded.jpeg_bytes is None
    assert any("alpha" in n for n in loaded.notes)
    assert Image.open(io.BytesIO(jpeg_bytes(loaded, 90))).format == "JPEG"


def test_16bit_grey_tiff_is_stretched(tmp_path):
    path = tmp_path / "g16.tif"
    arr = (np.linspace(0, 4000, 64 * 80).reshape(64, 80)).astype(np.uint16)
    Image.fromarray(arr).save(path)
    loaded = load_image(path, ImageConfig())
    out = np.asarray(loaded.rgb)
    assert out.dtype == np.uint8 and out.shape == (64, 80, 3)
    assert out.min() == 0 and out.max() == 255  # full range used after the 2-98 % stretch
    assert any("stretched" in n for n in loaded.notes)


def test_4band_16bit_tiff_uses_configured_bands(tmp_path):
    path = tmp_path / "rgbn.tif"
    arr = np.zeros((32, 48, 4), np.uint16)
    arr[:, :, 0] = 1000  # R
    arr[:, :, 1] = 2000  # G
    arr[:, :, 2] = 3000  # B
    arr[:, :, 3] = np.arange(48, dtype=np.uint16)[None, :] * 100  # NIR varies
    arr[:16] //= 2  # some contrast in every band
    assert cv2.imwrite(str(path), cv2.cvtColor(arr, cv2.COLOR_RGBA2BGRA))
    loaded = load_image(path, ImageConfig())
    assert loaded.rgb.mode == "RGB" and loaded.size == (48, 32)
    assert any("4-band" in n for n in loaded.notes)
    # NIR as red: the red channel now varies along x
    nir = load_image(path, ImageConfig(bands=[3, 1, 2]))
    red = np.asarray(nir.rgb)[20, :, 0].astype(int)
    assert red[-1] > red[0]


def test_truncated_and_corrupt_images_are_counted_skips(tmp_path):
    good = tmp_path / "good.jpg"
    Image.fromarray(noise(256, 256)).save(good, quality=95)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    assert skip_reason(truncated) in ("truncated_image", "corrupt_image")
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    assert skip_reason(garbage) in ("truncated_image", "corrupt_image")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image")
    assert skip_reason(text) == "corrupt_image"
    assert skip_reason(tmp_path / "absent.png") == "missing_image"


def test_huge_image_is_skipped_from_the_header(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (3000, 3000)).save(path)
    cfg = ImageConfig(max_pixels=1_000_000)
    configure_pillow(cfg)
    try:
        assert skip_reason(path, cfg) == "too_large"
    finally:
        configure_pillow(ImageConfig())


def test_large_image_is_downscaled_to_max_side(tmp_path):
    path = tmp_path / "wide.jpg"
    Image.fromarray(noise(300, 1000)).save(path)
    loaded = load_image(path, ImageConfig(max_side=500))
    assert loaded.size == (500, 150) and loaded.scale == pytest.approx(0.5)
    assert loaded.jpeg_bytes is None  # resized: must be re-encoded
    assert loaded.orig_size == (1000, 300)


def test_tiny_image_is_skipped(tmp_path):
    path = tmp_path / "tiny.png"
    Image.fromarray(noise(4, 4)).save(path)
    assert skip_reason(path) == "too_small"


def test_real_rgba_dota_png(shared_data):
    path = shared_data / "detection/dota/images/P0004__1__0___0.png"
    loaded = load_image(path, ImageConfig())
    assert loaded.rgb.mode == "RGB" and loaded.jpeg_bytes is None


def test_real_ucm_tiff(shared_data):
    loaded = load_image(shared_data / "captions/ucm/images/1.tif", ImageConfig())
    assert loaded.size == (256, 256) and loaded.rgb.mode == "RGB"
