"""Pascal-VOC-style xml: Pascal VOC, DIOR / DIOR-R (``robndbox``) and HRSC2016 (``HRSC_Image``).

Layout: ``ROOT/Annotations/**/*.xml`` (recursive) + images in ``ROOT/JPEGImages`` (DIOR also ships
``JPEGImages-trainval``/``JPEGImages-test``), ``ROOT/images`` or ``ROOT/AllImages`` (HRSC). Images are
found by the xml's file name, else by stem with any extension, in a one-time listing of those folders;
one that is not there gets a guessed path so the worker counts it as ``missing_image``.

DIOR ships ``Annotations/Horizontal Bounding Boxes/`` and ``Annotations/Oriented Bounding Boxes/`` with
the same stems: one record per stem, from the oriented file when there is one (its corners give both
OBB and HBB). ``ObjectAnn.line`` is the line of the object's opening tag, found by scanning the xml text
(ElementTree keeps no line numbers); when that scan cannot be matched to the parsed objects (e.g. an
object inside a comment) it is None and messages name the object by its 1-based index instead.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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
    parse_number,
    record_issue,
    rel_stem,
    rotated_box_corners,
    sort_records,
)
from shards.readers.classes import DIOR_CLASSES, HRSC_CLASSES, VOC_CLASSES, ClassPolicy, class_policy, unknown_class_message
from shards.record import Issue, ObjectAnn, Record

IMAGE_DIRS = ("JPEGImages", "JPEGImages-trainval", "JPEGImages-test", "images", "AllImages")
DIOR_BOX_FOLDER = re.compile(r"bounding boxes", re.IGNORECASE)
ROBNDBOX_CORNERS = ("x_left_top", "y_left_top", "x_right_top", "y_right_top",
                    "x_right_bottom", "y_right_bottom", "x_left_bottom", "y_left_bottom")
ROBNDBOX_CENTRE = ("cx", "cy", "w", "h", "angle")  # roLabelImg's rotated box, angle in radians
VOC_BOX = ("xmin", "ymin", "xmax", "ymax")
HRSC_BOX = ("box_xmin", "box_ymin", "box_xmax", "box_ymax")
HRSC_MBOX = ("mbox_cx", "mbox_cy", "mbox_w", "mbox_h", "mbox_ang")  # angle in radians
HRSC_CLASS = "ship"


@dataclass(frozen=True)
class ImageLookup:
    """The images of the dataset by file name and by stem, from one listing of the image folders."""

    by_name: dict[str, Path]
    by_stem: dict[str, Path]
    root: Path
    first_dir: Path | None

    def find(self, file_name: str, xml_stem: str, usual_dir: str = "JPEGImages") -> Path:
        """The listed image, else a guess in the first image folder (``ROOT/usual_dir`` when there is none)."""
        for candidate in (self.by_name.get(file_name), self.by_stem.get(Path(file_name).stem), self.by_stem.get(xml_stem)):
            if candidate is not None:
                return candidate
        folder = self.first_dir or self.root / usual_dir
        return folder / (file_name if Path(file_name).suffix else f"{file_name}.jpg")


def image_lookup(root: Path) -> ImageLookup:
    dirs = [root / name for name in IMAGE_DIRS if (root / name).is_dir()]
    by_name: dict[str, Path] = {}
    by_stem: dict[str, Path] = {}
    for folder in dirs:
        for path in list_images(folder, hidden=True):
            by_name.setdefault(path.name, path)
            by_stem.setdefault(path.stem, path)
    return ImageLookup(by_name, by_stem, root, dirs[0] if dirs else None)


def check_layout(root: Path) -> None:
    root = absolute(root)
    if not root.is_dir():
        raise LayoutError(f"{root}: a VOC/DIOR/HRSC dataset is a folder with Annotations/, not a file")
    if not (root / "Annotations").is_dir():
        raise LayoutError(f"{root}: a VOC/DIOR/HRSC folder needs Annotations/ (not found)")


def read(root: Path, source: str, cfg: BuildConfig) -> Iterator[Record]:
    root = absolute(root)
    check_layout(root)
    annotations = root / "Annotations"
    policy = class_policy(cfg, DIOR_CLASSES | VOC_CLASSES | HRSC_CLASSES)
    images = image_lookup(root)
    xml_files = one_file_per_image(list_with_suffix(annotations, ".xml", hidden=True), annotations)
    yield from sort_records([read_xml(path, root, images, source, policy) for path in xml_files])


def one_file_per_image(xml_files: Sequence[Path], annotations: Path) -> list[Path]:
    """Drop DIOR's horizontal xml when the oriented one of the same image exists."""
    chosen: dict[str, Path] = {}
    for path in sorted(xml_files, key=lambda p: "oriented" not in rel_posix(p, annotations).lower()):
        parts = [part for part in rel_stem(path, annotations).split("/") if not DIOR_BOX_FOLDER.search(part)]
        chosen.setdefault("/".join(parts), path)
    return list(chosen.values())


