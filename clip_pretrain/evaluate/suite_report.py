"""The evaluation suite's one table: ``suite.md`` (a GitHub table) and ``suite.html`` (report-kit page), written
atomically by :func:`write_suite_report` from the driver's ``suite`` and ``meta`` dicts (the shapes of
``suite.json``).

``suite = {task: {dataset: metrics}}`` with task in :data:`~clip_pretrain.evaluate.paper_numbers.TASKS`;
zeroshot / linear_probe / knn / counting metrics hold ``top1`` (percent), retrieval ``mean_recall`` (and the six
R@k), few_shot one entry per shot count (``{"16-shot": {"top1": mean, "top1_std": std, "seeds": 5}, ...}``).
``meta`` names the model, checkpoint, model_source, suite file, datasets (``name``, ``tasks``, ``status`` "ran" or
"skipped", ``reason``), settings, seconds and created time; an optional ``trained_on`` (dataset names whose train
split the model saw) marks the cells that are then not zero-shot / in-domain.

One row per dataset that ran (in ``meta["datasets"]`` order), one column per task that ran; a cell is our main
metric with the paper's number beside it where RemoteCLIP reports one (``70.12 (paper 70.33)``; in the HTML also a
signed delta), few-shot the largest shot count (all shot counts in a second table). An average row for zeroshot,
linear_probe and knn says how many sets each side averages (the paper: 12), since averages over different sets do
not compare. GeoRSCLIP, a different model, appears in a small table of its own.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from clip_pretrain.evaluate.paper_numbers import (
    MAIN_REFERENCE,
    NOT_RECORDED,
    TASK_METRIC,
    TASKS,
    PaperNumber,
    canonical_dataset,
    canonical_model,
    has_paper_numbers,
    paper_average,
    paper_number,
    tasks_with_numbers,
)
from rs_common import report_kit as kit
from rs_common.files import atomic_write_text

MD_NAME, HTML_NAME = "suite.md", "suite.html"
AVERAGED_TASKS: tuple[str, ...] = ("zeroshot", "linear_probe", "knn")
SECOND_REFERENCE = "GeoRSCLIP"
DASH = "—"
CSS = (".paper{color:#555}.delta{font-size:11px;padding:0 4px;margin-left:4px;border-radius:3px;white-space:nowrap}"
       ".delta.up{background:#d9f0d3;color:#1a6b1a}.delta.down{background:#fde0dd;color:#a50f15}"
       ".delta.same{background:#eee;color:#555}.flag{color:#a05a00;font-size:11px}td{white-space:nowrap}")
# what a cell says when meta["trained_on"] names its dataset (probes train on the train split anyway)
TRAINED_ON_FLAGS = {"zeroshot": "not zero-shot: trained on its train split",
                    "counting": "not zero-shot: trained on its train split",
                    "retrieval": "in-domain: trained on its train split"}
COMPARABLE_NOTES = (
    "RemoteCLIP's retrieval numbers (RSITMD, RSICD, UCM) are in-domain: it trained on the RET-3 train splits of "
    "exactly these sets. A model that did not train on them is not compared like for like.",
    "RemoteCLIP's zero-shot sets were never trained on. A model that trained on a set's train split is not "
    "zero-shot there.",
    "Averages compare only over the same sets: the paper's zero-shot average is over 12 sets (which ones is not "
    "recorded in REFERENCE.md).",
)


@dataclass
class Cell:
    """One table cell: our number (with std and a label such as "16-shot"), the paper's, and a flag."""

    ours: float | None
    std: float | None = None
    label: str = ""
    paper: PaperNumber | None = None
    flag: str = ""
    n_sets: int | None = None  # for an average: how many of our sets it is taken over


# ---------------------------------------------------------------- reading the dicts


