"""Retrieval eval sets: images with their captions, from a Karpathy caption json (``rs_common.formats.karpathy``, the
format stage 0 builds from) or from stage-0 shards (``rs_common.formats.shard_sample``), one image per item.

Only what listing needs is read here (the json, tar headers and the small json members); images are read later, by
path or by offset into their tar, and decoded as stage 0 decodes them (``rs_common.imageio``)."""

from __future__ import annotations

import glob
import logging
import os
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clip_pretrain.evaluate.common import EvalError
from rs_common.errors import AnnotationError, LayoutError, SampleSkip
from rs_common.formats.karpathy import caption_json_files, iter_entries
from rs_common.formats.shard_sample import META, ShardSample, json_captions, read_shard
from rs_common.imageio import ImageConfig, decode

log = logging.getLogger(__name__)


IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "tif", "tiff")


DECODE_CFG = ImageConfig(max_side=0)  # decode only: the model's preprocess resizes


@dataclass(frozen=True)
class EvalItem:
    """One evaluation image with its captions: a file, or a member of a tar (``offset``/``size`` of its data)."""

    key: str
    captions: tuple[str, ...]
    path: Path
    offset: int = -1
    size: int = 0
    member: str = ""

    @property
    def label(self) -> str:
        return f"{self.path}:{self.member}" if self.member else str(self.path)

    def read_bytes(self) -> bytes:
        try:
            if self.offset < 0:
                return self.path.read_bytes()
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read(self.size)
        except FileNotFoundError:
            raise SampleSkip("missing_image", f"{self.label}: image file not found") from None
        except OSError as exc:
            raise SampleSkip("unreadable_image", f"{self.label}: {exc}") from None
        if len(data) != self.size:
            raise SampleSkip("truncated_image", f"{self.label}: tar member is truncated")
        return data


@dataclass
class EvalSet:
    """Images with their captions, plus what was left out while listing them (counted by reason)."""

    items: list[EvalItem]
    kind: str  # "captions" | "shards"
    source: str
    split: str | None = None
    skipped: Counter = field(default_factory=Counter)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "split": self.split, "images_listed": len(self.items),
                "captions_listed": sum(len(i.captions) for i in self.items), "skipped_when_listing": dict(self.skipped)}


def load_rgb(item: EvalItem | Path | str):
    """Decode one image to RGB (16-bit/4-band TIFFs, RGBA...: see ``rs_common.imageio``); raises SampleSkip."""
    if not isinstance(item, EvalItem):
        item = EvalItem(key=str(item), captions=(), path=Path(item))
    rgb, _, _ = decode(item.read_bytes(), Path(item.label), DECODE_CFG)
    return rgb


def _split_filter(split: str | None) -> set[str] | None:
    if split is None or split.strip().lower() in ("", "all", "*"):
        return None
    return {s.strip() for s in split.split(",") if s.strip()}


def load_karpathy_eval_set(captions: str | Path, images: str | Path | None = None, split: str | None = "test") -> EvalSet:
    """A Karpathy caption json (or a folder holding ``dataset*.json``) and its images, one split.

    ``split``: ``test`` (default), ``val``, a comma list (``val,test``) or ``all``. ``images``: the image
    folder; by default ``images/``, ``imgs/`` or ``RSICD_images/`` beside the json, else the json's folder
    (as the shard builder reads it). Entries without a file name or sentences are counted and left out.
    """
    root = Path(captions).expanduser()
    if not root.exists():
        raise EvalError(f"{root}: caption json not found")
    try:
        json_files = caption_json_files(root)
    except (FileNotFoundError, LayoutError) as exc:
        raise EvalError(str(exc)) from None
    data_root = root if root.is_dir() else root.parent
    if images is not None:
        images_dir = Path(images).expanduser()
        if images_dir.is_file():
            raise EvalError(f"{images_dir}: a file, not an image folder (--images takes the folder of the json's images)")
        if not images_dir.is_dir():
            raise EvalError(f"{images_dir}: image folder not found")
    else:
        images_dir = None
    wanted = _split_filter(split)
    items: list[EvalItem] = []
    skipped: Counter = Counter()
    split_counts: Counter = Counter()
    for json_path in json_files:
        try:
            entries = list(iter_entries(json_path, data_root, images_dir))
        except AnnotationError as exc:
            raise EvalError(str(exc)) from None
        for entry in entries:
            split_counts[entry.split or "(none)"] += 1
            if wanted is not None and entry.split not in wanted:
                continue
            if entry.problem is not None:
                skipped["malformed_annotation"] += 1
                log.warning("%s: %s (left out)", json_path, entry.problem)
                continue
            items.append(EvalItem(key=entry.rel_path, captions=entry.captions, path=entry.image_path))
    if not items:
        present = ", ".join(f"{k} {v}" for k, v in sorted(split_counts.items())) or "none"
        raise EvalError(f"{root}: no usable images in split {split!r} (splits present: {present}); "
                        "pick one with --split, or --split all")
    return EvalSet(items, "captions", str(root), split or "all", skipped)


