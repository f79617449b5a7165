"""The retrieval evaluation's ``report.html``: a few text queries with their top images and image queries with their
top captions, hits marked, ranks of the true matches (ties shown as ranges). Self-contained: thumbnails are inlined
as base64 JPEGs; the page shell and style are the report kit's (``rs_common.report_kit``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clip_pretrain.evaluate.eval_sets import EvalItem, load_rgb
from rs_common.report_kit import esc as kit_esc, html_page, jpeg_data_uri

# what this report adds to the kit's page style: hit/miss outlines on thumbnails and captions
CSS = (".hit{outline:4px solid #1a9850}.miss{outline:2px solid #ddd}.cell{display:inline-block;margin:4px;"
       "text-align:center;font-size:11px;width:120px;overflow-wrap:anywhere}.cap{padding:3px 6px;margin:2px 0;"
       "text-align:left}.cap.hit{background:#d9f0d3;outline:none}.noimg{width:112px;height:112px;background:#eee}"
       "img{max-width:112px}")


def _topk_small(queries: np.ndarray, database: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k for a handful of queries (score desc, id asc), without an index."""
    scores = queries @ database.T
    k = min(k, database.shape[0])
    out_s = np.empty((len(queries), k), dtype=np.float32)
    out_i = np.empty((len(queries), k), dtype=np.int64)
    for r, row in enumerate(scores):
        order = np.argsort(-row, kind="stable")[:k]
        out_s[r], out_i[r] = row[order], order
    return out_s, out_i


def thumbnail_data_uri(item: EvalItem, size: int = 112) -> str:
    try:
        img = load_rgb(item).copy()
        img.thumbnail((size, size))
        return jpeg_data_uri(img, quality=80)
    except Exception:  # noqa: BLE001 - the report shows a blank for an image that no longer reads
        return ""


def _pick(n: int, count: int) -> list[int]:
    return sorted({int(x) for x in np.linspace(0, n - 1, num=min(count, n)).round()}) if n else []


def write_report(path: Path, metrics: dict, image_emb: np.ndarray, text_emb: np.ndarray, text_to_image: np.ndarray,
                 items: Sequence[EvalItem], n_queries: int = 10, top: int = 5) -> None:
    """Self-contained HTML: ~n text queries with their top images, ~n image queries with their top captions,
    hits marked. Thumbnails are inlined as base64 JPEGs."""
    texts = [c for it in items for c in it.captions]
    thumbs: dict[int, str] = {}

    def thumb(i: int) -> str:
        if i not in thumbs:
            thumbs[i] = thumbnail_data_uri(items[i])
        uri = thumbs[i]
        return f'<img src="{uri}" alt="">' if uri else '<div class="noimg">?</div>'

    esc = kit_esc
    weights = metrics.get("model_source") or metrics.get("checkpoint") or "random init"

    def rank_of(row: np.ndarray, positives: np.ndarray) -> str:
        """1-based rank of the best positive; "a-b (tied)" when other items share its score (which of them a
        top k keeps is torch.topk's choice, see the module doc). The listings below order ties by index."""
        p = max(positives.tolist(), key=lambda q: row[q])
        first, tied = 1 + int(np.sum(row > row[p])), int(np.sum(row == row[p]))
        return f"{first}" if tied == 1 else f"{first}-{first + tied - 1} (tied)"

    rows = ["<tr>" + "".join(f"<th>{esc(k)}</th>" for k in metrics if "R@" in k or k == "mean_recall") + "</tr>",
            "<tr>" + "".join(f"<td>{metrics[k]:.2f}</td>" for k in metrics if "R@" in k or k == "mean_recall") + "</tr>"]
    parts = [
        f"<p>model <b>{esc(str(metrics.get('model')))}</b>, weights "
        f"<b class='source'>{esc(weights)}</b>; {metrics['n_images']} images, {metrics['n_texts']} texts; "
        f"eval set {esc(str(metrics.get('eval_set', {}).get('source')))}</p>",
        "<table>" + "".join(rows) + "</table>",
        f"<h2>Text &rarr; image (top {top}; green = the caption's image)</h2><table>",
    ]
    tq = _pick(len(texts), n_queries)
    if tq:
        scores, ids = _topk_small(text_emb[tq], image_emb, top)
        for r, j in enumerate(tq):
            cells = []
            for rank, (s, i) in enumerate(zip(scores[r], ids[r])):
                hit = int(i) == int(text_to_image[j])
                cells.append(f'<div class="cell"><div class="{"hit" if hit else "miss"}">{thumb(int(i))}</div>'
                             f"#{rank + 1} {s:.3f}{' &#10003;' if hit else ''}<br>{esc(items[int(i)].key)}</div>")
            rank = rank_of(image_emb @ text_emb[j], np.asarray([text_to_image[j]]))
            parts.append(f"<tr><td style='max-width:260px'>{esc(texts[j])}<br><small>image: "
                         f"{esc(items[int(text_to_image[j])].key)} (rank {rank})</small></td><td>{''.join(cells)}</td></tr>")
    parts.append(f"</table><h2>Image &rarr; text (top {top}; green = one of the image's captions)</h2><table>")
    iq = _pick(len(items), n_queries)
    if iq and len(texts):
        scores, ids = _topk_small(image_emb[iq], text_emb, top)
        for r, i in enumerate(iq):
            caps = []
            for rank, (s, j) in enumerate(zip(scores[r], ids[r])):
                hit = int(text_to_image[int(j)]) == i
                caps.append(f'<div class="cap{" hit" if hit else ""}">#{rank + 1} {s:.3f} '
                            f"{'&#10003; ' if hit else ''}{esc(texts[int(j)])}</div>")
            own = np.flatnonzero(text_to_image == i)
            rank = f"best caption at rank {rank_of(text_emb @ image_emb[i], own)}" if len(own) else "no captions"
            parts.append(f"<tr><td class='cell'>{thumb(i)}<br>{esc(items[i].key)}<br><small>{rank}</small></td>"
                         f"<td>{''.join(caps)}</td></tr>")
    parts.append("</table>")
    path.write_text(html_page("Retrieval report", ["\n".join(parts)], extra_css=CSS), encoding="utf-8")
