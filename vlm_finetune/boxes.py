r"""GeoChat box text: ``{<x1><y1><x2><y2>|<theta>}`` with integers on a 0-100 grid.

Angle convention (GeoChat's own is undocumented; this module fixes one and uses it everywhere):

* Coordinates live on the 0-100 grid: x = 100 * px / image_width, y = 100 * py / image_height (y points down,
  as in image pixels).
* ``x1, y1, x2, y2`` is the axis-aligned extent of the box *before* rotation, centred on the box centre:
  its width ``x2 - x1`` is the box's longer side, its height ``y2 - y1`` the shorter one (for boxes made by
  :func:`box_from_obb`; a horizontal box from :func:`box_from_pixels` keeps its own width/height, theta 0).
* ``theta`` (integer degrees, in (-90, 90]) is the angle of that width side to the image x-axis, measured from +x
  towards +y (clockwise on screen, OpenCV's image convention). The box polygon is the un-rotated rectangle turned
  by ``theta`` about its centre (:func:`box_to_polygon`). theta 0 = a plain horizontal box.
* Oriented boxes are measured *after* scaling to the 0-100 grid, so the polygon on the grid is exact even for
  non-square images (an angle in pixels differs from the grid angle when width != height).
* Squares have no longer side; their angle is reduced to (-45, 45].
* All values are clamped to 0..100 after rounding (a rotated box touching the image border may be clipped).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

GRID = 100


@dataclass(frozen=True)
class Box:
    """A box on the 0-100 grid; ``theta`` in integer degrees (see the module docstring for the convention)."""

    x1: int
    y1: int
    x2: int
    y2: int
    theta: int = 0

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0

    @property
    def width(self) -> int:
        return self.x2 - self.x1

    @property
    def height(self) -> int:
        return self.y2 - self.y1


@dataclass
class ParseResult:
    """Boxes found in a text and how many brace groups could not be read as a box."""

    boxes: list[Box] = field(default_factory=list)
    n_malformed: int = 0

    def __iter__(self):
        return iter(self.boxes)

    def __len__(self) -> int:
        return len(self.boxes)


def _clamp(v: float) -> int:
    return int(min(GRID, max(0, round(v))))


def normalize_theta(theta: float) -> int:
    """Integer degrees in (-90, 90] (a rectangle turned by 180 degrees is the same rectangle)."""
    t = round(theta) % 180  # 0..179
    return t - 180 if t > 90 else t


def make_box(x1: float, y1: float, x2: float, y2: float, theta: float = 0) -> Box:
    """A Box from any numbers: rounded, clamped to 0..100, corners sorted, theta into (-90, 90]."""
    xa, xb = sorted((_clamp(x1), _clamp(x2)))
    ya, yb = sorted((_clamp(y1), _clamp(y2)))
    return Box(xa, ya, xb, yb, normalize_theta(theta))


def format_box(box: Box) -> str:
    return f"{{<{box.x1}><{box.y1}><{box.x2}><{box.y2}>|<{box.theta}>}}"


def format_boxes(boxes) -> str:
    """Several boxes of one phrase joined as GeoChat does: ``{...}{...}``."""
    return "".join(format_box(b) for b in boxes)


def box_from_pixels(hbb_xyxy, width: float, height: float, theta: float = 0) -> Box:
    """A horizontal pixel box ``(x1, y1, x2, y2)`` in an image of ``width`` x ``height`` px -> grid Box."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    x1, y1, x2, y2 = (float(v) for v in hbb_xyxy)
    sx, sy = GRID / float(width), GRID / float(height)
    return make_box(x1 * sx, y1 * sy, x2 * sx, y2 * sy, theta)


