"""Scene classification folders (AID, UCM, NWPU-RESISC45, ...): ``ROOT/<class>/**/<image>``.

``label`` is the class folder's name (after ``classes.aliases``); the captions are
``folders.templates`` filled with its readable name ("BareLand" -> "a satellite photo of bare land.").
Files that are not images, and files directly in ROOT, are ignored. Every real folder is listed once, so a
class folder that links to another one (or back to ROOT) adds no image twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from rs_common.errors import LayoutError
from rs_common.files import absolute, list_images, real_id, rel_posix
from shards.build_config import BuildConfig
from shards.readers._common import sort_records
from shards.readers.classes import class_policy, readable_class_name
from shards.record import Record


def class_folders(root: Path) -> list[Path]:
    """Every sub-folder of ``root``, hidden ones included (their images are counted as ``hidden_file``)."""
    if not root.is_dir():
        raise LayoutError(f"{root}: a scene-folder dataset is a folder of class folders, not a file")
    return sorted(p for p in root.iterdir() if p.is_dir())


def check_layout(root: Path) -> None:
    class_folders(absolute(root))


def template_captions(label: str, templates: list[str]) -> list[str]:
    name = readable_class_name(label)
    return [template.format(name) for template in templates]


def read(root: Path, source: str, cfg: BuildConfig) -> Iterator[Record]:
    root = absolute(root)
    policy = class_policy(cfg, check_known=False)
    records = []
    seen = {real_id(root)}  # one listing for the whole tree: a link back to ROOT or to another class is not re-read
    for folder in class_folders(root):
        label = policy.resolve(folder.name)
        captions = template_captions(label, cfg.folders.templates)
        records.extend(
            Record(source=source, image_path=path, rel_path=rel_posix(path, root), label=label, captions=list(captions))
            for path in list_images(folder, hidden=True, seen=seen)
        )
    yield from sort_records(records)
