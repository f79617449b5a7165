"""Decode any RS image into 8-bit RGB, or say precisely why not.

RS imagery is not all 8-bit RGB JPEG: DOTA ships RGBA PNGs, UCM/Sydney TIFFs, Gaofen/Sentinel products
come as 16-bit or 4-band (RGB+NIR) GeoTIFFs, and DOTA/xView scenes reach 20k x 20k pixels. Pillow
covers most of it; multi-band 16-bit TIFFs it cannot open, so those go through OpenCV's TIFF reader.
Every failure becomes a :class:`SampleSkip` with a stable reason key for the run report.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import cv2
import numpy as np
from PIL import Image, ImageFile

from shards.build_config import ImageConfig
from shards.record import SampleSkip

HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


@dataclass
class LoadedImage:
    """An image ready for a shard: ``rgb`` at the size it will be written, ``scale`` = written / original."""

    rgb: Image.Image
    orig_size: tuple[int, int]
    scale: float
    source_format: str
    jpeg_bytes: bytes | None = None  # the original file, when it can be written as it is
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.size


def configure_pillow(cfg: ImageConfig) -> None:
    """Raise Pillow's decompression-bomb limit to our own cap (call once per worker process).

    Pillow refuses images over ~179 MP by default; large RS scenes are legitimate, and ``max_pixels`` is
    checked explicitly from the header before any pixel is decoded.
    """
    Image.MAX_IMAGE_PIXELS = cfg.max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = False


def stretch_to_uint8(array: np.ndarray, percentiles: list[float]) -> np.ndarray:
    """Per-band percentile stretch of a high-bit-depth (or float) array to uint8."""
    arr = array.astype(np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    out = np.empty(arr.shape, dtype=np.uint8)
    for band in range(arr.shape[2]):
        values = arr[:, :, band]
        finite = values[np.isfinite(values)]
        lo, hi = (np.percentile(finite, percentiles) if finite.size else (0.0, 1.0))
        if hi <= lo:
            hi = lo + 1.0
        scaled = np.clip((np.nan_to_num(values, nan=lo) - lo) / (hi - lo), 0.0, 1.0)
        out[:, :, band] = np.round(scaled * 255.0).astype(np.uint8)
    return out[:, :, 0] if array.ndim == 2 else out


def array_to_rgb(array: np.ndarray, cfg: ImageConfig, notes: list[str]) -> Image.Image:
    """HxW or HxWxC array of any dtype -> RGB image (bands picked by ``cfg.bands``)."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 3 and array.shape[2] >= 3:
        if array.shape[2] > 3:
            if max(cfg.bands) >= array.shape[2]:
                raise SampleSkip("unsupported_image", f"image has {array.shape[2]} bands, image.bands={cfg.bands}")
            notes.append(f"{array.shape[2]}-band image: bands {cfg.bands} used as RGB")
        array = array[:, :, cfg.bands] if array.shape[2] > 3 else array
    elif array.ndim == 3:
        array = array[:, :, 0]
        notes.append("2-band image: first band used as grey")
    if array.dtype != np.uint8:
        notes.append(f"{array.dtype} image stretched to 8 bit (percentiles {cfg.high_bit_percentiles})")
        array = stretch_to_uint8(array, cfg.high_bit_percentiles)
    img = Image.fromarray(np.ascontiguousarray(array))
    return img.convert("RGB")


def pil_to_rgb(img: Image.Image, cfg: ImageConfig, notes: list[str]) -> Image.Image:
    """Any Pillow mode -> RGB: alpha dropped, palettes expanded, 16-bit stretched."""
    if img.mode == "RGB":
        return img
    if img.mode in HIGH_BIT_MODES:
        return array_to_rgb(np.asarray(img), cfg, notes)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        notes.append(f"{img.mode} image: alpha channel dropped")
        return img.convert("RGBA").convert("RGB")
    notes.append(f"{img.mode} image converted to RGB")
    return img.convert("RGB")


def decode_with_opencv(data: bytes, path: Path, cfg: ImageConfig, notes: list[str]) -> Image.Image:
    """Fallback for files Pillow cannot decode (multi-band 16-bit TIFF)."""
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise SampleSkip("corrupt_image", f"{path}: neither Pillow nor OpenCV can decode it")
    if array.ndim == 3 and array.shape[2] in (3, 4):
        # OpenCV returns BGR(A); put the bands back in file order before picking cfg.bands
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB if array.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    notes.append("decoded with OpenCV")
    return array_to_rgb(array, cfg, notes)