def number(value) -> float | None:
    """``value`` as a finite float, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def fmt(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}"


def shot_entries(metrics) -> list[tuple[int, str, dict]]:
    """The few-shot entries ``(shots, key, entry)`` sorted by shot count; keys like ``"16-shot"``."""
    found = []
    for key, entry in (metrics or {}).items() if isinstance(metrics, dict) else ():
        m = re.match(r"^\s*(\d+)", str(key))
        if m and isinstance(entry, dict):
            found.append((int(m.group(1)), str(key), entry))
    return sorted(found, key=lambda t: t[0])


def main_cell(task: str, metrics) -> Cell:
    """Our main metric of ``task`` (top1 / mean_recall; few_shot: the largest shot count, mean and std)."""
    if task == "few_shot":
        shots = shot_entries(metrics)
        if not shots:
            return Cell(None)
        _, key, entry = shots[-1]
        return Cell(number(entry.get("top1")), number(entry.get("top1_std")), key)
    if not isinstance(metrics, dict):
        return Cell(None)
    return Cell(number(metrics.get(TASK_METRIC.get(task, "top1"), metrics.get("top1"))))


def ran_tasks(suite: dict) -> list[str]:
    """The tasks in ``suite``: the known ones in :data:`TASKS` order, then any others."""
    return [t for t in TASKS if t in suite] + [t for t in suite if t not in TASKS]


def ran_datasets(suite: dict, meta: dict) -> list[str]:
    """Datasets that ran, in ``meta["datasets"]`` order, then any in ``suite`` that meta does not list."""
    names: list[str] = []
    for entry in meta.get("datasets") or []:
        name = str(entry.get("name"))
        if entry.get("status", "ran") == "ran" and name not in names:
            names.append(name)
    for per_dataset in suite.values():
        for name in per_dataset or {}:
            if str(name) not in names:
                names.append(str(name))
    return names


def safe_paper(task: str, dataset: str, model: str, reference: str = MAIN_REFERENCE) -> PaperNumber | None:
    return paper_number(task, dataset, model, reference) if task in TASKS else None


def build_rows(suite: dict, meta: dict, reference: str = MAIN_REFERENCE) -> list[tuple[str, dict[str, Cell]]]:
    """``[(dataset, {task: Cell})]`` for the datasets that ran; a task the dataset did not run has no cell."""
    model = str(meta.get("model", ""))
    trained = {canonical_dataset(n) for n in meta.get("trained_on") or []}
    rows = []
    for name in ran_datasets(suite, meta):
        cells = {}
        for task in ran_tasks(suite):
            per = suite.get(task) or {}
            if name not in per:
                continue
            cell = main_cell(task, per[name])
            cell.paper = safe_paper(task, name, model, reference)
            if canonical_dataset(name) in trained:
                cell.flag = TRAINED_ON_FLAGS.get(task, "")
            cells[task] = cell
        rows.append((name, cells))
    return rows


def build_averages(rows: list[tuple[str, dict[str, Cell]]], tasks: list[str], model: str) -> dict[str, Cell]:
    """Our mean over the sets with a number, per averaged task, with the paper's average (if any) beside it."""
    out = {}
    for task in tasks:
        if task not in AVERAGED_TASKS:
            continue
        values = [c.ours for _, cells in rows if (c := cells.get(task)) is not None and c.ours is not None]
        mean = sum(values) / len(values) if values else None
        cell = Cell(mean, paper=paper_average(task, model), n_sets=len(values))
        if cell.paper is None and has_paper_numbers(model) and task in NOT_RECORDED:
            cell.flag = "paper average not recorded"
        out[task] = cell
    return out


def sets_text(n: int) -> str:
    return f"({n} set{'' if n == 1 else 's'})"


def column_names(tasks: list[str]) -> list[str]:
    """``"zeroshot (top1)"``, ``"retrieval (mean_recall)"``..."""
    return [f"{t} ({TASK_METRIC.get(t, 'top1')})" for t in tasks]


