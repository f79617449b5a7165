"""The report kit: what every hand-built HTML report and overview picture shares.

One page shell (:func:`html_page` with :data:`BASE_CSS`), one escaping helper (:func:`esc`), inline images
(:func:`jpeg_data_uri`, :func:`img_tag`: base64 JPEG, no external URL), cards in a grid (:func:`card`,
:func:`grid`), simple tables (:func:`kv_table`, :func:`table`), OK/MISMATCH badges, and ONE box-drawing routine
(:func:`draw_boxes`) for axis-aligned boxes and rotated/oriented polygons with class labels. Colour helpers
(:func:`class_palette`, :func:`colour_of`) give one colour per class, the same in a thumbnail and a histogram.

Every report (shard build, retrieval, instruction data, GeoChat evaluation) builds its sections as HTML strings
from these pieces and hands them to :func:`html_page`; pictures are drawn with :func:`draw_boxes`, so boxes look
the same everywhere. Nothing here knows about a stage.
"""

from __future__ import annotations

import base64
import colorsys
import html
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

RGB = tuple[int, int, int]
MAX_LABELS = 20  # labels drawn per picture (largest boxes first); every box is drawn

# ---------------------------------------------------------------- HTML

BASE_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{margin-bottom:4px}h2{margin-top:36px;border-bottom:1px solid #ccc;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right;vertical-align:top}
th{background:#eee}td.name,th.name,td.text,th.text{text-align:left}tr.total td{font-weight:bold;background:#f3f3f3}
.ok{color:#fff;background:#2a8a2a;padding:1px 6px;border-radius:3px;font-weight:bold}
.bad{color:#fff;background:#c62828;padding:1px 6px;border-radius:3px;font-weight:bold}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(270px,1fr));gap:14px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;overflow-wrap:anywhere}
.card img{display:block;margin:0 auto 6px auto;max-width:100%;height:auto}
.card ol{padding-left:20px;margin:6px 0;font-size:13px}.meta{font-size:13px;color:#555}
.chip{display:inline-block;font-size:11px;padding:0 4px;margin:1px;border-radius:3px}
.missing{color:#c62828;font-weight:bold}.note{color:#666;font-size:13px}.path{color:#777;font-size:11px}
pre{background:#fff;border:1px solid #ddd;padding:8px;overflow-x:auto}
"""


def esc(value) -> str:
    """``value`` as text safe inside HTML elements and attribute values."""
    return html.escape(str(value), quote=True)


def fmt_num(value) -> str:
    """Integers with thousands separators, floats with 2 decimals, None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def html_page(title: str, body_sections: Iterable[str], extra_css: str = "") -> str:
    """A whole self-contained page: ``<h1>title</h1>`` then the (already escaped) sections; no script, no URL."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{BASE_CSS}{extra_css}</style></head><body><h1>{esc(title)}</h1>"
            f"{''.join(body_sections)}</body></html>\n")


def section(title: str, *parts: str, note: str | None = None) -> str:
    """``<h2>title</h2>`` with an optional note paragraph (plain text) and the given HTML parts."""
    head = f"<h2>{esc(title)}</h2>"
    if note is not None:
        head += f'<p class="note">{esc(note)}</p>'
    return head + "".join(parts)


def badge(ok: bool, yes: str = "OK", no: str = "MISMATCH") -> str:
    return f'<span class="ok">{esc(yes)}</span>' if ok else f'<span class="bad">{esc(no)}</span>'


def kv_table(rows: Iterable[tuple[object, object]]) -> str:
    """A two-column name | number table; names and values are escaped, numbers formatted by :func:`fmt_num`."""
    body = "".join(f'<tr><td class="name">{esc(k)}</td><td>{esc(fmt_num(v))}</td></tr>' for k, v in rows)
    return f"<table>{body}</table>"


def table(header: Sequence[str], rows: Iterable[Sequence[str]], css_class: str = "") -> str:
    """A table from a header (plain text) and rows of ready HTML cells (escape them first)."""
    cls = f' class="{esc(css_class)}"' if css_class else ""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table{cls}><tr>{head}</tr>{body}</table>"


def chip(text: str, colour: RGB) -> str:
    """A small coloured label, e.g. a class name with its count."""
    return (f'<span class="chip" style="background:{hex_colour(colour)};color:{hex_colour(text_colour_on(colour))}">'
            f"{text}</span>")


def card(*parts: str, css_class: str = "card") -> str:
    """One card: the given HTML parts (an :func:`img_tag`, a meta line, a list...) in a bordered box."""
    return f'<div class="{esc(css_class)}">{"".join(parts)}</div>'


def grid(cards: Iterable[str], css_class: str = "grid") -> str:
    """Cards in a responsive grid."""
    return f'<div class="{esc(css_class)}">{"".join(cards)}</div>'


def jpeg_data_uri(image: Image.Image, quality: int = 85) -> str:
    """``image`` as an inline ``data:image/jpeg;base64,...`` URI."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def img_tag(image: Image.Image, alt: str = "", css_class: str = "", quality: int = 85) -> str:
    """An ``<img>`` with the picture inline (base64 JPEG) and its size."""
    cls = f'class="{esc(css_class)}" ' if css_class else ""
    return (f'<img {cls}src="{jpeg_data_uri(image, quality)}" width="{image.width}" '
            f'height="{image.height}" alt="{esc(alt)}">')


# ---------------------------------------------------------------- fonts, colours, text


def load_font(size: int) -> ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` (Pillow >= 10.1 with FreeType), else its fixed bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError, AttributeError):
        return ImageFont.load_default()


def text_width(font: ImageFont.ImageFont, text: str) -> float:
    return font.getlength(text)


def line_height(font: ImageFont.ImageFont) -> int:
    left, top, right, bottom = font.getbbox("Ag")
    return int(bottom - min(top, 0)) + 3


def class_palette(names: list[str]) -> dict[str, RGB]:
    """A distinct colour per class: hues spaced by the golden ratio in the order given (most frequent first)."""
    palette = {}
    for i, name in enumerate(dict.fromkeys(names)):
        hue = (i * 0.618033988749895) % 1.0
        saturation, value = (0.85, 0.95) if i % 2 == 0 else (0.65, 0.80)
        r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
        palette[name] = (round(r * 255), round(g * 255), round(b * 255))
    return palette


def colour_of(name: str, palette: dict[str, RGB]) -> RGB:
    if name in palette:
        return palette[name]
    hue = (sum(name.encode("utf-8")) * 0.618033988749895) % 1.0  # a class the palette missed: stable, not unique
    r, g, b = colorsys.hsv_to_rgb(hue, 0.8, 0.9)
    return round(r * 255), round(g * 255), round(b * 255)


def hex_colour(rgb: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def text_colour_on(rgb: RGB) -> RGB:
    return (0, 0, 0) if 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 140 else (255, 255, 255)


def wrap_text(text: str, font: ImageFont.ImageFont, width: float, max_lines: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels; lines past ``max_lines`` (or over-long words) end in '...'."""
    lines: list[str] = []
    line = ""
    for word in str(text).split():
        trial = f"{line} {word}" if line else word
        if line and text_width(font, trial) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    if line:
        lines.append(line)
    cut = len(lines) > max_lines
    lines = lines[:max_lines]
    out = []
    for i, ln in enumerate(lines):
        ellipsis = cut and i == len(lines) - 1
        if ellipsis or text_width(font, ln) > width:
            while ln and text_width(font, ln + "...") > width:
                ln = ln[:-1]
            ln = ln.rstrip() + "..."
        out.append(ln)
    return out


# ---------------------------------------------------------------- pictures


def fit_side(image: Image.Image, side: int) -> Image.Image:
    """``image`` scaled (down or up) so that its longer side is ``side``."""
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.convert("RGB").resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)


def placeholder(side: int, text: str, font: ImageFont.ImageFont | None = None,
                colour: RGB = (150, 150, 150)) -> Image.Image:
    """A grey square with ``text`` in the middle, for an image that cannot be opened."""
    font = font or load_font(11)
    img = Image.new("RGB", (side, side), colour)
    draw = ImageDraw.Draw(img)
    draw.text(((side - text_width(font, text)) / 2, (side - line_height(font)) / 2), text, fill=(255, 255, 255), font=font)
    return img


def finite_values(values, n: int) -> list[float] | None:
    """``values`` as ``n`` finite floats, or None when it is not that (a malformed box is skipped, not fatal)."""
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(math.isfinite(v) for v in out) else None


@dataclass(frozen=True)
class Box:
    """One thing to draw: an axis-aligned rectangle (``xyxy``), an oriented polygon (``polygon``), or both.

    Coordinates are in the source image's units; :func:`draw_boxes` multiplies them by its ``scale``. ``label``
    is drawn in a filled tag above the rectangle (or the polygon's bounding box). ``width`` is the outline width;
    when both shapes are given the rectangle is drawn thin (1 px) so the polygon stands out.
    """

    xyxy: tuple[float, float, float, float] | None = None
    polygon: tuple[tuple[float, float], ...] | None = None
    colour: RGB = (230, 0, 0)
    label: str | None = None
    width: int = 2

    @classmethod
    def from_flat(cls, hbb=None, obb=None, colour: RGB = (230, 0, 0), label: str | None = None, width: int = 2) -> "Box | None":
        """From ``hbb = [x1, y1, x2, y2]`` and/or ``obb = [x1, y1, ..., x4, y4]``; None when neither is valid."""
        rect = finite_values(hbb, 4) if hbb is not None else None
        flat = finite_values(obb, 8) if obb is not None else None
        poly = tuple((flat[i], flat[i + 1]) for i in range(0, 8, 2)) if flat is not None else None
        if rect is None and poly is None:
            return None
        return cls(tuple(rect) if rect is not None else None, poly, colour, label, width)


def label_rect(size: tuple[int, int], x: float, y: float, text: str, font) -> tuple[float, float, float, float]:
    """Where the label of a box with top-left (x, y) goes: just above it, kept inside the image."""
    width, height = text_width(font, text) + 4, line_height(font)
    left = min(max(0.0, x), max(0.0, size[0] - width))
    top = y - height if y - height >= 0 else min(max(0.0, y), max(0.0, size[1] - height))
    return left, top, left + width, top + height


def overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def draw_boxes(image: Image.Image, boxes: Iterable[Box], scale: tuple[float, float] = (1.0, 1.0),
               font: ImageFont.ImageFont | None = None, max_labels: int = MAX_LABELS) -> Image.Image:
    """Draw ``boxes`` onto ``image`` in place (and return it): rectangles, polygons and labels.

    Coordinates are multiplied by ``scale`` = (sx, sy): e.g. ``(thumb.width / original.width, ...)`` for boxes in
    original pixels, or ``(w / 100, h / 100)`` for boxes on a 0-100 grid. Every box is drawn; the ``max_labels``
    largest labelled boxes get their label, skipping one that would cover another label (dense scenes).
    """
    sx, sy = scale
    draw = ImageDraw.Draw(image)
    labelled = []
    for box in boxes:
        if box is None:
            continue
        anchor = None
        if box.polygon is not None:
            pts = [(x * sx, y * sy) for x, y in box.polygon]
            draw.polygon(pts, outline=box.colour, width=box.width)
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            anchor = (min(xs), min(ys), max(xs), max(ys))
        if box.xyxy is not None:
            x1, x2 = sorted((box.xyxy[0] * sx, box.xyxy[2] * sx))
            y1, y2 = sorted((box.xyxy[1] * sy, box.xyxy[3] * sy))
            draw.rectangle((x1, y1, x2, y2), outline=box.colour, width=1 if box.polygon is not None else box.width)
            anchor = (x1, y1, x2, y2)
        if box.label and anchor is not None:
            area = (anchor[2] - anchor[0]) * (anchor[3] - anchor[1])
            labelled.append((area, anchor[0], anchor[1], box.label, box.colour))
    if not labelled or max_labels <= 0:
        return image
    font = font or load_font(11)
    placed: list[tuple[float, float, float, float]] = []
    for _, x, y, text, colour in sorted(labelled, key=lambda t: -t[0]):
        if len(placed) == max_labels:
            break
        tag = label_rect(image.size, x, y, text, font)
        if not any(overlaps(tag, other) for other in placed):
            draw.rectangle(tag, fill=colour)
            draw.text((tag[0] + 2, tag[1] + 1), text, fill=text_colour_on(colour), font=font)
            placed.append(tag)
    return image
