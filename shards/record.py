"""The one record every reader yields (the errors readers raise are shared: :mod:`rs_common.errors`).

A reader turns a dataset in the layout it ships in into a stream of :class:`Record`. Everything after
the readers (image checks, M2B, B2C, hashing, writing) only sees records, so adding a format means
writing one reader module and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ObjectAnn:
    """One annotated object.

    ``hbb`` is the horizontal box ``(x1, y1, x2, y2)`` in pixels of the original image. ``obb`` is the
    oriented box as 4 corner points ``(x1, y1, ..., x4, y4)`` when the source has one. ``line`` names
    where the object came from (annotation file line, or json index) for error messages.
    """

    cls: str
    hbb: tuple[float, float, float, float]
    obb: tuple[float, ...] | None = None
    difficult: bool = False
    line: int | None = None

    def to_json(self) -> dict:
        out: dict = {"class": self.cls, "hbb": [round(v, 2) for v in self.hbb]}
        if self.obb is not None:
            out["obb"] = [round(v, 2) for v in self.obb]
        if self.difficult:
            out["difficult"] = True
        return out


@dataclass
class Issue:
    """A problem found while reading, kept with the record so the build can count and report it.

    ``level`` is ``"object"`` (one object dropped or clipped, the image is kept) or ``"record"`` (the
    whole sample is skipped). ``reason`` is a short stable key used in ``report.json``.
    """

    reason: str
    message: str
    level: str = "object"


@dataclass
class Record:
    """One image sample on its way to a shard.

    ``objects`` feed B2C; ``captions`` are human (or template) captions kept as they are; ``mask_path``
    + ``mask_classes`` make the worker run M2B. ``origin`` is the annotation file (or json) and
    ``origin_line`` the line or entry index, used in every error message about this record.
    """

    source: str
    image_path: Path
    rel_path: str
    objects: list[ObjectAnn] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    split: str | None = None
    label: str | None = None
    width: int | None = None
    height: int | None = None
    mask_path: Path | None = None
    mask_classes: dict | None = None
    origin: str | None = None
    origin_line: int | None = None
    issues: list[Issue] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def where(self) -> str:
        """``file:line`` of the annotation this record came from (or the image path)."""
        if self.origin is None:
            return str(self.image_path)
        return f"{self.origin}:{self.origin_line}" if self.origin_line is not None else self.origin


@dataclass
class DatasetIssue:
    """A problem that belongs to no image, e.g. a COCO annotation whose ``image_id`` matches no image.

    Readers yield these between their records; the build counts ``objects`` dropped annotations under
    ``reason`` in report.json's object counts and logs ``message`` in issues.jsonl. They are never images, so
    the image counts (read = written + skipped + ...) do not change."""

    source: str
    reason: str
    message: str
    objects: int = 1