def average_comparison(cell: Cell) -> str:
    """How far the average compares with the paper's (plain text)."""
    if cell.paper is None or cell.paper.n_datasets is None:
        return ""
    if cell.n_sets == cell.paper.n_datasets:
        return f"comparable only if these are the paper's {cell.paper.n_datasets} sets"
    return f"not comparable: paper {cell.paper.n_datasets} sets, ours {cell.n_sets}"


def reference_status(model: str, tasks: list[str]) -> list[str]:
    """Plain-text lines: which paper numbers exist for ``model`` and which tasks have none recorded."""
    if not has_paper_numbers(model):
        return [f"no paper numbers for {model or 'an unnamed model'} (REFERENCE.md records RemoteCLIP ViT-B-32 and ViT-L-14 only)"]
    have = tasks_with_numbers(model)
    lines = [f"paper numbers ({MAIN_REFERENCE} {canonical_model(model)}) for: {', '.join(have) or 'nothing'}"]
    for task in tasks:
        if task not in have and task in NOT_RECORDED:
            lines.append(f"paper {task} numbers: {NOT_RECORDED[task]}")
    return lines


def skipped(meta: dict) -> list[tuple[str, str, str, str]]:
    """``(name, status, tasks, reason)`` of every dataset that did not run."""
    out = []
    for entry in meta.get("datasets") or []:
        status = str(entry.get("status", "ran"))
        if status != "ran":
            tasks = ", ".join(str(t) for t in entry.get("tasks") or [])
            out.append((str(entry.get("name")), status, tasks, str(entry.get("reason") or "no reason given")))
    return out


def second_reference_rows(rows, model: str) -> list[tuple[str, str, Cell, PaperNumber]]:
    """``(dataset, task, our cell, GeoRSCLIP number)`` where the second reference has a number."""
    out = []
    for name, cells in rows:
        for task, cell in cells.items():
            other = safe_paper(task, name, model, SECOND_REFERENCE)
            if other is not None:
                out.append((name, task, cell, other))
    return out


def few_shot_table(suite: dict, names: list[str]) -> tuple[list[int], list[tuple[str, dict[int, dict]]]]:
    """Shot counts (sorted) and ``[(dataset, {shots: entry})]`` for the few-shot details table."""
    per = suite.get("few_shot") or {}
    rows, counts = [], set()
    for name in names:
        if name in per:
            found = {n: entry for n, _, entry in shot_entries(per[name])}
            counts |= set(found)
            rows.append((name, found))
    return sorted(counts), rows


def shot_text(entry: dict | None) -> str:
    if entry is None:
        return DASH
    mean, std = number(entry.get("top1")), number(entry.get("top1_std"))
    text = fmt(mean) + (f" ± {std:.2f}" if std is not None and mean is not None else "")
    seeds = entry.get("seeds")
    return text + (f" ({seeds} seeds)" if isinstance(seeds, int) and not isinstance(seeds, bool) else "")


# ---------------------------------------------------------------- markdown


def md_text(value) -> str:
    """Plain text safe inside a GitHub table cell or list item (no pipes, tags or line breaks)."""
    text = " ".join(str(value).split())
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def our_value(cell: Cell, escape) -> str:
    """Our number of a cell, with its spread, label and set count (``escape``: the target format's escaping)."""
    text = escape(fmt(cell.ours))
    if cell.std is not None and cell.ours is not None:
        text += f" ± {cell.std:.2f}"
    if cell.label:
        text += f" ({escape(cell.label)})"
    if cell.n_sets is not None:
        text += f" {sets_text(cell.n_sets)}"
    return text


def md_cell(cell: Cell | None) -> str:
    if cell is None:
        return DASH
    text = our_value(cell, md_text)
    if cell.paper is not None:
        sets = f", {cell.paper.n_datasets} sets" if cell.paper.n_datasets is not None else ""
        text += f" (paper {cell.paper.value:.2f}{sets})"
        note = average_comparison(cell)
        text += f" [{note}]" if note else ""
    if cell.flag:
        text += f" [{md_text(cell.flag)}]"
    return text


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(md_text(h) for h in header) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def md_header(meta: dict) -> list[str]:
    model = md_text(meta.get("model", "?"))
    lines = [f"# Evaluation suite: {model}", ""]
    for key in ("model", "checkpoint", "model_source", "created", "suite"):
        lines.append(f"- {key}: {md_text(meta.get(key) or DASH)}")
    return lines + [""]


