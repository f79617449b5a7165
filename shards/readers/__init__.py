"""Dataset readers: each turns one dataset layout into a stream of :class:`shards.record.Record`.

``read_records(fmt, root, source, cfg)`` picks the reader; every reader yields one record per image, in
rel_path order, and never raises for one bad image or line (problems go to ``record.issues``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

from shards.build_config import BuildConfig
from shards.readers import captions, coco, dota, folders, masks, voc
from shards.readers._common import IMAGE_EXTENSIONS
from shards.record import Record

FORMATS = ("coco", "dota", "voc", "mask", "captions", "folders")

READERS = MappingProxyType({
    "coco": coco.read, "dota": dota.read, "voc": voc.read, "mask": masks.read, "captions": captions.read, "folders": folders.read,
})

__all__ = ["FORMATS", "IMAGE_EXTENSIONS", "read_records"]


def read_records(fmt: str, root: Path, source: str, cfg: BuildConfig) -> Iterator[Record]:
    """The records of dataset ``root`` in format ``fmt``; checks the format and the path before reading."""
    if fmt not in READERS:
        raise ValueError(f"unknown dataset format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{fmt} dataset not found: {root}")
    return READERS[fmt](root, source, cfg)
