"""A large scene read one tile window at a time (stage 0's tiling, :mod:`shards.tiling`).

A tiled or striped TIFF is read windowed: tifffile gives each segment's (tile's or strip's) file offset, and a window
decodes only the segments it overlaps, so a 20k x 20k GeoTIFF never exists in memory as a whole; the bands are
picked and 16-bit/float bands stretched per window (``rs_common.imageio.array_to_rgb``, percentiles of that tile).
Every other format (PNG, JPEG, BMP, WebP, a TIFF with an EXIF orientation to apply) is decoded once per scene and
cropped: PNG is one zlib stream over all rows and a baseline JPEG one entropy-coded scan, so no decoder Pillow has can
start at a window, and ``Image.crop`` on a lazily opened image decodes the whole image anyway. Peak memory is then
one decoded scene plus one tile; with a windowed TIFF it is one tile (plus the segments it touches).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from rs_common.errors import SampleSkip
from rs_common.imageio import TIFF_MAGIC, ImageConfig, array_to_rgb, decode, exif_orientation, gdal_nodata, read_bytes

TIFF_ERRORS = (ValueError, RuntimeError, LookupError, struct.error, OSError, EOFError, NotImplementedError)
# a scene that is tiled is decoded whatever image.max_pixels says (tiling is what replaces the too_large skip)
NO_PIXEL_LIMIT = 1 << 62


@contextmanager
def no_pixel_limit() -> Iterator[None]:
    """Pillow's decompression-bomb guard (set to ``image.max_pixels`` by ``configure_pillow``) stands aside: a scene
    that is tiled may have more pixels than that."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def scene_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of an image from its header, upright (EXIF orientation 5-8 swaps them); None when the
    header cannot be read (the ordinary path then reports why)."""
    try:
        with open(path, "rb") as fh:
            if fh.read(4) in TIFF_MAGIC:
                with tifffile.TiffFile(path) as tif:
                    page = tif.pages[0]
                    return int(page.imagewidth), int(page.imagelength)
        with no_pixel_limit(), Image.open(path) as img:
            turned = exif_orientation(img) in (5, 6, 7, 8)
            return (img.height, img.width) if turned else (img.width, img.height)
    except (*TIFF_ERRORS, Image.UnidentifiedImageError, SyntaxError):
        return None


class DecodedScene:
    """A scene decoded once (formats that cannot be read windowed, see the module docstring); tiles are crops."""

    windowed = False

    def __init__(self, path: Path, cfg: ImageConfig, sensor: str = "optical"):
        data = read_bytes(path)
        with no_pixel_limit():
            self.rgb, self.fmt, self.notes = decode(data, path, replace(cfg, max_pixels=NO_PIXEL_LIMIT), sensor)
        del data
        self.size = self.rgb.size

    def read(self, box: tuple[int, int, int, int]) -> tuple[Image.Image, list[str]]:
        return self.rgb.crop(box), list(self.notes)

    def close(self) -> None:
        self.rgb = None


class WindowedTiff:
    """A tiled or striped TIFF whose windows decode only the segments they overlap."""

    windowed = True

    def __init__(self, path: Path, cfg: ImageConfig, sensor: str = "optical"):
        self.path, self.cfg, self.sensor = path, cfg, sensor
        self.tif = tifffile.TiffFile(path)
        page = self.page = self.tif.pages[0]
        self.size = (int(page.imagewidth), int(page.imagelength))
        self.planes = int(page.samplesperpixel) if page.planarconfig == 2 else 1
        self.samples = int(page.samplesperpixel)
        if page.is_tiled:
            self.seg_h, self.seg_w = int(page.tilelength), int(page.tilewidth)
        else:
            self.seg_h, self.seg_w = min(int(page.rowsperstrip), self.size[1]), self.size[0]
        self.across = math.ceil(self.size[0] / self.seg_w)
        self.down = math.ceil(self.size[1] / self.seg_h)
        self.nodata = gdal_nodata(page)

    @staticmethod
    def usable(path: Path) -> bool:
        """A single-image, upright, 2-D TIFF with one segment per tile/strip and plane, as GDAL writes them."""
        try:
            with open(path, "rb") as fh:
                if fh.read(4) not in TIFF_MAGIC:
                    return False
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                if not set(page.axes) <= set("YXS") or page.tags.valueof(274, 1) != 1 or page.imagedepth != 1:
                    return False
                if int(page.photometric) not in (1, 2):  # min-is-black or RGB; palette, YCbCr... are decoded once
                    return False
                if page.is_tiled:
                    segs = math.ceil(page.imagewidth / page.tilewidth) * math.ceil(page.imagelength / page.tilelength)
                else:
                    segs = math.ceil(page.imagelength / min(page.rowsperstrip, page.imagelength))
                planes = page.samplesperpixel if page.planarconfig == 2 else 1
                return len(page.dataoffsets) == segs * planes and page.dtype is not None
        except TIFF_ERRORS:
            return False

    def read_array(self, box: tuple[int, int, int, int]) -> np.ndarray:
        """The window ``[x0, y0, x1, y1)`` as (h, w, samples) in the file's dtype, from its segments only."""
        x0, y0, x1, y1 = box
        page, fh = self.page, self.tif.filehandle
        out = np.zeros((y1 - y0, x1 - x0, self.samples), dtype=page.dtype)
        per_plane = self.across * self.down
        for plane in range(self.planes):
            for row in range(y0 // self.seg_h, (y1 - 1) // self.seg_h + 1):
                for col in range(x0 // self.seg_w, (x1 - 1) // self.seg_w + 1):
                    index = plane * per_plane + row * self.across + col
                    fh.seek(page.dataoffsets[index])
                    data = fh.read(page.databytecounts[index]) if page.databytecounts[index] else None
                    seg, (s, _, sy, sx, _), shape = page.decode(data, index, jpegtables=page.jpegtables,
                                                                jpegheader=page.jpegheader)
                    if seg is None:
                        continue  # an empty (sparse) segment reads as zeros
                    seg = np.asarray(seg).reshape(shape)[0]  # (length, width, contig samples)
                    ys, ye = max(y0, sy), min(y1, sy + seg.shape[0], self.size[1])
                    xs, xe = max(x0, sx), min(x1, sx + seg.shape[1], self.size[0])
                    bands = slice(s, s + 1) if self.planes > 1 else slice(None)
                    out[ys - y0:ye - y0, xs - x0:xe - x0, bands] = seg[ys - sy:ye - sy, xs - sx:xe - sx]
        return out

    def read(self, box: tuple[int, int, int, int]) -> tuple[Image.Image, list[str]]:
        notes: list[str] = []
        try:
            array = self.read_array(box)
        except TIFF_ERRORS as exc:
            raise SampleSkip("corrupt_image", f"{self.path}: cannot decode TIFF window {list(box)} ({type(exc).__name__}: {exc})") from None
        return array_to_rgb(array, self.cfg, self.path, "TIFF", notes, self.nodata, self.sensor), notes

    def close(self) -> None:
        self.tif.close()


def open_scene(path: Path, cfg: ImageConfig, sensor: str = "optical") -> DecodedScene | WindowedTiff:
    """The scene behind ``path`` ready for windows: windowed for a TIFF that allows it, else decoded once
    (``sensor``: how 16-bit/float pixels are scaled, see :func:`rs_common.imageio.decode`)."""
    if WindowedTiff.usable(path):
        try:
            return WindowedTiff(path, cfg, sensor)
        except TIFF_ERRORS as exc:
            raise SampleSkip("corrupt_image", f"{path}: cannot open TIFF ({type(exc).__name__}: {exc})") from None
    return DecodedScene(path, cfg, sensor)