def _needs_opencv(img: Image.Image) -> bool:
    """Pillow opens 16-bit multi-band TIFFs as 8-bit RGB(A), silently dropping the low byte and taking a
    4th band (NIR) for alpha; such files go to OpenCV, which keeps the full bit depth and every band."""
    tags = getattr(img, "tag_v2", {})
    bits = tags.get(258, (8,))
    bits = bits if isinstance(bits, tuple) else (bits,)
    samples = tags.get(277, 1)
    return samples >= 3 and (max(bits) > 8 or samples > 4 or (samples == 4 and 338 not in tags))


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SampleSkip("missing_image", f"{path}: image file not found") from None
    except IsADirectoryError:
        raise SampleSkip("missing_image", f"{path}: is a directory, not an image") from None
    except OSError as exc:
        raise SampleSkip("unreadable_image", f"{path}: {exc}") from None


def check_size(width: int, height: int, path: Path, cfg: ImageConfig) -> None:
    if width * height > cfg.max_pixels:
        raise SampleSkip("too_large", f"{path}: {width}x{height} exceeds image.max_pixels={cfg.max_pixels}")
    if min(width, height) < cfg.min_side:
        raise SampleSkip("too_small", f"{path}: {width}x{height} is below image.min_side={cfg.min_side}")


def decode(data: bytes, path: Path, cfg: ImageConfig) -> tuple[Image.Image, str, list[str]]:
    """Bytes -> (RGB image, source format, conversion notes). Size is checked from the header first."""
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            check_size(img.width, img.height, path, cfg)
            fmt = img.format or "unknown"
            if fmt == "TIFF" and _needs_opencv(img):
                array_img = decode_with_opencv(data, path, cfg, notes)
                return array_img, fmt, notes
            img.load()
    except SampleSkip:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SampleSkip("too_large", f"{path}: {exc}") from None
    except (OSError, ValueError, SyntaxError, Image.UnidentifiedImageError) as exc:
        if data[:4] in (b"II*\x00", b"MM\x00*"):  # TIFF magic: try OpenCV's reader before giving up
            array_img = decode_with_opencv(data, path, cfg, notes)
            check_size(array_img.width, array_img.height, path, cfg)
            return array_img, "TIFF", notes
        reason = "truncated_image" if "truncated" in str(exc).lower() else "corrupt_image"
        raise SampleSkip(reason, f"{path}: cannot decode image ({exc})") from None
    return upright(pil_to_rgb(img, cfg, notes), exif_orientation(img), cfg, notes), fmt, notes


# EXIF Orientation -> the transpose that makes the stored pixels upright (what PIL.ImageOps.exif_transpose does)
ORIENTATION_FIX = MappingProxyType({
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
})


def exif_orientation(img: Image.Image) -> int:
    """The EXIF Orientation tag (1 = upright, also when there is none or it cannot be read)."""
    try:
        value = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not cost the image
        return 1
    return value if isinstance(value, int) and value in ORIENTATION_FIX else 1


def upright(rgb: Image.Image, orientation: int, cfg: ImageConfig, notes: list[str]) -> Image.Image:
    """Apply (or, with ``image.exif_orientation: ignore``, deliberately not apply) an EXIF orientation, and say
    which in the notes; a note also stops the original bytes (tag included) being copied into the shard."""
    if orientation == 1:
        return rgb
    if cfg.exif_orientation == "ignore":
        notes.append(f"EXIF orientation {orientation} ignored: stored pixels kept, tag not written")
        return rgb
    notes.append(f"EXIF orientation {orientation} applied: pixels turned upright before boxes were checked, tag not written")
    return rgb.transpose(ORIENTATION_FIX[orientation])


def fit_within(img: Image.Image, max_side: int) -> tuple[Image.Image, float]:
    """Downscale so the longer side is at most ``max_side`` (0 = never)."""
    longer = max(img.size)
    if max_side <= 0 or longer <= max_side:
        return img, 1.0
    scale = max_side / longer
    new_size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(new_size, Image.Resampling.BICUBIC, reducing_gap=3.0), scale


def load_image(path: Path, cfg: ImageConfig) -> LoadedImage:
    """Read, decode, convert and (when too large) downscale one image; raises SampleSkip on failure."""
    data = read_bytes(path)
    rgb, fmt, notes = decode(data, path, cfg)
    orig_size = rgb.size
    rgb, scale = fit_within(rgb, cfg.max_side)
    # an RGB JPEG at its own size goes into the shard byte for byte (no generation loss, no encode time)
    passthrough = fmt == "JPEG" and scale == 1.0 and not notes
    return LoadedImage(rgb, orig_size, scale, fmt, data if passthrough else None, notes)


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=False)
    return buf.getvalue()


def jpeg_bytes(loaded: LoadedImage, quality: int) -> bytes:
    """The bytes written to the shard: the original JPEG when possible, else a re-encode."""
    return loaded.jpeg_bytes if loaded.jpeg_bytes is not None else encode_jpeg(loaded.rgb, quality)
