"""YOLO (Ultralytics) detection sets, the way most SAR and infrared sets ship (SSDD, HRSID, ...).

Layouts: ``ROOT/images/**`` + ``ROOT/labels/**`` (split subfolders such as ``images/train`` + ``labels/train``
included), or one ``images/`` + ``labels/`` pair per split folder (``ROOT/train/images`` + ``ROOT/train/labels``,
the Roboflow export). An image pairs with the label file of the same relative stem (``images/train/a.jpg`` <->
``labels/train/a.txt``).

Label lines are ``class_id cx cy w h`` (horizontal box) or ``class_id x1 y1 x2 y2 x3 y3 x4 y4`` (YOLO-OBB), all
coordinates normalised to [0, 1]. Class names come from ``ROOT/data.yaml`` (``names`` as a list or an
``{id: name}`` dict) or ``classes.txt`` (one name a line, in ROOT or ``labels/``). Records carry pixel boxes, so the
image size is read from the image header (no decode; EXIF orientations 5-8 swap it, as the worker turns the image
upright). Problems are counted with ``file:line``: a line with the wrong number of values or a bad class id
(``malformed_annotation``), a class id outside the names (``unknown_class``), a coordinate outside [0, 1]
(``box_outside_image``), an image with no label file (``missing_annotation``, as DOTA), an empty label file
(``empty_annotation``); a label with no image yields a record the worker counts as ``missing_image``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import tifffile
import yaml
from PIL import Image, UnidentifiedImageError

from rs_common.errors import LayoutError
from rs_common.files import absolute, list_images, rel_posix, rel_stem
from shards.build_config import BuildConfig
from shards.readers._common import (
    box_problem,
    hbb_of_points,
    index_by_rel_stem,
    list_with_suffix,
    object_issue,
    parse_floats,
    parse_int,
    record_issue,
    sort_records,
)
from shards.readers.classes import ClassPolicy, class_policy
from shards.record import Issue, ObjectAnn, Record

NAME_FILES = ("data.yaml", "classes.txt", "labels/classes.txt")
HBB_VALUES, OBB_VALUES = 5, 9
EXIF_ORIENTATION = 0x0112
TURNED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
SPLIT_NAMES = frozenset({"train", "val", "valid", "validation", "test", "trainval"})


# ---------------------------------------------------------------- layout and class names


def split_pairs(root: Path) -> list[tuple[Path, Path]]:
    """The (images dir, labels dir) pairs of the dataset: ROOT's own, else one per split folder."""
    if (root / "images").is_dir():
        return [(root / "images", root / "labels")]
    subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "images").is_dir())
    return [(p / "images", p / "labels") for p in subs]


def check_layout(root: Path) -> None:
    root = absolute(root)
    if not root.is_dir():
        raise LayoutError(f"{root}: a YOLO dataset is a folder with images/ and labels/, not a file")
    if not split_pairs(root):
        raise LayoutError(f"{root}: a YOLO folder needs images/ + labels/ (or SPLIT/images/ + SPLIT/labels/); none found")
    load_class_names(root)


def load_class_names(root: Path) -> dict[int, str]:
    """{class id: name} from ``data.yaml`` (``names`` list or dict) or ``classes.txt``; LayoutError when none."""
    for rel in NAME_FILES:
        path = root / rel
        if path.is_file():
            return yaml_names(path) if path.suffix == ".yaml" else text_names(path)
    raise LayoutError(f"{root}: a YOLO folder needs its class names in data.yaml (names) or classes.txt; neither found")


