"""Dataset readers: each turns one dataset layout into a stream of :class:`shards.record.Record`.

``read_records(fmt, root, source, cfg)`` checks the layout (``check_input``, one clear error before any work),
picks the reader and passes every record through :class:`RecordGuard`, the checks no reader can forget:
an image path that leaves the dataset root (``../../x.jpg``, an absolute path in an annotation) is never read
(``path_outside_root``), hidden files are counted, not silently left out (``hidden_file``), and images inside a
shard build's own output folder are never read back as data (``build_output``). Every reader yields one record
per image in rel_path order, and never raises for one bad image or line (problems go to ``record.issues``);
between records a reader may yield :class:`shards.record.DatasetIssue` for problems that belong to no image.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

from rs_common.errors import LayoutError
from rs_common.files import IMAGE_EXTENSIONS, absolute, is_under
from rs_common.formats.shard_sample import BUILD_MARKER, MANIFEST, is_build_manifest
from shards.build_config import BuildConfig
from shards.readers import captions, coco, dota, folders, masks, voc, yolo
from shards.readers._common import is_hidden, record_issue
from shards.record import DatasetIssue, Record

FORMATS = ("coco", "dota", "voc", "yolo", "mask", "captions", "folders")

READERS = MappingProxyType({
    "coco": coco.read, "dota": dota.read, "voc": voc.read, "yolo": yolo.read, "mask": masks.read, "captions": captions.read, "folders": folders.read,
})
LAYOUT_CHECKS = MappingProxyType({
    "coco": coco.check_layout, "dota": dota.check_layout, "voc": voc.check_layout, "yolo": yolo.check_layout,
    "mask": masks.check_layout,
    "captions": captions.check_layout, "folders": folders.check_layout,
})

__all__ = ["FORMATS", "IMAGE_EXTENSIONS", "check_input", "read_records"]


def check_input(fmt: str, root: Path) -> None:
    """Raise :class:`LayoutError` (one line naming ``root``) unless ``root`` is a dataset of format ``fmt``."""
    if fmt not in READERS:
        raise LayoutError(f"unknown dataset format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    root = Path(root)
    if not root.exists():
        raise LayoutError(f"{fmt} dataset not found: {root}")
    LAYOUT_CHECKS[fmt](root)


def data_root(root: Path) -> Path:
    """The folder a dataset's images must lie in: ROOT itself, or for a json given as ROOT its folder (the folder
    above ``annotations/``, where COCO keeps ``images/``)."""
    root = absolute(Path(root))
    if root.is_dir():
        return root
    return root.parent.parent if root.parent.name.lower() == "annotations" else root.parent


def read_records(fmt: str, root: Path, source: str, cfg: BuildConfig) -> Iterator[Record | DatasetIssue]:
    """The records of dataset ``root`` in format ``fmt``, guarded; the layout is checked before this returns."""
    check_input(fmt, root)
    return _guarded(READERS[fmt](Path(root), source, cfg), RecordGuard(data_root(root), cfg))


def _guarded(items: Iterator[Record | DatasetIssue], guard: "RecordGuard") -> Iterator[Record | DatasetIssue]:
    for item in items:
        if isinstance(item, Record):
            guard.check(item)
        yield item


class RecordGuard:
    """Checks every record's image path against the dataset root before anything reads it (see the module doc)."""

    def __init__(self, root: Path, cfg: BuildConfig):
        self.root = absolute(root)
        self.allow_outside = cfg.files.allow_outside_root
        self.read_hidden = cfg.files.read_hidden
        self._build_dirs: dict[Path, bool] = {}

    def check(self, record: Record) -> None:
        problem = self.problem(record.image_path)
        if problem is not None:
            reason, message = problem
            where = record.origin or record.image_path
            record.issues.insert(0, record_issue(reason, where, record.origin_line, message))

    def problem(self, path: Path) -> tuple[str, str] | None:
        path = absolute(path)
        if not is_under(path, self.root):
            if self.allow_outside:
                return None
            return ("path_outside_root", f"image path {path} leaves the dataset root {self.root}; not read "
                                         "(files.allow_outside_root true reads such paths)")
        if not self.read_hidden and is_hidden(path, self.root):
            return ("hidden_file", f"{path}: hidden file or folder (name starts with '.'); not read "
                                   "(files.read_hidden true reads them)")
        if self.in_build_output(path.parent):
            return ("build_output", f"{path} lies in a shard build's output folder; never read back as data")
        return None

    def in_build_output(self, folder: Path) -> bool:
        """True when ``folder`` or a parent of it up to the dataset root holds a build's marker or manifest."""
        if folder in self._build_dirs:
            return self._build_dirs[folder]
        here = (folder / BUILD_MARKER).is_file() or is_build_manifest(folder / MANIFEST)
        above = folder != self.root and is_under(folder.parent, self.root) and self.in_build_output(folder.parent)
        self._build_dirs[folder] = here or above
        return here or above
