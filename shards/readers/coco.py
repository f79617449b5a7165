"""COCO detection json: ROOT is a ``.json``, or a folder with ``annotations/*.json`` or ``*.json``.

Each json is one part, read in sorted order. Images are looked up in ``ROOT/images``, then
``ROOT/<json stem>`` (or the stem after its first ``_``: ``instances_train2017`` -> ``train2017``), then
the json's own folder. ``bbox [x, y, w, h]`` becomes the HBB; crowd objects are kept. ``ObjectAnn.line``
is the annotation's index in the json's ``annotations`` list (0-based), and messages say
``annotations[i]``. ``image_id`` matches ``images[].id`` by value (``4``, ``4.0`` and ``"4"`` are one id); an
annotation no image takes (unknown id, an id two images share, no usable id) is yielded as a
:class:`DatasetIssue`, so it is counted as a dropped object. A json that is not valid JSON or lacks
``images``/``annotations`` is fatal.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rs_common.errors import AnnotationError, LayoutError
from rs_common.files import absolute, first_existing_dir, load_json_file, rel_posix
from shards.build_config import BuildConfig
from shards.readers._common import (
    box_problem,
    located,
    object_issue,
    parse_floats,
    parse_number,
    record_issue,
    sort_records,
)
from shards.readers.classes import ClassPolicy, class_policy
from shards.record import DatasetIssue, Issue, ObjectAnn, Record


def check_layout(root: Path) -> None:
    coco_json_files(absolute(root))


def read(root: Path, source: str, cfg: BuildConfig) -> Iterator[Record | DatasetIssue]:
    root = absolute(root)
    policy = class_policy(cfg, check_known=False)  # the json's own categories are the known list
    for json_path in coco_json_files(root):
        yield from read_part(json_path, dataset_root(root, json_path), source, policy)


def coco_json_files(root: Path) -> list[Path]:
    if root.is_file():
        if root.suffix.lower() != ".json":
            raise LayoutError(f"{root}: a COCO dataset is a .json file or a folder holding annotations/*.json")
        return [root]
    annotations = root / "annotations"
    files = sorted(annotations.glob("*.json")) if annotations.is_dir() else []
    files = files or sorted(root.glob("*.json"))
    if not files:
        raise LayoutError(f"{root}: no COCO json (expected annotations/*.json or *.json)")
    return files


def dataset_root(root: Path, json_path: Path) -> Path:
    """The folder rel_paths are relative to: ROOT itself, or the json's folder (its parent for annotations/)."""
    if root.is_dir():
        return root
    return json_path.parent.parent if json_path.parent.name == "annotations" else json_path.parent


def images_dir(data_root: Path, json_path: Path) -> Path:
    names = ["images", json_path.stem, json_path.stem.partition("_")[2]]
    return first_existing_dir(data_root, [n for n in names if n]) or json_path.parent


def read_part(json_path: Path, data_root: Path, source: str, policy: ClassPolicy) -> Iterator[Record | DatasetIssue]:
    data = load_json_file(json_path)
    check_json(data, json_path)
    categories = category_names(data.get("categories") or [], json_path)
    ids = ImageIds(data["images"], json_path)
    objects_by_image, unmatched = group_annotations(data["annotations"], json_path, categories, policy, ids)
    folder = images_dir(data_root, json_path)
    records = [
        image_record(entry, index, json_path, folder, data_root, source, objects_by_image, ids)
        for index, entry in enumerate(data["images"])
    ]
    yield from sort_records(records)
    for reason, message in unmatched:
        yield DatasetIssue(source, reason, message)


def image_id_key(value: Any) -> int | str | None:
    """An id compared by value: 4, 4.0, "4" and " 4 " are one id; other strings are themselves; None when the
    value cannot be an id (missing, bool, list, a non-integral number)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        number = parse_number(value)
        if number is not None and math.isfinite(number) and number.is_integer():
            return int(number)
        return value.strip() or None
    return None


class ImageIds:
    """The json's image ids by value, with the ids that two images share (their annotations cannot be placed)."""

    def __init__(self, images: list, json_path: Path):
        self.by_key: dict[int | str, list[int]] = defaultdict(list)
        for index, entry in enumerate(images):
            key = image_id_key(entry.get("id")) if isinstance(entry, dict) else None
            if key is not None:
                self.by_key[key].append(index)
        self.json_path = json_path

    def owner(self, value: Any) -> tuple[int | str | None, str | None]:
        """``(key, None)`` for the image an annotation's image_id names, else ``(None, why)``."""
        key = image_id_key(value)
        if key is None:
            return None, f"image_id {value!r} is not a usable id"
        found = self.by_key.get(key, [])
        if not found:
            return None, f"image_id {value!r} matches no entry of images"
        if len(found) > 1:
            return None, f"image_id {value!r} is shared by images{found[:4]}"
        return key, None

    def shared_with(self, index: int, value: Any) -> list[int]:
        key = image_id_key(value)
        return [i for i in self.by_key.get(key, []) if i != index] if key is not None else []