def text_names(path: Path) -> dict[int, str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LayoutError(f"{path}: cannot read class names: {exc}") from None
    names = [line.strip() for line in lines]
    while names and not names[-1]:
        names.pop()
    for number, name in enumerate(names, start=1):
        if not name:
            raise LayoutError(f"{path}:{number}: empty class name (class id {number - 1})")
    if not names:
        raise LayoutError(f"{path}: no class names in it")
    return dict(enumerate(names))


def yaml_names(path: Path) -> dict[int, str]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise LayoutError(f"{path}: cannot read data.yaml: {exc}") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        raise LayoutError(f"{path}: 'names' must be a non-empty list or {{id: name}} mapping")
    out: dict[int, str] = {}
    for key, name in names.items():
        cid = parse_int(key)
        if cid is None or cid < 0 or not isinstance(name, (str, int)) or not str(name).strip():
            raise LayoutError(f"{path}: bad class entry {key!r}: {name!r} (want a class id >= 0 and a name)")
        out[cid] = str(name).strip()
    return out


# ---------------------------------------------------------------- reading


def read(root: Path, source: str, cfg: BuildConfig) -> Iterator[Record]:
    root = absolute(root)
    check_layout(root)
    names = load_class_names(root)
    policy = class_policy(cfg, names.values(), check_known=False)
    records: list[Record] = []
    for images_dir, labels_dir in split_pairs(root):
        records += read_split(root, images_dir, labels_dir, source, names, policy)
    yield from sort_records(records)


def read_split(root: Path, images_dir: Path, labels_dir: Path, source: str, names: Mapping[int, str],
               policy: ClassPolicy) -> list[Record]:
    labels = index_by_rel_stem(
        (p for p in list_with_suffix(labels_dir, ".txt", hidden=True) if p != labels_dir / "classes.txt"), labels_dir)
    split = images_dir.parent.name if images_dir.parent != root else None
    records = []
    for image in list_images(images_dir, hidden=True):
        stem = rel_stem(image, images_dir)
        folder = stem.split("/", 1)[0] if "/" in stem else None
        split_name = split or (folder if folder in SPLIT_NAMES else None)
        records.append(make_record(root, source, image, labels.pop(stem, None), names, policy, split_name))
    for stem, label in labels.items():  # labels with no image: the worker counts them as missing_image
        guess = images_dir / f"{stem}.jpg"
        records.append(Record(source=source, image_path=guess, rel_path=rel_posix(guess, root), origin=str(label)))
    return records


def make_record(root: Path, source: str, image_path: Path, label_path: Path | None, names: Mapping[int, str],
                policy: ClassPolicy, split: str | None = None) -> Record:
    record = Record(source=source, image_path=image_path, rel_path=rel_posix(image_path, root), split=split)
    if label_path is None:
        record.issues.append(record_issue("missing_annotation", image_path, None, "no label file in labels/"))
        return record
    record.origin = str(label_path)
    try:
        lines = label_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        record.issues.append(record_issue("malformed_annotation", label_path, None, f"cannot read label file: {exc}"))
        return record
    numbered = [(n, line.strip()) for n, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        record.issues.append(record_issue("empty_annotation", label_path, None, "empty label file: no object"))
        return record
    size = image_size(image_path)
    if isinstance(size, str):
        record.issues.append(record_issue("unreadable_image", image_path, None,
                                          f"cannot read the image size from its header ({size}); YOLO boxes need it"))
        return record
    record.width, record.height = size
    for number, line in numbered:
        obj = parse_line(line, number, label_path, size, names, policy)
        (record.issues if isinstance(obj, Issue) else record.objects).append(obj)
    return record


def image_size(path: Path) -> tuple[int, int] | str:
    """(width, height) of the upright image from its header, or why it cannot be read."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(EXIF_ORIENTATION, 1)
        return (height, width) if orientation in TURNED else (width, height)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        pil_error = str(exc)
    if path.suffix.lower() in (".tif", ".tiff"):
        try:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                return (int(page.imagewidth), int(page.imagelength))
        except (OSError, ValueError, IndexError, tifffile.TiffFileError) as exc:
            return f"{pil_error}; tifffile: {exc}"
    return pil_error or "unreadable image"


def parse_line(line: str, number: int, path: Path, size: tuple[int, int], names: Mapping[int, str],
               policy: ClassPolicy) -> ObjectAnn | Issue:
    """One label line -> an object in pixels, or the issue that drops it."""
    tokens = line.split()
    if len(tokens) not in (HBB_VALUES, OBB_VALUES):
        return object_issue("malformed_annotation", path, number,
                            f"{len(tokens)} values; want 5 (class cx cy w h) or 9 (class x1 y1 ... x4 y4)")
    cid = parse_int(tokens[0])
    values = parse_floats(tokens[1:])
    if cid is None or values is None:
        return object_issue("malformed_annotation", path, number, f"not a class id and numbers: {line!r}")
    if cid not in names:
        return object_issue("unknown_class", path, number,
                            f"class id {cid} is not in the class names (ids {min(names)}..{max(names)})")
    if not all(0.0 <= v <= 1.0 for v in values):
        return object_issue("box_outside_image", path, number,
                            f"coordinate outside [0, 1] in {values} (YOLO coordinates are normalised to the image)")
    width, height = size
    if len(values) == HBB_VALUES - 1:
        cx, cy, w, h = values
        hbb = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
        obb = None
    else:
        obb = tuple(v * (width if i % 2 == 0 else height) for i, v in enumerate(values))
        hbb = hbb_of_points(obb)
    problem = box_problem(hbb, obb or ())
    if problem is not None:
        return object_issue("degenerate_box", path, number, problem)
    return ObjectAnn(cls=policy.resolve(names[cid]), hbb=hbb, obb=obb, line=number)
