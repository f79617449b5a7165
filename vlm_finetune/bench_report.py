"""GeoChat-Bench tables: our numbers beside GeoChat's published ones (markdown ``table.md`` + ``report.html``).

GeoChat's numbers are only those ``../shared/REFERENCE.md`` records (paper: scene classification UCM 84.43, AID
72.03; RSVQA-LR average 90.70, RSVQA-HR average 72.30; referring/grounding acc@0.5 overall 10.6; region captioning
ROUGE-1 87.3); every other cell of that column is a dash.
"""

from __future__ import annotations

from pathlib import Path

from rs_common.files import atomic_write_text

BENCH_NAMES = {"UCmerced": "UCM scene classification", "aid": "AID scene classification", "lrben": "RSVQA-LR",
               "hrben": "RSVQA-HR", "referring": "Referring / grounding",
               "grounding_description": "Grounding description", "region_captioning": "Region captioning"}
PAPER = {("UCmerced", "accuracy"): 84.43, ("aid", "accuracy"): 72.03, ("lrben", "average"): 90.70,
         ("hrben", "average"): 72.30, ("referring", "acc@0.5 overall"): 10.6, ("region_captioning", "ROUGE-1"): 87.3}
HEADER = ["benchmark", "file", "metric", "ours", "GeoChat (paper)", "n"]


def table_rows(results: dict) -> list[list]:
    """``[benchmark, file, metric, ours, paper, n]`` per figure, in the paper's order."""
    rows = []
    for stem, m in results.items():
        name = BENCH_NAMES.get(stem, stem)
        figures: list[tuple[str, float | None, int]] = []
        if isinstance(m.get("accuracy"), dict):  # RSVQA: per type, then the average
            n_by = m.get("n_by_type", {})
            figures = [(t, v, n_by.get(t, 0)) for t, v in m["accuracy"].items() if t != "average"]
            figures.append(("average", m["accuracy"]["average"], sum(n_by.get(t, 0) for t in m.get("average_over", []))))
        elif "accuracy" in m:
            figures = [("accuracy", m["accuracy"], m["n"])]
        elif "rouge1" in m:
            figures = [("ROUGE-1", m["rouge1"], m["n"]), ("ROUGE-L", m["rougeL"], m["n"]), ("METEOR", m["meteor"], m["n"])]
        else:
            key = next((k for k in m if k.startswith("acc@")), None)
            if key:
                figures = [(f"{key} {split}", v, m["n_by_split"].get(split, 0)) for split, v in m[key].items()]
        rows += [[name, stem, metric, value, PAPER.get((stem, metric)), n] for metric, value, n in figures]
    return rows


def _cell(value) -> str:
    return "—" if value is None else (f"{value:.2f}" if isinstance(value, float) else str(value))


def markdown_table(results: dict) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in table_rows(results)]
    return "\n".join(lines) + "\n"


def write_tables(out_dir: Path, results: dict, skipped: list[str] | None = None) -> None:
    """``table.md`` and ``report.html`` (built with :mod:`rs_common.report_kit`) in ``out_dir``."""
    from rs_common import report_kit as kit

    note = "Percent. GeoChat (paper): only the figures ../shared/REFERENCE.md records; the rules behind each " \
           "number are in vlm_finetune/bench_metrics.py."
    atomic_write_text(out_dir / "table.md", "# GeoChat-Bench\n\n" + note + "\n\n" + markdown_table(results))
    cells = [[kit.esc(_cell(v)) for v in row] for row in table_rows(results)]
    parts = [kit.section("Ours beside GeoChat", kit.table(HEADER, cells), note=note)]
    counts = [(f"{stem}: {k}", m[k]) for stem, m in results.items() for k in ("n_lines", "n_records", "n_malformed",
                                                                              "n_no_answer") if k in m]
    parts.append(kit.section("Counts", kit.kv_table(counts)))
    if skipped:
        parts.append(kit.section("Skipped", "<ul>" + "".join(f"<li>{kit.esc(s)}</li>" for s in skipped) + "</ul>"))
    atomic_write_text(out_dir / "report.html", kit.html_page("GeoChat-Bench", parts))
