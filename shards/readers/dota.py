"""DOTA (v1.0 / v1.5 / v2.0): ``ROOT/images/*`` + ``ROOT/labelTxt/<stem>.txt``.

Label lines are ``x1 y1 x2 y2 x3 y3 x4 y4 class [difficult]``; the optional header lines
``imagesource:...`` and ``gsd:...`` go to ``record.meta``. Images and labels are paired by relative path,
else by an unambiguous file stem (see ``pair_labels``); a label with no image still yields a record (the
image path guessed as ``images/<stem>.png``) so the worker counts it as ``missing_image``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

from rs_common.errors import LayoutError
from rs_common.files import absolute, list_images, rel_posix
from shards.build_config import BuildConfig
from shards.readers._common import (
    box_problem,
    hbb_of_points,
    list_with_suffix,
    object_issue,
    parse_floats,
    parse_int,
    record_issue,
    rel_stem,
    sort_records,
)
from shards.readers.classes import DOTA_CLASSES, ClassPolicy, class_policy, unknown_class_message
from shards.record import Issue, ObjectAnn, Record

HEADER_KEYS = ("imagesource", "gsd")
LINE_FORMAT = "expected 8 coordinates + class [+ difficult]"


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


def pair_labels(images: list[Path], images_dir: Path, labels: list[Path],
                labels_dir: Path) -> tuple[dict[Path, tuple[Path | None, str]], list[Path]]:
    """Each image's label file (or None with the reason), and the labels no image took.

    ``images/x/a.png`` pairs with ``labelTxt/x/a.txt``. DOTA's zips nest their files in extra folders
    (``images/part1/P0001.png`` beside ``labelTxt/P0001.txt``), so an image without a label at its own relative
    path takes the label of the same file stem - but only when that stem names exactly one image and one
    label, and the label is not already another image's exact pair: ``images/sub/ok.png`` never gets
    ``labelTxt/ok.txt`` when ``images/ok.png`` exists."""
    by_rel = {rel_stem(label, labels_dir): label for label in labels}
    exact = {image: by_rel.get(rel_stem(image, images_dir)) for image in images}
    taken = {label for label in exact.values() if label is not None}
    image_stems = Counter(image.stem for image in images)
    free_by_stem: dict[str, list[Path]] = defaultdict(list)
    for label in labels:
        free_by_stem[label.stem].append(label)
    pairs: dict[Path, tuple[Path | None, str]] = {}
    for image, label in exact.items():
        if label is not None:
            pairs[image] = (label, "")
            continue
        candidates = free_by_stem.get(image.stem, [])
        if len(candidates) == 1 and image_stems[image.stem] == 1 and candidates[0] not in taken:
            pairs[image] = (candidates[0], "")
            taken.add(candidates[0])
        elif candidates:
            names = ", ".join(rel_posix(c, labels_dir) for c in candidates[:3])
            pairs[image] = (None, f"no labelTxt/{rel_stem(image, images_dir)}.txt, and the label(s) of the same "
                                  f"name ({names}) cannot be assigned to it unambiguously")
        else:
            pairs[image] = (None, "no label file in labelTxt/")
    return pairs, [label for label in labels if label not in taken]


def make_record(root: Path, source: str, image_path: Path, label_path: Path | None, policy: ClassPolicy,
                missing: str = "no label file in labelTxt/") -> Record:
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
    if not line:
        return
    key, sep, value = line.partition(":")
    if sep and key.strip().lower() in HEADER_KEYS:
        record.meta[key.strip().lower()] = header_value(key.strip().lower(), value.strip())
        return
    obj_or_issue = parse_object_line(line, number, path, policy)
    if isinstance(obj_or_issue, Issue):
        record.issues.append(obj_or_issue)
    else:
        record.objects.append(obj_or_issue)


def header_value(key: str, value: str) -> float | str | None:
    """``gsd`` as a float (None for DOTA's ``gsd:null``); other headers as text."""
    if key != "gsd":
        return value
    try:
        return float(value)
    except ValueError:
        return None if value.lower() in ("", "null", "none", "nan") else value


def parse_object_line(line: str, number: int, path: Path, policy: ClassPolicy) -> ObjectAnn | Issue:
    parts = line.split()
    coords = parse_floats(parts[:8]) if len(parts) in (9, 10) else None
    difficult = parse_difficult(parts[9]) if len(parts) == 10 else False
    if coords is None or difficult is None:
        return object_issue("malformed_annotation", path, number, f"{LINE_FORMAT}, got {line!r}")
    name, known = policy.check(parts[8])
    if not known:
        return object_issue("unknown_class", path, number, unknown_class_message(parts[8]))
    hbb = hbb_of_points(coords)
    problem = box_problem(hbb, coords)
    if problem is not None:
        return object_issue("degenerate_box", path, number, problem)
    return ObjectAnn(cls=name, hbb=hbb, obb=coords, difficult=difficult, line=number)


def parse_difficult(token: str) -> bool | None:
    """DOTA's difficult flag (0/1; any integer accepted), None when it is not a plain integer."""
    value = parse_int(token)
    return None if value is None else value != 0