def md_json_blocks(meta: dict) -> list[str]:
    """``settings`` and ``seconds`` as fenced JSON blocks (the fence longer than any backtick run inside)."""
    lines = []
    for key in ("settings", "seconds"):
        if meta.get(key):
            text = json.dumps(meta[key], indent=2, ensure_ascii=False, default=str)
            fence = "`" * max(3, 1 + max((len(r) for r in re.findall(r"`+", text)), default=0))
            lines += ["", f"## {key.capitalize()}", "", fence + "json", text, fence]
    return lines


def render_markdown(suite: dict, meta: dict) -> str:
    model = str(meta.get("model", ""))
    tasks = ran_tasks(suite)
    rows = build_rows(suite, meta)
    averages = build_averages(rows, tasks, model)
    lines = md_header(meta) + ["## Results", ""]
    lines += [f"- {md_text(line)}" for line in reference_status(model, tasks)] + [""]
    body = [[md_text(name)] + [md_cell(cells.get(t)) for t in tasks] for name, cells in rows]
    if averages:
        body.append(["**average**"] + [md_cell(averages[t]) if t in averages else "" for t in tasks])
    lines += md_table(["dataset"] + column_names(tasks), body) + [""]
    counts, shots = few_shot_table(suite, [name for name, _ in rows])
    if shots:
        lines += ["## Few-shot (top-1, mean ± std over seeds)", ""]
        lines += md_table(["dataset"] + [f"{n}-shot" for n in counts],
                          [[md_text(name)] + [shot_text(found.get(n)) for n in counts] for name, found in shots])
        lines.append("")
    others = second_reference_rows(rows, model)
    if others:
        lines += [f"## Later anchor: {SECOND_REFERENCE} {canonical_model(model)} (a different model, RS5M)", ""]
        lines += md_table(["dataset", "task", "ours", SECOND_REFERENCE],
                          [[md_text(n), t, fmt(c.ours), f"{p.value:.2f}"] for n, t, c, p in others])
        lines.append("")
    lines += ["## Skipped datasets", ""]
    gone = skipped(meta)
    lines += [f"- {md_text(n)} ({md_text(s)}; tasks: {md_text(t) or DASH}): {md_text(r)}" for n, s, t, r in gone]
    lines += ([] if gone else ["- none"]) + ["", "## What is comparable", ""]
    lines += [f"- {note}" for note in COMPARABLE_NOTES] + md_json_blocks(meta)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- HTML


def delta_html(ours: float | None, paper: PaperNumber | None) -> str:
    """A signed ours-minus-paper marker (on the 2-decimal numbers shown)."""
    if ours is None or paper is None:
        return ""
    delta = round(round(ours, 2) - paper.value, 2)
    cls = "up" if delta > 0 else "down" if delta < 0 else "same"
    return f' <span class="delta {cls}" title="ours minus paper">{delta:+.2f}</span>'


def html_cell(cell: Cell | None) -> str:
    if cell is None:
        return DASH
    text = our_value(cell, kit.esc)
    if cell.paper is not None:
        p = cell.paper
        sets = f", {p.n_datasets} sets" if p.n_datasets is not None else ""
        title = kit.esc(f"{p.source}; {p.note}" if p.note else p.source)
        text += f' <span class="paper" title="{title}">(paper {p.value:.2f}{sets})</span>'
        text += delta_html(cell.ours, p)
        note = average_comparison(cell)
        text += f'<br><span class="flag">{kit.esc(note)}</span>' if note else ""
    if cell.flag:
        text += f'<br><span class="flag">{kit.esc(cell.flag)}</span>'
    return text


