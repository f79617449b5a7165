"""Stage 0's last image step: a decoded image (``rs_common.imageio``) at the size it goes into a shard, and its JPEG bytes.

Decoding (formats, bands, bit depths, EXIF orientation, size checks) is shared with stage-1 evaluation and lives in
:mod:`rs_common.imageio`; here the image is downscaled to ``image.max_side`` and an RGB JPEG at its own size is kept
byte for byte. Every failure is a :class:`rs_common.errors.SampleSkip` with a stable reason key for the run report.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from rs_common.imageio import ImageConfig, decode, read_bytes


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


def fit_within(img: Image.Image, max_side: int) -> tuple[Image.Image, float]:
    """Downscale so the longer side is at most ``max_side`` (0 = never)."""
    longer = max(img.size)
    if max_side <= 0 or longer <= max_side:
        return img, 1.0
    scale = max_side / longer
    new_size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(new_size, Image.Resampling.BICUBIC, reducing_gap=3.0), scale


def load_image(path: Path, cfg: ImageConfig, sensor: str = "optical") -> LoadedImage:
    """Read, decode (``sensor``: how 16-bit/float pixels are scaled), convert and (when too large) downscale one
    image; raises SampleSkip on failure."""
    data = read_bytes(path)
    rgb, fmt, notes = decode(data, path, cfg, sensor)
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
