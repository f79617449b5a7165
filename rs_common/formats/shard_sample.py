"""The shard format: what stage 0 writes and stage 1 reads (training, retrieval evaluation), in one place.

A build's output folder holds ``shard-NNNNNN.tar`` webdataset shards, ``sizes.json`` (shard name -> samples),
``manifest.json`` (written last: "the build finished"), and from its first moment ``.rs-shards-build.json`` ("a
build owns this folder"); ``_work/`` holds a build in progress. Per sample a shard holds three members:

* ``<key>.jpg``  - the image, RGB JPEG;
* ``<key>.txt``  - one caption (what open_clip_train's ``--train-data`` reads);
* ``<key>.json`` - the sample json: ``key``, ``captions`` (all of them, a list of strings), ``source``,
  ``rel_path`` (relative to the dataset root), ``width``/``height`` (as written), ``orig_width``/``orig_height``,
  ``scale``, ``sensor`` (optical, sar, infrared), ``caption_kind``, ``objects`` (``class``, ``hbb``, optional ``obb``/``difficult``), ``phash``, and
  when known ``split``, ``label``, ``source_meta``, ``conversion``.

The key rule is webdataset's: a member's key is its path up to the first dot of its file name, and the rest is its
extension (:func:`split_member`); so keys never hold a dot (:func:`make_key`).
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

SHARD_PATTERN = "shard-{:06d}.tar"
SHARD_NAME = re.compile(r"^shard-\d{6}\.tar$")
SIZES = "sizes.json"  # shard name -> sample count, beside the shards
BUILD_MARKER = ".rs-shards-build.json"  # written first into every output folder a build creates: "a build owns this"
MANIFEST = "manifest.json"  # written by the last pass: "the build finished"
WORK = "_work"  # staged parts and pass markers of a build in progress

IMAGE, CAPTION, META = "jpg", "txt", "json"  # the member extensions of one sample
MEMBER_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's tariterators.base_plus_ext


# ---------------------------------------------------------------- the build folder


def build_state(folder: str | Path) -> str:
    """``"finished"`` (a build wrote its manifest), ``"unfinished"`` (a build started here and has not finished) or
    ``"none"`` (no build of ours)."""
    folder = Path(folder)
    if is_build_manifest(folder / MANIFEST):
        return "finished"
    if (folder / BUILD_MARKER).is_file() or (folder / WORK / "settings.json").is_file():
        return "unfinished"
    return "none"


def is_build_manifest(path: Path) -> bool:
    """True for a manifest.json a build wrote (not any file of that name)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"shards", "num_samples", "inputs"} <= set(data)


# ---------------------------------------------------------------- keys


def make_key(source: str, rel_path: str) -> str:
    """Stable, unique webdataset key: no dots (webdataset splits the extension at the first dot)."""
    stem = rel_path.rsplit(".", 1)[0] if "." in rel_path.rsplit("/", 1)[-1] else rel_path
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:80]
    digest = hashlib.sha1(f"{source}/{rel_path}".encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9_-]+', '_', source)}__{slug}_{digest}"


def split_member(name: str) -> tuple[str, str] | None:
    """(key, extension) of a tar member name by webdataset's rule, or None for a name it does not group (no dot
    in the file name, or one that starts with a dot)."""
    match = MEMBER_KEY.match(name)
    return (match.group(1), match.group(2)) if match else None


# ---------------------------------------------------------------- members


def meta_json_bytes(meta: dict) -> bytes:
    """The ``<key>.json`` member of a sample json."""
    return json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8")


def sample_members(jpg: bytes, caption: str, meta: dict) -> dict[str, bytes]:
    """One sample's members, extension -> bytes, in the order they are written."""
    return {IMAGE: jpg, CAPTION: caption.encode("utf-8"), META: meta_json_bytes(meta)}


def json_captions(data: bytes) -> list[str]:
    """The ``captions`` of a sample json member: its non-blank strings, as written; [] when it has none (or the
    json is not an object). Invalid JSON or UTF-8 is a ValueError."""
    meta = json.loads(data)
    captions = meta.get("captions") if isinstance(meta, dict) else None
    if not isinstance(captions, list):
        return []
    return [c for c in captions if isinstance(c, str) and c.strip()]


# ---------------------------------------------------------------- reading one shard


@dataclass(frozen=True)
class MemberAt:
    """Where one member's bytes lie in an uncompressed tar: its name, data offset and size."""

    name: str
    offset: int
    size: int


@dataclass
class ShardSample:
    """One key's members as listed from a shard: where each extension's (first) member lies, in tar order, and the
    bytes of the members that were read (``read`` of :func:`read_shard`)."""

    key: str
    members: dict[str, MemberAt] = field(default_factory=dict)
    data: dict[str, bytes] = field(default_factory=dict)


def read_shard(path: str | Path, read: tuple[str, ...] = (META,)) -> list[ShardSample]:
    """The samples of one uncompressed shard, in tar order, from its headers; the bytes of the members whose
    extension is in ``read`` (by default the small json) are read too, the others only located. Members whose
    names webdataset does not group are left out. A tar that cannot be read raises tarfile.TarError/OSError."""
    samples: dict[str, ShardSample] = {}
    with tarfile.open(path, "r:") as tf:
        for member in tf:
            split = split_member(member.name) if member.isfile() else None
            if split is None:
                continue
            key, ext = split
            sample = samples.setdefault(key, ShardSample(key))
            sample.members.setdefault(ext, MemberAt(member.name, member.offset_data, member.size))
            if ext in read and ext not in sample.data:
                fh = tf.extractfile(member)
                sample.data[ext] = fh.read() if fh is not None else b""
    return list(samples.values())


def sample_keys(path: str | Path) -> set[str]:
    """The keys of a shard (plain or compressed tar), from its headers alone."""
    with tarfile.open(path) as tar:
        return {split[0] for member in tar if member.isfile() and (split := split_member(member.name)) is not None}
