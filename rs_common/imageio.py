"""Decode any RS image into 8-bit RGB, or say precisely why not (stage 0 builds shards with it, stage-1 evaluation
reads its images with it).

RS imagery is not all 8-bit RGB JPEG: DOTA ships RGBA PNGs, UCM/Sydney TIFFs, Gaofen/Sentinel products
come as 16-bit multi-band (RGB+NIR, 13-band Sentinel-2) GeoTIFFs, and DOTA/xView scenes reach 20k x 20k
pixels. Pillow decodes the everyday formats, plain 8-bit TIFFs included; every other TIFF (more than 3 bands,
more than 8 bits or signed/float samples, band-interleaved, multi-band min-is-black, a codec Pillow lacks)
goes through tifffile, which keeps every band at full depth.

``image.bands`` (three 0-based band indices in the file's order, R G B) picks the output channels of every
image. With the default ``[0, 1, 2]`` an image with fewer than 3 bands is shown grey from its band 0; any
other setting must name bands that the image has, else it is skipped as ``band_out_of_range``. 16-bit and
float bands get a per-band percentile stretch (``image.high_bit_percentiles``) that leaves out NaN and the
file's GDAL nodata value (those pixels come out black).
A SAR image (``sensor="sar"``) is scaled differently: its 16-bit/float bands are taken to dB first (``image.sar_input``:
10*log10 of intensity, 20*log10 of amplitude, or already dB), then stretched between the ``image.sar_percentiles`` of
the dB values; an infrared image is stretched like a grey optical one. 8-bit images of every sensor are kept as they are.
Every failure becomes a :class:`SampleSkip` with a stable reason key for the run report.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
# tifffile (pure Python over numpy) rather than rasterio (GDAL): it reads from the bytes already in memory, exposes
# every tag (shape for max_pixels before decoding, GDAL_NODATA, planar layout) and brings no GDAL/PROJ runtime;
# with imagecodecs it decodes all GDAL's GTiff codecs (LZW, DEFLATE, ZSTD, PackBits, JPEG, LERC, predictors),
# striped or tiled, pixel- or band-interleaved.
import tifffile
from PIL import Image, ImageFile

from rs_common.config import ConfigError
from rs_common.errors import SampleSkip

HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
DEFAULT_BANDS = (0, 1, 2)
SENSORS = ("optical", "sar", "infrared")
SAR_INPUTS = {"intensity": 10.0, "amplitude": 20.0, "db": None}  # dB = factor * log10(linear value)
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
GDAL_NODATA = 42113
# what Pillow's libtiff always decodes: none, LZW, JPEG, Adobe deflate, PackBits, old deflate
PILLOW_TIFF_CODECS = frozenset({1, 5, 7, 8, 32773, 32946})


@dataclass
class ImageConfig:
    max_pixels: int = field(default=400_000_000, metadata={"help": "images with more pixels are skipped (too_large)"})
    max_side: int = field(default=2048, metadata={"help": "longer side above this is downscaled before writing (0 = never)"})
    min_side: int = field(default=8, metadata={"help": "images with a shorter side below this are skipped"})
    jpeg_quality: int = field(default=95, metadata={"help": "quality when a sample must be re-encoded"})
    high_bit_percentiles: list[float] = field(
        default_factory=lambda: [2.0, 98.0],
        metadata={"help": "per-band percentile stretch used to bring 16-bit/float images to 8 bit (applied to each picked band; "
                          "NaN and a TIFF's GDAL nodata value are left out of the percentiles and come out black)"},
    )
    bands: list[int] = field(
        default_factory=lambda: [0, 1, 2],
        metadata={"help": "which bands of every image are R,G,B (0-based, file order; e.g. 3 2 1 for Sentinel-2 true colour). "
                          "With the default 0 1 2 an image with 1 or 2 bands is shown grey from band 0; otherwise an "
                          "image lacking a band asked for is skipped as band_out_of_range"},
    )
    sar_input: str = field(
        default="intensity",
        metadata={"help": "what a SAR image's 16-bit/float pixels are: 'intensity' (power, dB = 10*log10), 'amplitude' "
                          "(dB = 20*log10) or 'db' (already dB); zero and negative linear values come out black"},
    )
    sar_percentiles: list[float] = field(
        default_factory=lambda: [1.0, 99.0],
        metadata={"help": "percentile stretch of a SAR band's dB values to 8 bit (instead of image.high_bit_percentiles)"},
    )
    exif_orientation: str = field(
        default="apply",
        metadata={"help": "a JPEG/TIFF EXIF Orientation tag (phone/UAV photos): 'apply' turns the pixels upright before "
                          "boxes are checked (annotation tools show them upright); 'ignore' keeps the stored pixels. "
                          "Either way the tag is not written to the shard, so every reader sees the same image"},
    )

    def validate(self) -> None:
        if self.max_pixels <= 0:
            raise ConfigError(f"image.max_pixels must be > 0, got {self.max_pixels}")
        if self.max_side < 0:
            raise ConfigError(f"image.max_side must be >= 0, got {self.max_side}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"image.jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        lo_hi = self.high_bit_percentiles
        if len(lo_hi) != 2 or not 0 <= lo_hi[0] < lo_hi[1] <= 100:
            raise ConfigError(f"image.high_bit_percentiles must be [low, high] within 0..100, got {lo_hi}")
        lo_hi = self.sar_percentiles
        if len(lo_hi) != 2 or not 0 <= lo_hi[0] < lo_hi[1] <= 100:
            raise ConfigError(f"image.sar_percentiles must be [low, high] within 0..100, got {lo_hi}")
        if self.sar_input not in SAR_INPUTS:
            raise ConfigError(f"image.sar_input must be one of {', '.join(SAR_INPUTS)}, got {self.sar_input!r}")
        if len(self.bands) != 3 or any(b < 0 for b in self.bands):
            raise ConfigError(f"image.bands must be three band indices, got {self.bands}")
        if self.exif_orientation not in ("apply", "ignore"):
            raise ConfigError(f"image.exif_orientation must be 'apply' or 'ignore', got {self.exif_orientation!r}")
        if self.min_side < 1:
            raise ConfigError(f"image.min_side must be >= 1, got {self.min_side}")


def configure_pillow(cfg: ImageConfig) -> None:
    """Raise Pillow's decompression-bomb limit to our own cap (call once per worker process).

    Pillow refuses images over ~179 MP by default; large RS scenes are legitimate, and ``max_pixels`` is
    checked explicitly from the header before any pixel is decoded.
    """
    Image.MAX_IMAGE_PIXELS = cfg.max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = False


def band_percentiles(values: np.ndarray, percentiles: list[float]) -> np.ndarray:
    """``np.percentile(values, percentiles)`` (linear), from a histogram for 8/16-bit unsigned data (~4x faster)."""
    if values.dtype.kind != "u" or values.dtype.itemsize > 2 or values.size == 0:
        return np.percentile(values, percentiles)
    flat = values.ravel()
    cumulative = np.cumsum(np.bincount(flat))
    ranks = np.asarray(percentiles, dtype=np.float64) / 100.0 * (flat.size - 1)
    below = np.floor(ranks).astype(np.int64)
    a = np.searchsorted(cumulative, below, side="right").astype(np.float64)  # sorted(values)[below]
    b = np.searchsorted(cumulative, np.minimum(below + 1, flat.size - 1), side="right").astype(np.float64)
    t, diff = ranks - below, b - a
    return np.where(t >= 0.5, b - diff * (1.0 - t), a + diff * t)  # numpy's own lerp, so the result is identical


def stretch_to_uint8(array: np.ndarray, percentiles: list[float], nodata: float | None = None) -> np.ndarray:
    """Per-band percentile stretch of a high-bit-depth (or float) array to uint8.

    NaN, +-inf and ``nodata`` pixels are left out of the percentiles; NaN and ``nodata`` pixels come out 0
    (black), +-inf saturate."""
    bands = array[:, :, None] if array.ndim == 2 else array
    out = np.empty(bands.shape, dtype=np.uint8)
    scratch = np.empty(bands.shape[:2], dtype=np.float32)
    is_float = bands.dtype.kind == "f"
    for band in range(bands.shape[2]):
        values = bands[:, :, band]
        left_out = ~np.isfinite(values) if is_float else None
        black = np.isnan(values) if is_float else None
        if nodata is not None:  # compared in the data's own type: float32 -9999.9 is not float64 -9999.9
            missing = values == (bands.dtype.type(nodata) if is_float else nodata)
            left_out = missing if left_out is None else left_out | missing
            black = missing if black is None else black | missing
        sample = values if left_out is None or not left_out.any() else values[~left_out]
        lo, hi = (band_percentiles(sample, percentiles) if sample.size else (0.0, 1.0))
        if hi <= lo:
            hi = lo + 1.0
        np.subtract(values, lo, out=scratch, casting="unsafe")
        np.multiply(scratch, 255.0 / (hi - lo), out=scratch)
        np.clip(scratch, 0.0, 255.0, out=scratch)
        np.rint(scratch, out=scratch)
        if black is not None:
            scratch[black] = 0.0
        out[:, :, band] = scratch
    return out[:, :, 0] if array.ndim == 2 else out


def sar_db(array: np.ndarray, sar_input: str, nodata: float | None = None) -> np.ndarray:
    """A SAR array (any dtype) as float32 dB: 10*log10 of intensity, 20*log10 of amplitude, or as it is for 'db'.
    ``nodata`` pixels become NaN (black); zero linear values -inf (saturate black), negative ones NaN (black)."""
    values = array.astype(np.float32)
    if nodata is not None:
        values[array == (array.dtype.type(nodata) if array.dtype.kind == "f" else nodata)] = np.nan
    factor = SAR_INPUTS[sar_input]
    if factor is None:
        return values
    with np.errstate(divide="ignore", invalid="ignore"):
        np.log10(values, out=values)
    np.multiply(values, np.float32(factor), out=values)
    return values


def pick_bands(array: np.ndarray, cfg: ImageConfig, path: Path) -> tuple[np.ndarray, str]:
    """(H, W, bands) -> (H, W, 3) in ``image.bands`` order, or (H, W) grey; plus what was done, for the note.

    The default ``[0, 1, 2]`` shows an image with fewer than 3 bands grey from band 0; any band asked for
    that the image lacks is a ``band_out_of_range`` skip."""
    count = array.shape[2]
    bands = [int(b) for b in cfg.bands]
    if tuple(bands) == DEFAULT_BANDS:
        if count < 3:
            return array[:, :, 0], ("" if count == 1 else "band 0 used as grey")
        if count == 3:
            return array, ""
    missing = sorted({b for b in bands if b >= count})
    if missing:
        raise SampleSkip("band_out_of_range", f"{path}: has {count} band{'s' if count != 1 else ''}, image.bands={bands} "
                                              f"asks for band {', '.join(map(str, missing))} (0-based)")
    return array[:, :, bands], f"bands {bands} used as RGB"


def array_to_rgb(array: np.ndarray, cfg: ImageConfig, path: Path, fmt: str, notes: list[str],
                 nodata: float | None = None, sensor: str = "optical") -> Image.Image:
    """HxW or HxWxC array of any dtype, bands in file order -> RGB image (bands picked by ``cfg.bands``,
    16-bit/float stretched per picked band); one note such as "13-band uint16 TIFF: bands [3, 2, 1] used as RGB,
    stretched to 8 bit (percentiles 2-98 %)" says what was done. A SAR ``sensor`` goes to dB before its stretch."""
    if array.ndim == 2:
        array = array[:, :, None]
    count, dtype = array.shape[2], array.dtype
    array, picked = pick_bands(array, cfg, path)
    done = [picked] if picked else []
    if dtype != np.uint8 and sensor == "sar":
        lo, hi = cfg.sar_percentiles
        skipped = f", nodata {nodata:g} left out" if nodata is not None else ""
        to_db = "" if cfg.sar_input == "db" else f"SAR {cfg.sar_input} to dB, "
        done.append(f"{to_db}stretched to 8 bit (dB percentiles {lo:g}-{hi:g} %{skipped})")
        array = stretch_to_uint8(sar_db(array, cfg.sar_input, nodata), cfg.sar_percentiles)
    elif dtype != np.uint8:
        lo, hi = cfg.high_bit_percentiles
        skipped = f", nodata {nodata:g} left out" if nodata is not None else ""
        done.append(f"stretched to 8 bit (percentiles {lo:g}-{hi:g} %{skipped})")
        array = stretch_to_uint8(array, cfg.high_bit_percentiles, nodata)
    if done:
        notes.append(f"{count}-band {dtype.name} {fmt}: " + ", ".join(done))
    img = Image.fromarray(np.ascontiguousarray(array))
    return img.convert("RGB")