def read_xml(xml_path: Path, root: Path, images: ImageLookup, source: str, policy: ClassPolicy) -> Record:
    try:
        raw = xml_path.read_bytes()
        tree = ET.fromstring(raw)
    except OSError as exc:
        return broken_xml_record(xml_path, root, images, source, None, f"cannot read: {exc}")
    except ET.ParseError as exc:
        return broken_xml_record(xml_path, root, images, source, exc.position[0], f"not valid XML: {exc}")
    is_hrsc = tree.tag == "HRSC_Image"
    if is_hrsc:
        image_path = images.find(hrsc_file_name(tree, xml_path), xml_path.stem, usual_dir="AllImages")
    else:
        image_path = images.find(voc_file_name(tree, xml_path), xml_path.stem)
    record = Record(source=source, image_path=image_path, rel_path=rel_posix(image_path, root), origin=str(xml_path))
    size_tags = ("Img_SizeWidth", "Img_SizeHeight") if is_hrsc else ("size/width", "size/height")
    record.width, record.height = (positive_int(tree.findtext(tag)) for tag in size_tags)
    elements = tree.findall("HRSC_Objects/HRSC_Object") if is_hrsc else tree.findall("object")
    lines = opening_tag_lines(raw, "HRSC_Object" if is_hrsc else "object", len(elements))
    parse = parse_hrsc_object if is_hrsc else parse_voc_object
    for number, (element, line) in enumerate(zip(elements, lines), start=1):
        item = parse(element, ObjectPlace(xml_path, line, number), policy)
        (record.issues if isinstance(item, Issue) else record.objects).append(item)
    return record


def broken_xml_record(xml_path: Path, root: Path, images: ImageLookup, source: str, line: int | None, message: str) -> Record:
    """A record for an xml that cannot be parsed: its image guessed from the stem, skipped as malformed."""
    image_path = images.find(xml_path.stem, xml_path.stem)
    record = Record(source=source, image_path=image_path, rel_path=rel_posix(image_path, root),
                    origin=str(xml_path), origin_line=line)
    record.issues.append(record_issue("malformed_annotation", xml_path, line, message))
    return record


def voc_file_name(tree: ET.Element, xml_path: Path) -> str:
    return (tree.findtext("filename") or "").strip() or xml_path.stem


def hrsc_file_name(tree: ET.Element, xml_path: Path) -> str:
    stem = (tree.findtext("Img_FileName") or "").strip() or xml_path.stem
    fmt = (tree.findtext("Img_FileFmt") or "").strip() or "bmp"
    return f"{stem}.{fmt}"


def positive_int(text: str | None) -> int | None:
    value = parse_number(text or "")
    return int(value) if value is not None and math.isfinite(value) and value >= 1 else None


def opening_tag_lines(raw: bytes, tag: str, expected: int) -> list[int | None]:
    """1-based line of each ``<tag ...>`` in the text, or all None when they do not match the parse."""
    text = raw.decode("utf-8", errors="replace")
    starts = [m.start() for m in re.finditer(rf"<{tag}\b", text)]
    if len(starts) != expected:
        return [None] * expected
    return [text.count("\n", 0, s) + 1 for s in starts]


@dataclass(frozen=True)
class ObjectPlace:
    """Where one xml object is: for its ObjectAnn.line and every message about it."""

    path: Path
    line: int | None
    number: int

    def issue(self, reason: str, message: str) -> Issue:
        return object_issue(reason, self.path, self.line, f"object #{self.number}: {message}")


def child_floats(element: ET.Element | None, tags: Sequence[str]) -> tuple[float, ...] | None:
    """The numbers in ``element``'s children ``tags``, or None when one is missing or not a number."""
    if element is None:
        return None
    texts = [element.findtext(tag) for tag in tags]
    return None if any(t is None for t in texts) else parse_floats([t.strip() for t in texts])


def is_difficult(element: ET.Element) -> bool:
    return (element.findtext("difficult") or "0").strip() not in ("", "0", "false", "False")


def robndbox_corners(rob: ET.Element) -> tuple[float, ...] | None:
    """DIOR-R corners (lt, rt, rb, lb), or corners from a roLabelImg centre/size/angle box."""
    corners = child_floats(rob, ROBNDBOX_CORNERS)
    if corners is not None:
        return corners
    centre = child_floats(rob, ROBNDBOX_CENTRE)
    return rotated_box_corners(*centre) if centre is not None else None


def parse_voc_object(element: ET.Element, place: ObjectPlace, policy: ClassPolicy) -> ObjectAnn | Issue:
    raw_name = (element.findtext("name") or "").strip()
    if not raw_name:
        return place.issue("malformed_annotation", "no <name>")
    rob = element.find("robndbox")
    if rob is not None:
        obb = robndbox_corners(rob)
        hbb = hbb_of_points(obb) if obb is not None else None
    else:
        obb, hbb = None, child_floats(element.find("bndbox"), VOC_BOX)
    if hbb is None:
        return place.issue("malformed_annotation", "needs <bndbox> with xmin..ymax or <robndbox> with x_left_top..y_left_bottom")
    return finished_object(raw_name, hbb, obb, is_difficult(element), place, policy)


def parse_hrsc_object(element: ET.Element, place: ObjectPlace, policy: ClassPolicy) -> ObjectAnn | Issue:
    mbox = child_floats(element, HRSC_MBOX)
    obb = rotated_box_corners(*mbox) if mbox is not None else None
    hbb = child_floats(element, HRSC_BOX) or (hbb_of_points(obb) if obb is not None else None)
    if hbb is None:
        return place.issue("malformed_annotation", "needs box_xmin..box_ymax or mbox_cx..mbox_ang")
    return finished_object(HRSC_CLASS, hbb, obb, is_difficult(element), place, policy)


def finished_object(raw_name: str, hbb: tuple[float, ...], obb: tuple[float, ...] | None, difficult: bool,
                    place: ObjectPlace, policy: ClassPolicy) -> ObjectAnn | Issue:
    """Class check and box sanity shared by VOC/DIOR and HRSC objects."""
    name, known = policy.check(raw_name)
    if not known:
        return place.issue("unknown_class", unknown_class_message(raw_name))
    problem = box_problem(hbb, obb or ())
    if problem is not None:
        return place.issue("degenerate_box", problem)
    return ObjectAnn(cls=name, hbb=tuple(hbb), obb=obb, difficult=difficult, line=place.line)