def box_from_obb(points8, width: float, height: float) -> Box:
    """DOTA's oriented box (8 numbers: 4 corners x1 y1 ... x4 y4 in pixels, in order around the box) -> grid Box.

    The corners are first scaled to the 0-100 grid; centre = mean of the corners; the two side lengths are the mean
    of opposite sides; theta = angle of the longer side to the x-axis (from +x towards +y) in (-90, 90], or (-45, 45]
    for a square; x1..y2 = the un-rotated longer-side x shorter-side rectangle around the centre (clamped).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    vals = [float(v) for v in points8]
    if len(vals) != 8:
        raise ValueError(f"an oriented box needs 8 numbers, got {len(vals)}")
    sx, sy = GRID / float(width), GRID / float(height)
    pts = [(vals[2 * i] * sx, vals[2 * i + 1] * sy) for i in range(4)]
    cx = sum(p[0] for p in pts) / 4.0
    cy = sum(p[1] for p in pts) / 4.0

    def edge(i):
        (ax, ay), (bx, by) = pts[i], pts[(i + 1) % 4]
        return bx - ax, by - ay

    e0, e1 = edge(0), edge(1)
    len0 = (math.hypot(*e0) + math.hypot(*edge(2))) / 2.0
    len1 = (math.hypot(*e1) + math.hypot(*edge(3))) / 2.0
    if len0 >= len1:
        long_len, short_len, long_edge = len0, len1, e0
    else:
        long_len, short_len, long_edge = len1, len0, e1
    angle = math.degrees(math.atan2(long_edge[1], long_edge[0]))
    if abs(long_len - short_len) <= 1e-6 * max(long_len, 1e-9):
        angle = ((angle + 45.0) % 90.0) - 45.0  # (-45, 45]: [-45, 45) then flip the edge case
        if angle <= -45.0 + 1e-9:
            angle += 90.0
    t = normalize_theta(angle)
    return make_box(cx - long_len / 2.0, cy - short_len / 2.0, cx + long_len / 2.0, cy + short_len / 2.0, t)


def box_to_polygon(box: Box) -> list[tuple[float, float]]:
    """The box's 4 corners on the 0-100 grid (clockwise on screen starting top-left before rotation)."""
    cx, cy = box.centre
    hw, hh = box.width / 2.0, box.height / 2.0
    c, s = math.cos(math.radians(box.theta)), math.sin(math.radians(box.theta))
    out = []
    for dx, dy in ((-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh)):
        out.append((cx + dx * c - dy * s, cy + dx * s + dy * c))
    return out


_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
# a brace group: "{" up to the matching "}" -- or, when truncated, up to the next "{" / end of text
_GROUP = re.compile(r"\{([^{}]*)(\}|(?=\{)|$)")
_COORD = re.compile(r"<\s*(" + _NUM + r")\s*>")
_THETA = re.compile(r"\|\s*<?\s*(" + _NUM + r")\s*>?\s*$")


def _parse_group(body: str) -> Box | None:
    body = body.strip()
    head, bar, tail = body.partition("|")
    coords = _COORD.findall(head)
    # everything in the head must be the 4 <n> pieces (spaces allowed)
    if len(coords) != 4 or _COORD.sub("", head).strip():
        return None
    theta = 0.0
    if bar:
        m = _THETA.search("|" + tail)
        if m is None:
            if tail.strip():
                return None
        else:
            theta = float(m.group(1))
    try:
        vals = [float(c) for c in coords]
    except ValueError:
        return None
    if not all(math.isfinite(v) for v in vals) or not math.isfinite(theta):
        return None
    return make_box(*vals, theta)


def parse_boxes(text) -> ParseResult:
    """Every ``{<x1><y1><x2><y2>|<theta>}`` in ``text``; never raises.

    Tolerated: spaces, missing ``|<theta>`` (theta 0), a bare ``|theta``, floats (rounded), values outside 0..100
    (clamped), swapped corners (sorted). Any other brace group (truncated, wrong count, junk) is skipped and
    counted in ``n_malformed``."""
    result = ParseResult()
    if not isinstance(text, str):
        return result
    for m in _GROUP.finditer(text):
        box = _parse_group(m.group(1)) if m.group(2) == "}" else None
        if box is None:
            result.n_malformed += 1
        else:
            result.boxes.append(box)
    return result


_PHRASE = re.compile(r"<p>(.*?)</p>\s*((?:\{[^{}]*\}?\s*)*)", re.DOTALL)


def parse_phrases(text) -> list[tuple[str, ParseResult]]:
    """``<p>phrase</p>{...}{...}`` grounding output -> ``[(phrase, ParseResult), ...]`` (boxes right after each
    phrase; a phrase with none gets an empty result). Never raises."""
    if not isinstance(text, str):
        return []
    return [(m.group(1).strip(), parse_boxes(m.group(2))) for m in _PHRASE.finditer(text)]