def pil_bands(img: Image.Image) -> np.ndarray:
    """A Pillow image's bands in file order (palettes expanded; CMYK, YCbCr... as RGB)."""
    if img.mode in (*HIGH_BIT_MODES, "L", "LA", "RGB", "RGBA"):
        return np.asarray(img)
    if img.mode in ("PA", "P") and (img.mode == "PA" or "transparency" in img.info):
        return np.asarray(img.convert("RGBA"))
    return np.asarray(img.convert("RGB"))


def pil_to_rgb(img: Image.Image, cfg: ImageConfig, path: Path, notes: list[str], sensor: str = "optical") -> Image.Image:
    """Any Pillow mode -> RGB: alpha dropped, palettes expanded, 16-bit stretched, other bands picked."""
    if img.mode in HIGH_BIT_MODES or tuple(cfg.bands) != DEFAULT_BANDS:
        return array_to_rgb(pil_bands(img), cfg, path, img.format or "image", notes, sensor=sensor)
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        notes.append(f"{img.mode} image: alpha channel dropped")
        return img.convert("RGBA").convert("RGB")
    notes.append(f"{img.mode} image converted to RGB")
    return img.convert("RGB")


def pillow_tiff(page: tifffile.TiffPage) -> bool:
    """A plain 8-bit TIFF (grey, palette, RGB, RGB + alpha, CMYK, YCbCr; pixel-interleaved; a codec libtiff always
    has; upright), which Pillow decodes faster than tifffile and to the same pixels. Everything else is a raster.
    (Pillow turns a TIFF by its Orientation tag while loading, whatever ``image.exif_orientation`` says, and
    drops the tag; tifffile leaves that to :func:`upright`.)"""
    samples = page.samplesperpixel
    if page.bitspersample != 8 or page.sampleformat != 1 or page.compression not in PILLOW_TIFF_CODECS:
        return False
    if page.tags.valueof(274, 1) != 1:
        return False
    if samples > 1 and page.planarconfig != 1:
        return False
    alpha = tuple(int(e) for e in page.extrasamples) in ((1,), (2,))
    return {0: samples == 1, 1: samples == 1, 3: samples == 1, 2: samples == 3 or (samples == 4 and alpha),
            5: samples == 4, 6: samples == 3}.get(int(page.photometric), False)