def check_json(data: Any, json_path: Path) -> None:
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
        key = image_id_key(cat["id"])
        if key in names and names[key] != cat["name"]:
            raise AnnotationError(json_path, None, f"categories[{index}] gives the id {cat['id']!r} to {cat['name']!r}, "
                                                   f"an earlier entry to {names[key]!r}")
        names[key] = cat["name"]
    return names


def group_annotations(annotations: list, json_path: Path, categories: dict, policy: ClassPolicy,
                      ids: ImageIds) -> tuple[dict[Any, list[ObjectAnn | Issue]], list[tuple[str, str]]]:
    """{image id key: objects and object issues, in annotation order}, and ``(reason, message)`` for every
    annotation no image takes (counted as dropped objects, never silently lost)."""
    grouped: dict[Any, list[ObjectAnn | Issue]] = defaultdict(list)
    unmatched: list[tuple[str, str]] = []
    for index, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            unmatched.append(("malformed_annotation", located(json_path, None, f"annotations[{index}] is not an object")))
            continue
        key, why = ids.owner(ann.get("image_id"))
        if key is None:
            reason = "malformed_annotation" if image_id_key(ann.get("image_id")) is None else "unmatched_image_id"
            unmatched.append((reason, located(json_path, None, f"annotations[{index}]: {why}; the annotation is dropped")))
            continue
        grouped[key].append(parse_annotation(ann, index, json_path, categories, policy))
    return grouped, unmatched


def parse_annotation(ann: dict, index: int, json_path: Path, categories: dict, policy: ClassPolicy) -> ObjectAnn | Issue:
    where = f"annotations[{index}]"
    bbox = ann.get("bbox")
    values = parse_floats(bbox) if isinstance(bbox, (list, tuple)) and len(bbox) == 4 else None
    if values is None:
        return object_issue("malformed_annotation", json_path, None, f"{where}: bbox must be [x, y, w, h], got {bbox!r}")
    category = image_id_key(ann.get("category_id"))  # ids compare by value: 3, 3.0 and "3" are one category
    if category not in categories:
        return object_issue("unknown_class", json_path, None, f"{where}: category_id {ann.get('category_id')!r} is not in categories")
    x, y, w, h = values
    hbb = (x, y, x + w, y + h)
    problem = box_problem(hbb, values)
    if problem is not None:
        return object_issue("degenerate_box", json_path, None, f"{where}: {problem}")
    return ObjectAnn(cls=policy.resolve(categories[category]), hbb=hbb, line=index)


def image_record(entry: Any, index: int, json_path: Path, folder: Path, data_root: Path, source: str,
                 objects_by_image: dict[Any, list[ObjectAnn | Issue]], ids: ImageIds) -> Record:
    if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str) or image_id_key(entry.get("id")) is None:
        return broken_entry_record(entry, index, json_path, data_root, source)
    image_path = folder / entry["file_name"]
    record = Record(
        source=source,
        image_path=image_path,
        rel_path=rel_posix(image_path, data_root),
        width=as_int(entry.get("width")),
        height=as_int(entry.get("height")),
        origin=str(json_path),
        origin_line=None,
        meta={"image_id": entry["id"]},
    )
    shared = ids.shared_with(index, entry["id"])
    if shared:
        record.issues.append(record_issue("malformed_annotation", json_path, None,
                                          f"images[{index}] has id {entry['id']!r}, as images{shared[:4]} do: "
                                          "its annotations cannot be told apart"))
        return record
    for item in objects_by_image.get(image_id_key(entry["id"]), []):
        (record.issues if isinstance(item, Issue) else record.objects).append(item)
    return record


def broken_entry_record(entry: Any, index: int, json_path: Path, data_root: Path, source: str) -> Record:
    """An image entry without file_name/id: still a record (so it is counted), skipped as malformed."""
    rel = f"{rel_posix(json_path, data_root)}#images[{index}]"
    record = Record(source=source, image_path=json_path.parent / rel, rel_path=rel, origin=str(json_path))
    message = f"images[{index}] needs 'id' and 'file_name', got {repr(entry)[:200]}"
    record.issues.append(record_issue("malformed_annotation", json_path, None, message))
    return record


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
