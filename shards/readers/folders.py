"""Scene classification folders (AID, UCM, NWPU-RESISC45, ...): ``ROOT/<class>/**/<image>``.

``label`` is the class folder's name (after ``classes.aliases``); the captions are
``folders.templates`` filled with its readable name ("BareLand" -> "a satellite photo of bare land.").
Files that are not images, and files directly in ROOT, are ignored.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from shards.build_config import BuildConfig
from shards.readers._common import absolute, list_images, rel_posix, sort_records
from shards.readers.classes import class_policy, readable_class_name
from shards.record import Record


def class_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: a scene-folder dataset must be a folder of class folders")
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def template_captions(label: str, templates: list[str]) -> list[str]:
    name = readable_class_name(label)
    return [template.format(name) for template in templates]


def read(root: Path, source: str, cfg: BuildConfig) -> Iterator[Record]:
    root = absolute(root)
    policy = class_policy(cfg, check_known=False)
    records = []
    for folder in class_folders(root):
        label = policy.resolve(folder.name)
        captions = template_captions(label, cfg.folders.templates)
        records.extend(
            Record(source=source, image_path=path, rel_path=rel_posix(path, root), label=label, captions=list(captions))
            for path in list_images(folder)
        )
    yield from sort_records(records)