def gdal_nodata(page: tifffile.TiffPage) -> float | None:
    """The GDAL_NODATA tag (ASCII, one value for all bands) as a number; None when absent or unreadable."""
    value = page.tags.valueof(GDAL_NODATA)
    try:
        return float(str(value).strip().strip("\x00")) if value is not None else None
    except ValueError:
        return None


def decode_raster(data: bytes, path: Path, cfg: ImageConfig, notes: list[str],
                  sensor: str = "optical") -> tuple[Image.Image, int] | None:
    """A TIFF through tifffile -> (RGB image, TIFF orientation), or None for a plain 8-bit TIFF left to Pillow.

    The size is checked from the first page's header before any pixel is decoded; the pixels come back as
    (H, W, bands) whatever the layout: pixel- or band-interleaved, striped or tiled."""
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            check_size(page.imagewidth, page.imagelength, path, cfg)
            if pillow_tiff(page):
                return None
            if not set(page.axes) <= set("YXS"):
                raise SampleSkip("unsupported_image", f"{path}: TIFF page with axes {page.axes!r} is not a 2-D raster")
            end = max((o + n for o, n in zip(page.dataoffsets, page.databytecounts)), default=0)
            if end > len(data):
                raise SampleSkip("truncated_image", f"{path}: TIFF data runs to byte {end}, the file has {len(data)}")
            # one thread: the build already decodes one image per worker process
            array = page.asarray(maxworkers=1)
            nodata, orientation = gdal_nodata(page), page.tags.valueof(274, 1)
    except SampleSkip:
        raise
    except (ValueError, RuntimeError, LookupError, struct.error, OSError, EOFError, NotImplementedError) as exc:
        # tifffile.TiffFileError is a ValueError; imagecodecs' codec errors are RuntimeErrors
        raise SampleSkip("corrupt_image", f"{path}: cannot decode TIFF ({type(exc).__name__}: {exc})") from None
    if "S" in page.axes:
        array = np.moveaxis(array, page.axes.index("S"), -1)
    rgb = array_to_rgb(array, cfg, path, "TIFF", notes, nodata, sensor)
    return rgb, int(orientation) if isinstance(orientation, int) and orientation in ORIENTATION_FIX else 1


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


def decode(data: bytes, path: Path, cfg: ImageConfig, sensor: str = "optical") -> tuple[Image.Image, str, list[str]]:
    """Bytes -> (RGB image, source format, conversion notes). Size is checked from the header first; ``sensor``
    (one of ``SENSORS``) picks how 16-bit/float pixels are scaled to 8 bit."""
    notes: list[str] = []
    if data[:4] in TIFF_MAGIC:
        raster = decode_raster(data, path, cfg, notes, sensor)
        if raster is not None:
            return upright(*raster, cfg, notes), "TIFF", notes
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            check_size(img.width, img.height, path, cfg)
            fmt = img.format or "unknown"
            img.load()
    except SampleSkip:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SampleSkip("too_large", f"{path}: {exc}") from None
    except (OSError, ValueError, SyntaxError, Image.UnidentifiedImageError) as exc:
        reason = "truncated_image" if "truncated" in str(exc).lower() else "corrupt_image"
        raise SampleSkip(reason, f"{path}: cannot decode image ({exc})") from None
    return upright(pil_to_rgb(img, cfg, path, notes, sensor), exif_orientation(img), cfg, notes), fmt, notes


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
