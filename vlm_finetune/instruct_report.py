"""instruct_report.html: what launch/build_instruct.py wrote, for a person to check (boxes drawn on their images)."""

from __future__ import annotations

from pathlib import Path

from rs_common.files import atomic_write_text
from vlm_finetune.instruct_turns import turn_summary


def write_instruct_report(records: list[dict], image_root: Path, path: Path, per_task: int = 3) -> Path:
    """A self-contained HTML page: for each task (``multi`` for the multi-turn conversations) a few records, the image
    with every box of the conversation drawn (question boxes blue, answer boxes red) and the turns as text, so a
    person can check the boxes land; the head counts records, rounds and rounds per task."""
    from rs_common import report_kit as kit
    from vlm_finetune.boxes import parse_boxes
    from vlm_finetune.report import draw_grid_boxes, thumbnail

    by_task: dict[str, list[dict]] = {}
    for rec in records:
        by_task.setdefault(rec.get("task", "?"), []).append(rec)
    cards = []
    for task, recs in sorted(by_task.items()):
        for rec in recs[:per_task]:
            img = thumbnail(image_root / rec["image"], 320)
            turns = rec["conversations"]
            for who, colour in (("human", (40, 90, 230)), ("gpt", (230, 30, 30))):
                draw_grid_boxes(img, parse_boxes(" ".join(t["value"] for t in turns if t["from"] == who)).boxes, colour)
            text = "".join(f"<p><b>{kit.esc(t['from'])}:</b> {kit.esc(t['value'])}</p>" for t in turns)
            rounds = f" ({len(turns) // 2} rounds: {', '.join(rec.get('tasks', []))})" if len(turns) > 2 else ""
            cards.append(kit.card(kit.img_tag(img, quality=82),
                                  f"<div><b>{kit.esc(task)}</b> - {kit.esc(rec.get('id', ''))}{kit.esc(rounds)}</div>",
                                  text))
    summary = turn_summary(records)
    turns = summary["turns"]
    counts = ", ".join(f"{kit.esc(t)} {len(r)}" for t, r in sorted(by_task.items()))
    rounds = ", ".join(f"{kit.esc(t)} {n}" for t, n in sorted(summary["tasks"].items()))
    by_rounds = ", ".join(f"{n} round{'s' if n != '1' else ''}: {c}" for n, c in turns["records_by_rounds"].items())
    intro = (f"<p>{len(records)} records: {counts}. {turns['single_turn']} single-turn, {turns['multi_turn']} "
             f"multi-turn ({by_rounds}); {turns['rounds']} question/answer rounds in all, by task: {rounds}. "
             "Boxes from the questions in blue, from the answers in red (0-100 grid, see vlm_finetune/boxes.py).</p>")
    atomic_write_text(path, kit.html_page("GeoChat instruction data", [intro, kit.grid(cards)]))
    return path
