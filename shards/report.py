"""The human-readable run report: ``report.html`` (one self-contained file) and ``report.png`` (an overview).

``report.html`` shows the counts and whether they balance (read = written + skipped + duplicates +
contaminated, overall and per source), object counts, the class histogram, sample cards (thumbnail with
boxes, key, source, captions), duplicate and contamination pairs side by side and one example message per
skip reason. Images are inline base64 JPEG thumbnails; there is no script and no external URL.

``report.png`` is one picture for a README: sample thumbnails with their boxes and first caption, a small
class bar chart and the key counts. Both draw boxes with :func:`annotate` (the report kit's
:func:`rs_common.report_kit.draw_boxes`), so they look the same as in every other report.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from rs_common import report_kit as kit
from rs_common.files import atomic_write_bytes
from shards.b2c import display_name
from rs_common.imageio import ImageConfig
from shards.build_config import ReportConfig
from shards.imageio import load_image

THUMB_SIDE = 256  # longer side of an HTML thumbnail, pixels
HIST_TOP = 30  # classes in the HTML histogram
MAX_LABELS = kit.MAX_LABELS  # class labels drawn per thumbnail (largest boxes first); every box is drawn
PNG_WIDTH = 1440
PNG_COLUMNS = 4
PNG_SAMPLES = 12
PNG_CHART_TOP = 10
PLACEHOLDER_TEXT = "missing"

# the page, fonts, colours and box drawing come from the report kit (one look for every report)
esc, fmt_num, load_font, text_width, line_height = kit.esc, kit.fmt_num, kit.load_font, kit.text_width, kit.line_height
class_palette, colour_of, hex_colour, text_colour_on = kit.class_palette, kit.colour_of, kit.hex_colour, kit.text_colour_on
wrap_text, fit_side = kit.wrap_text, kit.fit_side

# ---------------------------------------------------------------- images


def object_class(obj: dict) -> str:
    """The name an object is labelled and coloured by: its display name, as in the captions and ``class_counts``."""
    return display_name(str(obj.get("class", "?")))


def object_box(obj: dict, palette: dict) -> kit.Box | None:
    """A sample object (``hbb`` and maybe ``obb``, source pixels) as a kit box in its class colour; None if malformed."""
    name = object_class(obj)
    return kit.Box.from_flat(obj.get("hbb"), obj.get("obb"), colour=colour_of(name, palette), label=name)


def annotate(image: Image.Image, objects: list[dict], side: int, palette: dict, font: ImageFont.ImageFont) -> Image.Image:
    """A copy of ``image`` with longer side ``side`` and its objects drawn on it, scaled to that size.

    HBBs are rectangles, OBBs (when present) polygons, in one colour per class; the largest
    ``MAX_LABELS`` boxes also get their class name.
    """
    thumb = fit_side(image, side)
    scale = (thumb.width / image.width, thumb.height / image.height)
    return kit.draw_boxes(thumb, [object_box(o, palette) for o in objects], scale, font, MAX_LABELS)


def load_thumbnail(path, side: int, font: ImageFont.ImageFont) -> tuple[Image.Image, str | None]:
    """The image at ``path`` scaled to ``side``, or (placeholder, why) when it cannot be opened."""
    try:
        image = load_image(Path(path), ImageConfig()).rgb
    except Exception as exc:  # noqa: BLE001 - a report must never fail on one unreadable file
        return kit.placeholder(side, PLACEHOLDER_TEXT, font), str(exc) or type(exc).__name__
    return fit_side(image, side), None


# ---------------------------------------------------------------- counts


def skipped_total(counts: dict) -> int:
    return sum((counts.get("skipped") or {}).values())


def balances(counts: dict) -> bool:
    """read == written + sum(skipped) + duplicates + contaminated."""
    accounted = counts.get("written", 0) + skipped_total(counts) + counts.get("duplicates", 0) + counts.get("contaminated", 0)
    return counts.get("read", 0) == accounted


def mismatched_sources(counts: dict) -> list[str]:
    return [name for name, c in (counts.get("sources") or {}).items() if not balances(c)]


def balance_badge(counts: dict) -> str:
    return kit.badge(balances(counts))


def balance_line(counts: dict) -> str:
    parts = (f"read {fmt_num(counts.get('read', 0))} vs written {fmt_num(counts.get('written', 0))}"
             f" + skipped {fmt_num(skipped_total(counts))} + duplicates {fmt_num(counts.get('duplicates', 0))}"
             f" + contaminated {fmt_num(counts.get('contaminated', 0))}")
    bad = mismatched_sources(counts)
    per_source = (f' &middot; per source: {kit.badge(False)} in {esc(", ".join(bad))}' if bad
                  else f' &middot; per source: {kit.badge(True)}' if counts.get("sources") else "")
    return f'<p class="balance">Balance: {esc(parts)} &rarr; {balance_badge(counts)}{per_source}</p>'


# ---------------------------------------------------------------- HTML sections

EXTRA_CSS = """
.hist td{border:none;padding:1px 6px}.hist .bar{width:420px;text-align:left}.hist .bar div{height:14px}
.pairs{display:flex;flex-wrap:wrap;gap:14px}
.pair{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;display:flex;gap:8px;align-items:flex-start}
.pair figure{margin:0;width:200px;font-size:12px;overflow-wrap:anywhere}.pair img{display:block;max-width:200px;height:auto}
.dist{font-size:13px;align-self:center;white-space:nowrap}
"""


def summary_section(counts: dict) -> str:
    rows = [("read", counts.get("read")), ("written", counts.get("written")), ("skipped", skipped_total(counts)),
            ("duplicates", counts.get("duplicates")), ("contaminated", counts.get("contaminated")),
            ("shards", counts.get("shards")), ("eval images", counts.get("eval_images"))]
    for reason, n in sorted((counts.get("eval_skipped") or {}).items()):
        rows.append((f"eval images skipped: {reason}", n))
    for name, value in (counts.get("timing") or {}).items():
        rows.append((f"timing: {str(name).replace('_', ' ')}", value))
    return kit.section("Summary", kit.kv_table(rows), balance_line(counts))


def sources_section(counts: dict) -> str:
    sources = counts.get("sources") or {}
    reasons = sorted({r for c in [counts, *sources.values()] for r in (c.get("skipped") or {})})
    head = "".join(f"<th>{esc(h)}</th>" for h in ["read", "written", *[f"skipped: {r}" for r in reasons], "duplicates", "contaminated", "balance"])

    def row(name: str, c: dict, css: str) -> str:
        cells = [c.get("read", 0), c.get("written", 0), *[(c.get("skipped") or {}).get(r, 0) for r in reasons],
                 c.get("duplicates", 0), c.get("contaminated", 0)]
        tds = "".join(f"<td>{esc(fmt_num(v))}</td>" for v in cells)
        return f'<tr class="{css}"><td class="name">{esc(name)}</td>{tds}<td>{balance_badge(c)}</td></tr>'

    body = "".join(row(f"{name} ({c['sensor']})" if c.get("sensor") else name, c, "source") for name, c in sources.items()) + row("all sources", counts, "total")
    return kit.section("Per source", f'<table><tr><th class="name">source</th>{head}</tr>{body}</table>')


def objects_section(counts: dict) -> str:
    objects = counts.get("objects")
    if not objects:
        return ""
    rows = [("read", objects.get("read")), ("kept", objects.get("kept")), ("clipped", objects.get("clipped"))]
    rows += [(f"dropped: {reason}", n) for reason, n in sorted((objects.get("dropped") or {}).items())]
    return kit.section("Objects", kit.kv_table(rows))


def histogram_section(class_counts: dict[str, int], palette: dict) -> str:
    ranked = sorted(class_counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if not ranked:
        return kit.section("Classes", note="No objects in the written samples.")
    top = ranked[:HIST_TOP]
    peak = max(n for _, n in top) or 1
    rows = "".join(
        f'<tr><td class="name">{esc(name)}</td><td class="bar"><div style="width:{100.0 * n / peak:.1f}%;'
        f'background:{hex_colour(colour_of(name, palette))}"></div></td><td>{esc(fmt_num(n))}</td></tr>'
        for name, n in top
    )
    more = f'<p class="note">{len(ranked) - len(top)} more classes not shown.</p>' if len(ranked) > len(top) else ""
    return kit.section("Classes", f'<table class="hist">{rows}</table>{more}',
                       note=f"Objects per class in the written samples ({len(ranked)} classes, top {len(top)} shown).")


def class_chips(objects: list[dict], palette: dict) -> str:
    per_class: dict[str, int] = {}
    for obj in objects:
        name = object_class(obj)
        per_class[name] = per_class.get(name, 0) + 1
    chips = [kit.chip(f"{esc(name)} &times;{n}", colour_of(name, palette))
             for name, n in sorted(per_class.items(), key=lambda kv: (-kv[1], kv[0]))]
    return f'<div>{"".join(chips)}</div>' if chips else ""


def sample_card(sample: dict, palette: dict, font) -> str:
    objects = sample.get("objects") or []
    thumb = annotate(sample["image"], objects, THUMB_SIDE, palette, font)
    captions = "".join(f"<li>{esc(c)}</li>" for c in sample.get("captions") or [])
    return kit.card(kit.img_tag(thumb, sample.get("key", ""), "sample"),
                    f'<div class="meta"><b>{esc(sample.get("key", ""))}</b> &middot; {esc(sample.get("source", ""))} '
                    f'&middot; {len(objects)} objects</div>', class_chips(objects, palette),
                    f'<ol class="captions">{captions}</ol>', f'<div class="path">{esc(sample.get("path", ""))}</div>')


def samples_section(samples: list[dict], palette: dict, font) -> str:
    if not samples:
        return kit.section("Samples", note="No samples were written.")
    return kit.section("Samples", kit.grid(sample_card(s, palette, font) for s in samples),
                       note=f"{len(samples)} written samples, round-robin over sources.")


def pair_figure(label: str, ref: dict, font) -> str:
    image, error = load_thumbnail(ref.get("path", ""), THUMB_SIDE * 3 // 4, font)
    who = " &middot; ".join(esc(ref[k]) for k in ("key", "source") if ref.get(k))
    note = f'<br><span class="missing" title="{esc(error)}">{PLACEHOLDER_TEXT}</span>' if error else ""
    return (f"<figure>{kit.img_tag(image, label, 'pair')}<figcaption><b>{esc(label)}</b> {who}{note}"
            f'<br><span class="path">{esc(ref.get("path", ""))}</span></figcaption></figure>')


def pairs_section(title: str, pairs: list[dict], labels: tuple[str, str], limit: int, font, empty: str) -> str:
    if not pairs:
        return kit.section(title, note=empty)
    shown = pairs[:max(0, limit)]
    cards = []
    for pair in shown:
        extra = f"<br>{pair['n_matches']} eval matches" if pair.get("n_matches", 1) > 1 else ""
        cards.append(kit.card(pair_figure(labels[0], pair.get("removed") or {}, font),
                              pair_figure(labels[1], pair.get("matched") or {}, font),
                              f'<div class="dist">distance {esc(pair.get("distance", "?"))}{extra}</div>', css_class="pair"))
    return kit.section(title, kit.grid(cards, css_class="pairs"),
                       note=f"{len(shown)} of {len(pairs)} pairs shown ({labels[0]} | {labels[1]}).")


def issues_section(counts: dict) -> str:
    title = "Skip reasons and issues"
    examples = counts.get("issues_examples") or []
    if not examples:
        return kit.section(title, note="No skipped samples and no issues.")
    known = {**((counts.get("objects") or {}).get("dropped") or {}), **(counts.get("skipped") or {})}
    rows = "".join(
        f'<tr><td class="name">{esc(e.get("reason", "?"))}</td><td>{esc(fmt_num(known.get(e.get("reason"))))}</td>'
        f'<td class="name">{esc(e.get("message", ""))}</td></tr>'
        for e in examples
    )
    return kit.section(title, f'<table><tr><th class="name">reason</th><th>count</th><th class="name">example</th></tr>{rows}</table>',
                       note="One example message per reason; every one is in issues.jsonl.")


def render_html(title: str, counts: dict, samples: list[dict], duplicates: list[dict], contaminated: list[dict],
                class_counts: dict[str, int], cfg: ReportConfig, palette: dict) -> str:
    font = load_font(11)
    sections = [
        summary_section(counts), sources_section(counts), objects_section(counts),
        histogram_section(class_counts, palette), samples_section(samples, palette, font),
        pairs_section("Duplicate pairs", duplicates, ("removed", "kept"), cfg.max_pairs, font,
                      "No near-duplicates were removed."),
        pairs_section("Contamination pairs", contaminated, ("train image", "eval image"), cfg.max_pairs, font,
                      "No training image matched an evaluation image."),
        issues_section(counts),
    ]
    return kit.html_page(title, sections, EXTRA_CSS)


# ---------------------------------------------------------------- PNG overview


def key_count_lines(counts: dict) -> list[str]:
    skipped = counts.get("skipped") or {}
    reasons = ", ".join(f"{r} {fmt_num(n)}" for r, n in sorted(skipped.items(), key=lambda kv: -kv[1])[:4])
    lines = [
        f"read {fmt_num(counts.get('read', 0))}   written {fmt_num(counts.get('written', 0))}",
        f"skipped {fmt_num(skipped_total(counts))}" + (f" ({reasons})" if reasons else ""),
        f"duplicates {fmt_num(counts.get('duplicates', 0))}   contaminated {fmt_num(counts.get('contaminated', 0))}",
        f"shards {fmt_num(counts.get('shards', 0))}   eval images {fmt_num(counts.get('eval_images', 0))}",
    ]
    objects = counts.get("objects")
    if objects:
        dropped = sum((objects.get("dropped") or {}).values())
        lines.append(f"objects kept {fmt_num(objects.get('kept', 0))} of {fmt_num(objects.get('read', 0))}"
                     f" (clipped {fmt_num(objects.get('clipped', 0))}, dropped {fmt_num(dropped)})")
    bad = mismatched_sources(counts)
    lines.append(f"balance {'OK' if balances(counts) else 'MISMATCH'}" + (f", per source MISMATCH ({', '.join(bad)})" if bad else ""))
    return lines


def draw_bar_chart(draw: ImageDraw.ImageDraw, origin: tuple[int, int], width: int, class_counts: dict, palette: dict, font) -> int:
    """Top classes as horizontal bars at ``origin``; returns the height used."""
    ranked = sorted(class_counts.items(), key=lambda kv: (-kv[1], kv[0]))[:PNG_CHART_TOP]
    x, y = origin
    step = line_height(font) + 4
    draw.text((x, y), "objects per class" if ranked else "no objects", fill=(90, 90, 90), font=font)
    if not ranked:
        return step
    label_w = min(width // 3, int(max(text_width(font, name) for name, _ in ranked)) + 10)
    bar_w = width - label_w - int(text_width(font, fmt_num(ranked[0][1]))) - 12
    peak = ranked[0][1] or 1
    for i, (name, n) in enumerate(ranked, start=1):
        top = y + i * step
        draw.text((x, top), wrap_text(name, font, label_w - 8, 1)[0], fill=(40, 40, 40), font=font)
        length = max(1, round(bar_w * n / peak))
        draw.rectangle((x + label_w, top + 1, x + label_w + length, top + step - 5), fill=colour_of(name, palette))
        draw.text((x + label_w + length + 6, top), fmt_num(n), fill=(40, 40, 40), font=font)
    return (len(ranked) + 1) * step


def render_png(title: str, counts: dict, samples: list[dict], class_counts: dict, palette: dict) -> Image.Image:
    margin, gap = 24, 16
    cell = (PNG_WIDTH - 2 * margin - (PNG_COLUMNS - 1) * gap) // PNG_COLUMNS
    title_font, text_font, small_font, label_font = load_font(28), load_font(17), load_font(13), load_font(12)
    caption_lines = 4
    text_h, small_h = line_height(text_font), line_height(small_font)
    lines = key_count_lines(counts)
    chart_rows = min(len(class_counts), PNG_CHART_TOP) + 1
    header_h = line_height(title_font) + 8 + max(len(lines) * (text_h + 2), chart_rows * (small_h + 4)) + gap
    shown = samples[:PNG_SAMPLES]
    rows = math.ceil(len(shown) / PNG_COLUMNS) if shown else 1
    cell_h = cell + 6 + small_h + caption_lines * text_h + gap
    canvas = Image.new("RGB", (PNG_WIDTH, margin + header_h + rows * cell_h + margin), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)

    draw.text((margin, margin), title, fill=(20, 20, 20), font=title_font)
    top = margin + line_height(title_font) + 8
    for i, line in enumerate(lines):
        colour = (198, 40, 40) if "MISMATCH" in line else (30, 30, 30)
        draw.text((margin, top + i * (text_h + 2)), line, fill=colour, font=text_font)
    chart_x = margin + (PNG_WIDTH - 2 * margin) // 2
    draw_bar_chart(draw, (chart_x, top), PNG_WIDTH - margin - chart_x, class_counts, palette, small_font)

    grid_top = margin + header_h
    if not shown:
        draw.text((margin, grid_top), "no samples were written", fill=(120, 120, 120), font=text_font)
    for i, sample in enumerate(shown):
        x = margin + (i % PNG_COLUMNS) * (cell + gap)
        y = grid_top + (i // PNG_COLUMNS) * cell_h
        draw_sample_cell(canvas, draw, (x, y), cell, sample, palette, (label_font, small_font, text_font), caption_lines)
    return canvas


def draw_sample_cell(canvas: Image.Image, draw: ImageDraw.ImageDraw, origin: tuple[int, int], cell: int, sample: dict,
                     palette: dict, fonts: tuple, caption_lines: int) -> None:
    """One sample in the PNG grid: annotated thumbnail letterboxed in a cell x cell square, key, first caption."""
    label_font, small_font, text_font = fonts
    x, y = origin
    thumb = annotate(sample["image"], sample.get("objects") or [], cell, palette, label_font)
    draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=(235, 235, 235))
    canvas.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
    ty = y + cell + 6
    meta = f"{sample.get('key', '')} | {sample.get('source', '')}"
    draw.text((x, ty), wrap_text(meta, small_font, cell, 1)[0] if meta.strip() else "", fill=(110, 110, 110), font=small_font)
    ty += line_height(small_font)
    captions = sample.get("captions") or []
    for line in wrap_text(captions[0] if captions else "(no caption)", text_font, cell, caption_lines):
        draw.text((x, ty), line, fill=(25, 25, 25), font=text_font)
        ty += line_height(text_font)


# ---------------------------------------------------------------- entry point


def report_palette(class_counts: dict[str, int], samples: list[dict]) -> dict[str, tuple[int, int, int]]:
    """Colours for every class: most frequent first, then classes seen only in the samples."""
    ranked = [name for name, _ in sorted(class_counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    seen = sorted({object_class(o) for s in samples for o in s.get("objects") or []})
    return class_palette(ranked + seen)


def write_html_report(out_dir: Path, counts: dict, samples: list[dict], duplicates: list[dict], contaminated: list[dict],
                      class_counts: dict[str, int], cfg: ReportConfig) -> dict:
    """Write ``out_dir/report.html`` and ``out_dir/report.png``; returns ``{"html": path, "png": path}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = counts or {}
    samples = samples or []
    class_counts = dict(class_counts or {})
    palette = report_palette(class_counts, samples)
    title = f"Shard build report: {out_dir.name}"
    html_path, png_path = out_dir / "report.html", out_dir / "report.png"
    page = render_html(title, counts, samples, duplicates or [], contaminated or [], class_counts, cfg, palette)
    atomic_write_bytes(html_path, page.encode("utf-8"))
    buf = io.BytesIO()
    render_png(title, counts, samples, class_counts, palette).save(buf, format="PNG", compress_level=3)  # optimize=True cost ~3 s a build
    atomic_write_bytes(png_path, buf.getvalue())
    return {"html": html_path, "png": png_path}
