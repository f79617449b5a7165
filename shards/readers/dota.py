"""DOTA (v1.0 / v1.5 / v2.0): ``ROOT/images/*`` + ``ROOT/labelTxt/<stem>.txt`` (the line syntax and the pairing
rule are owned by :mod:`rs_common.formats.dota`, which stage-1 counting evaluation reads too).

Label lines are ``x1 y1 x2 y2 x3 y3 x4 y4 class [difficult]``; the optional header lines
``imagesource:...`` and ``gsd:...`` go to ``record.meta``. Images and labels are paired by relative path,
else by an unambiguous file stem (see ``pair_labels``); a label with no image still yields a record (the
image path guessed as ``images/<stem>.png``) so the worker counts it as ``missing_image``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from rs_common.errors import LayoutError
from rs_common.files import absolute, list_images, rel_posix, rel_stem
from rs_common.formats.dota import NO_LABEL, DotaHeader, DotaObject, pair_labels, parse_label_line
from shards.build_config import BuildConfig
from shards.readers._common import (
    box_problem,
    hbb_of_points,
    list_with_suffix,
    object_issue,
    record_issue,
    sort_records,
)
from shards.readers.classes import DOTA_CLASSES, ClassPolicy, class_policy, unknown_class_message
from shards.record import Issue, ObjectAnn, Record


def check_layout(root: Path) -> None:
    root = absolute(root)
    if not root.is_dir():
        raise LayoutError(f"{root}: a DOTA dataset is a folder with images/ and labelTxt/, not a file")
    if not (root / "images").is_dir() and not (root / "labelTxt").is_dir():
        raise LayoutError(f"{root}: a DOTA folder needs images/ and labelTxt/ (neither found)")


def read(root: Path, source: str, cfg: BuildConfig) -> Iterator[Record]:
    root = absolute(root)
    check_layout(root)
    images_dir, labels_dir = root / "images", root / "labelTxt"
    policy = class_policy(cfg, DOTA_CLASSES)
    images = list_images(images_dir, hidden=True)
    labels = list_with_suffix(labels_dir, ".txt", hidden=True)
    pairs, orphans = pair_labels(images, images_dir, labels, labels_dir)
    records = [make_record(root, source, image, label, policy, note) for image, (label, note) in pairs.items()]
    records += [make_record(root, source, images_dir / f"{rel_stem(label, labels_dir)}.png", label, policy) for label in orphans]
    yield from sort_records(records)


def make_record(root: Path, source: str, image_path: Path, label_path: Path | None, policy: ClassPolicy,
                missing: str = NO_LABEL) -> Record:
    record = Record(source=source, image_path=image_path, rel_path=rel_posix(image_path, root))
    if label_path is None:
        record.issues.append(record_issue("missing_annotation", image_path, None, missing))
        return record
    record.origin = str(label_path)
    try:
        text = label_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        record.issues.append(record_issue("malformed_annotation", label_path, None, f"cannot read label file: {exc}"))
        return record
    for number, line in enumerate(text.splitlines(), start=1):
        add_label_line(record, line.strip(), number, label_path, policy)
    return record


def add_label_line(record: Record, line: str, number: int, path: Path, policy: ClassPolicy) -> None:
    """One label line -> a header value in meta, an object, or an issue on the record."""
    parsed = parse_label_line(line)
    if parsed is None:
        return
    if isinstance(parsed, DotaHeader):
        record.meta[parsed.key] = parsed.value
        return
    obj_or_issue = (object_issue("malformed_annotation", path, number, parsed) if isinstance(parsed, str)
                    else check_object(parsed, number, path, policy))
    if isinstance(obj_or_issue, Issue):
        record.issues.append(obj_or_issue)
    else:
        record.objects.append(obj_or_issue)


def check_object(obj: DotaObject, number: int, path: Path, policy: ClassPolicy) -> ObjectAnn | Issue:
    """A parsed object line -> the record's object, or the issue that drops it (unknown class, bad box)."""
    name, known = policy.check(obj.cls)
    if not known:
        return object_issue("unknown_class", path, number, unknown_class_message(obj.cls))
    hbb = hbb_of_points(obj.coords)
    problem = box_problem(hbb, obj.coords)
    if problem is not None:
        return object_issue("degenerate_box", path, number, problem)
    return ObjectAnn(cls=name, hbb=hbb, obb=obj.coords, difficult=obj.difficult, line=number)
