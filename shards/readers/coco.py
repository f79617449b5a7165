"""COCO detection json: ROOT is a ``.json``, or a folder with ``annotations/*.json`` or ``*.json``.

Each json is one part, read in sorted order. Images are looked up in ``ROOT/images``, then
``ROOT/<json stem>`` (or the stem after its first ``_``: ``instances_train2017`` -> ``train2017``), then
the json's own folder. ``bbox [x, y, w, h]`` becomes the HBB; crowd objects are kept. ``ObjectAnn.line``
is the annotation's index in the json's ``annotations`` list (0-based), and messages say
``annotations[i]``. A json that is not valid JSON or lacks ``images``/``annotations`` is fatal.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shards.build_config import BuildConfig
from shards.readers._common import (
    absolute,
    box_problem,
    first_existing_dir,
    load_json_file,
    located,
    object_issue,
    parse_floats,
    record_issue,
    rel_posix,
    sort_records,
)
from shards.readers.classes import ClassPolicy, class_policy
from shards.record import AnnotationError, Issue, ObjectAnn, Record


def read(root: Path, source: str, cfg: BuildConfig) -> Iterator[Record]:
    root = absolute(root)
    policy = class_policy(cfg, check_known=False)  # the json's own categories are the known list
    for json_path in coco_json_files(root):
        yield from read_part(json_path, dataset_root(root, json_path), source, policy)


def coco_json_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    annotations = root / "annotations"
    files = sorted(annotations.glob("*.json")) if annotations.is_dir() else []
    files = files or sorted(root.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"{root}: no COCO json (expected annotations/*.json or *.json)")
    return files


def dataset_root(root: Path, json_path: Path) -> Path:
    """The folder rel_paths are relative to: ROOT itself, or the json's folder (its parent for annotations/)."""
    if root.is_dir():
        return root
    return json_path.parent.parent if json_path.parent.name == "annotations" else json_path.parent


def images_dir(data_root: Path, json_path: Path) -> Path:
    names = ["images", json_path.stem, json_path.stem.partition("_")[2]]
    return first_existing_dir(data_root, [n for n in names if n]) or json_path.parent


def read_part(json_path: Path, data_root: Path, source: str, policy: ClassPolicy) -> Iterator[Record]:
    data = load_json_file(json_path)
    check_layout(data, json_path)
    categories = category_names(data.get("categories") or [], json_path)
    objects_by_image = group_annotations(data["annotations"], json_path, categories, policy)
    folder = images_dir(data_root, json_path)
    records = [
        image_record(entry, index, json_path, folder, data_root, source, objects_by_image)
        for index, entry in enumerate(data["images"])
    ]
    warn_orphan_annotations(objects_by_image, {r.meta.get("image_id") for r in records}, json_path)
    yield from sort_records(records)


def check_layout(data: Any, json_path: Path) -> None:
    if not isinstance(data, dict):
        raise AnnotationError(json_path, None, "a COCO json must be an object with 'images' and 'annotations'")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise AnnotationError(json_path, None, f"a COCO json needs a '{key}' list")


def category_names(categories: list, json_path: Path) -> dict[Any, str]:
    """{category id: name}; a broken category table is fatal (every object would be wrong)."""
    names: dict[Any, str] = {}
    for index, cat in enumerate(categories):
        if not isinstance(cat, dict) or "id" not in cat or not isinstance(cat.get("name"), str):
            raise AnnotationError(json_path, None, f"categories[{index}] needs an 'id' and a 'name', got {repr(cat)[:200]}")
        names[cat["id"]] = cat["name"]
    return names


def group_annotations(annotations: list, json_path: Path, categories: dict,
                      policy: ClassPolicy) -> dict[Any, list[ObjectAnn | Issue]]:
    """{image_id: objects and object issues, in annotation order}."""
    grouped: dict[Any, list[ObjectAnn | Issue]] = defaultdict(list)
    for index, ann in enumerate(annotations):
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if not isinstance(image_id, (int, str)):
            warnings.warn(located(json_path, None, f"annotations[{index}] has no usable image_id; ignored"), stacklevel=2)
            continue
        grouped[image_id].append(parse_annotation(ann, index, json_path, categories, policy))
    return grouped


def parse_annotation(ann: dict, index: int, json_path: Path, categories: dict, policy: ClassPolicy) -> ObjectAnn | Issue:
    where = f"annotations[{index}]"
    bbox = ann.get("bbox")
    values = parse_floats(bbox) if isinstance(bbox, (list, tuple)) and len(bbox) == 4 else None
    if values is None:
        return object_issue("malformed_annotation", json_path, None, f"{where}: bbox must be [x, y, w, h], got {bbox!r}")
    category = ann.get("category_id")
    if category not in categories:
        return object_issue("unknown_class", json_path, None, f"{where}: category_id {category!r} is not in categories")
    x, y, w, h = values
    hbb = (x, y, x + w, y + h)
    problem = box_problem(hbb, values)
    if problem is not None:
        return object_issue("degenerate_box", json_path, None, f"{where}: {problem}")
    return ObjectAnn(cls=policy.resolve(categories[category]), hbb=hbb, line=index)


def image_record(entry: Any, index: int, json_path: Path, folder: Path, data_root: Path, source: str,
                 objects_by_image: dict[Any, list[ObjectAnn | Issue]]) -> Record:
    if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str) or not isinstance(entry.get("id"), (int, str)):
        return broken_entry_record(entry, index, json_path, data_root, source)
    image_path = folder / entry["file_name"]
    record = Record(
        source=source,
        image_path=image_path,
        rel_path=rel_posix(image_path, data_root),
        width=as_int(entry.get("width")),
        height=as_int(entry.get("height")),
        origin=str(json_path),
        meta={"image_id": entry["id"]},
    )
    for item in objects_by_image.get(entry["id"], []):
        (record.issues if isinstance(item, Issue) else record.objects).append(item)
    return record


def broken_entry_record(entry: Any, index: int, json_path: Path, data_root: Path, source: str) -> Record:
    """An image entry without file_name/id: still a record (so it is counted), skipped as malformed."""
    rel = f"{rel_posix(json_path, data_root)}#images[{index}]"
    record = Record(source=source, image_path=json_path.parent / rel, rel_path=rel, origin=str(json_path))
    message = f"images[{index}] needs 'id' and 'file_name', got {repr(entry)[:200]}"
    record.issues.append(record_issue("malformed_annotation", json_path, None, message))
    return record


def warn_orphan_annotations(objects_by_image: dict, image_ids: set, json_path: Path) -> None:
    orphans = sum(len(v) for k, v in objects_by_image.items() if k not in image_ids)
    if orphans:
        message = f"{orphans} annotation(s) refer to an image_id not in images; ignored"
        warnings.warn(located(json_path, None, message), stacklevel=2)


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