def expand_shard_pattern(pattern: str | Path) -> list[Path]:
    """A directory (its ``shard-*.tar``, else ``*.tar``), a tar file, a glob, or a brace pattern
    (``data/shard-{000000..000009}.tar``), sorted; several may be joined with ``::``."""
    out: list[Path] = []
    for part in str(pattern).split("::"):
        part = os.path.expanduser(part)
        p = Path(part)
        if p.is_dir():
            found = sorted(p.glob("shard-*.tar")) or sorted(p.glob("*.tar"))
            if not found:
                raise EvalError(f"{p}: folder holds no shard-*.tar or *.tar files")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        elif "{" in part:
            from braceexpand import braceexpand

            paths = [Path(x) for x in braceexpand(part)]
            missing = [str(x) for x in paths if not x.is_file()]
            if missing:
                raise EvalError(f"{part}: {len(missing)} of {len(paths)} shards not found (first: {missing[0]})")
            out.extend(paths)
        elif any(c in part for c in "*?["):
            found = sorted(Path(x) for x in glob.glob(part))
            if not found:
                raise EvalError(f"{part}: the pattern matches no files")
            out.extend(found)
        else:
            raise EvalError(f"{part}: shard file or folder not found")
    return out


def load_shard_eval_set(pattern: str | Path) -> EvalSet:
    """Stage-0 webdataset shards as an eval set: per sample its ``json`` member's ``captions`` and its image
    (``jpg``, else png/jpeg/webp/tif). Only tar headers and the small json members are read here; images are
    read later by offset. Samples without captions or image are counted and left out."""
    shards = expand_shard_pattern(pattern)
    items: list[EvalItem] = []
    skipped: Counter = Counter()
    for shard in shards:
        try:
            samples = read_shard(shard)
        except (tarfile.TarError, OSError) as exc:
            raise EvalError(f"{shard}: not a readable tar shard ({exc})") from None
        for sample in samples:
            item = shard_item(shard, sample, skipped)
            if item is not None:
                items.append(item)
    if not items:
        raise EvalError(f"{pattern}: no samples with an image and captions in {len(shards)} shard(s) "
                        f"(left out: {dict(skipped) or 'none'})")
    return EvalSet(items, "shards", str(pattern), None, skipped)


def shard_item(shard: Path, sample: ShardSample, skipped: Counter) -> EvalItem | None:
    """One shard sample as an eval item, or None (counted in ``skipped`` by reason) without an image or captions."""
    try:
        captions = tuple(c.strip() for c in json_captions(sample.data[META])) if META in sample.data else ()
    except ValueError:  # invalid JSON or UTF-8
        skipped["malformed_json"] += 1
        return None
    image = next((m for ext, m in sample.members.items() if ext.lower() in IMAGE_EXTS), None)
    if image is None:
        skipped["no_image"] += 1
        return None
    if not captions:
        skipped["no_captions"] += 1
        return None
    return EvalItem(key=sample.key, captions=captions, path=shard, offset=image.offset, size=image.size, member=image.name)


def check_images_present(eval_set: EvalSet, sample: int = 32) -> None:
    """A wrong image folder is the usual mistake with a caption json: when none of the first ``sample`` listed image
    files exists, stop before the model is loaded (a few missing files are skipped and counted later)."""
    files = [item.path for item in eval_set.items[:sample] if item.offset < 0]
    if files and not any(f.is_file() for f in files):
        raise EvalError(f"{eval_set.source}: none of the first {len(files)} listed images exists (first: {files[0]}); "
                        "pass the folder that holds them as --images")