def html_table(header: list[str], rows: list[tuple[str, list[str]]]) -> str:
    """Rows of ``(css class, [ready cells])``; the first cell of each row is a name."""
    head = '<th class="name">' + kit.esc(header[0]) + "</th>" + "".join(f"<th>{kit.esc(h)}</th>" for h in header[1:])
    body = []
    for cls, cells in rows:
        attr = f' class="{cls}"' if cls else ""
        body.append(f'<tr{attr}><td class="name">{cells[0]}</td>' + "".join(f"<td>{c}</td>" for c in cells[1:])
                    + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def html_results(suite: dict, meta: dict) -> list[str]:
    model = str(meta.get("model", ""))
    tasks = ran_tasks(suite)
    rows = build_rows(suite, meta)
    averages = build_averages(rows, tasks, model)
    body = [("", [kit.esc(name)] + [html_cell(cells.get(t)) for t in tasks]) for name, cells in rows]
    if averages:
        body.append(("total", ["average"] + [html_cell(averages[t]) if t in averages else "" for t in tasks]))
    status = "".join(f"<li>{kit.esc(line)}</li>" for line in reference_status(model, tasks))
    out = [kit.section("Results", f"<ul>{status}</ul>", html_table(["dataset"] + column_names(tasks), body),
                       note="ours, with the paper's number beside it and ours minus paper")]
    counts, shots = few_shot_table(suite, [name for name, _ in rows])
    if shots:
        table = html_table(["dataset"] + [f"{n}-shot" for n in counts],
                           [("", [kit.esc(name)] + [kit.esc(shot_text(found.get(n))) for n in counts])
                            for name, found in shots])
        out.append(kit.section("Few-shot", table, note="top-1, mean ± std over seeds"))
    others = second_reference_rows(rows, model)
    if others:
        table = html_table(["dataset", "task", "ours", SECOND_REFERENCE],
                           [("", [kit.esc(n), kit.esc(t), fmt(c.ours), f"{p.value:.2f}{delta_html(c.ours, p)}"])
                            for n, t, c, p in others])
        out.append(kit.section(f"Later anchor: {SECOND_REFERENCE} {canonical_model(model)}", table,
                               note="a different model (trained on RS5M), shown for orientation only"))
    return out


def render_html(suite: dict, meta: dict) -> str:
    head = [(key, str(meta.get(key) or DASH)) for key in ("model", "checkpoint", "model_source", "created", "suite")]
    sections = [kit.kv_table(head)] + html_results(suite, meta)
    gone = skipped(meta)
    items = "".join(f"<li><b>{kit.esc(n)}</b> ({kit.esc(s)}; tasks: {kit.esc(t) or DASH}): {kit.esc(r)}</li>"
                    for n, s, t, r in gone)
    sections.append(kit.section("Skipped datasets", f"<ul>{items}</ul>" if gone else "<p>none</p>"))
    notes = "".join(f"<li>{kit.esc(note)}</li>" for note in COMPARABLE_NOTES)
    sections.append(kit.section("What is comparable", f"<ul>{notes}</ul>"))
    for key in ("settings", "seconds"):
        if meta.get(key):
            text = json.dumps(meta[key], indent=2, ensure_ascii=False, default=str)
            sections.append(kit.section(key.capitalize(), f"<pre>{kit.esc(text)}</pre>"))
    return kit.html_page(f"Evaluation suite: {meta.get('model', '?')}", sections, extra_css=CSS)


def write_suite_report(out_dir: Path, suite: dict, meta: dict) -> dict[str, Path]:
    """Write ``suite.md`` and ``suite.html`` into ``out_dir`` (created if needed), each atomically; returns
    ``{"md": path, "html": path}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / MD_NAME, "html": out_dir / HTML_NAME}
    atomic_write_text(paths["md"], render_markdown(suite, meta))
    atomic_write_text(paths["html"], render_html(suite, meta))
    return paths
