"""Tar files: staged parts with random access, and the final webdataset shards written atomically.

What a shard holds per sample (``<key>.jpg/.txt/.json``) and the folder's marker/manifest names are the shard format,
:mod:`rs_common.formats.shard_sample`, which stage 1 reads through too. Every file
is written under a temporary name and renamed, so a killed build never leaves a half shard that looks
whole. Tar headers carry fixed owner/mtime so the same inputs give byte-identical shards.
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> tuple[int, int]:
    """Append one file; returns (data offset, size) for later random access."""
    info = _tarinfo(name, len(data))
    # addfile() stores a copy of ``info``, so its offset_data stays 0: compute where the data starts.
    header = info.tobuf(tar.format, tar.encoding, tar.errors)
    offset = tar.offset + len(header)
    tar.addfile(info, io.BytesIO(data))
    return offset, info.size


@dataclass
class MemberRef:
    """Where one staged file lives: part file name, byte offset of its data, size."""

    part: str
    offset: int
    size: int

    def to_json(self) -> list:
        return [self.part, self.offset, self.size]

    @classmethod
    def from_json(cls, value: list) -> "MemberRef":
        return cls(value[0], int(value[1]), int(value[2]))


class StagingWriter:
    """Appends samples to ``part-NNNN.tar`` files in a node's work dir, rolling over every ``part_size``."""

    def __init__(self, directory: Path, part_size: int = 10_000):
        self.directory = directory
        self.part_size = part_size
        self._tar: tarfile.TarFile | None = None
        self._part_name = ""
        self._parts = 0
        self._in_part = 0

    def _roll(self) -> None:
        self.close()
        self._part_name = f"part-{self._parts:04d}.tar"
        self._parts += 1
        self._in_part = 0
        self._tar = tarfile.open(self.directory / self._part_name, "w", format=tarfile.GNU_FORMAT)

    def add(self, key: str, members: dict[str, bytes]) -> dict[str, MemberRef]:
        if self._tar is None or self._in_part >= self.part_size:
            self._roll()
        refs = {}
        for ext, data in members.items():
            offset, size = add_member(self._tar, f"{key}.{ext}", data)
            refs[ext] = MemberRef(self._part_name, offset, size)
        self._in_part += 1
        return refs

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None


class StagedReader:
    """Random access to staged members by (part, offset, size), keeping a few files open."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._files: dict[str, object] = {}

    def read(self, ref: MemberRef) -> bytes:
        fh = self._files.get(ref.part)
        if fh is None:
            fh = open(self.directory / ref.part, "rb")
            self._files[ref.part] = fh
        fh.seek(ref.offset)
        data = fh.read(ref.size)
        if len(data) != ref.size:
            raise OSError(f"{self.directory / ref.part}: staged member at {ref.offset} is truncated")
        return data

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files.clear()


def write_shard(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> int:
    """Write one webdataset shard atomically; returns its byte size. Keys must be unique: a key twice is two
    files of one name in a tar, which webdataset refuses and other readers silently merge."""
    keys = [key for key, _ in samples]
    if len(set(keys)) != len(keys):
        twice = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"{path}: key(s) {twice[:3]} would appear twice in one shard; nothing was written")
    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
        for key, members in samples:
            for ext, data in members.items():
                add_member(tar, f"{key}.{ext}", data)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path.stat().st_size
