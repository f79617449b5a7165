"""The suite's table (``suite.md``, ``suite.html``) and the paper's reference numbers it quotes."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from clip_pretrain.evaluate.paper_numbers import (
    PAPER_NUMBERS,
    canonical_dataset,
    canonical_model,
    paper_average,
    paper_number,
)
from clip_pretrain.evaluate.suite_report import write_suite_report


def make_suite() -> dict:
    return {
        "zeroshot": {"EuroSAT": {"top1": 40.123, "n_test": 5400}, "AID": {"top1": 90.0, "n_test": 2000},
                     "my-scenes": {"top1": 50.0}},
        "knn": {"EuroSAT": {"top1": 80.0, "k": 20}, "my-scenes": {"top1": 60.0, "k": 20}},
        "few_shot": {"EuroSAT": {"1-shot": {"top1": 30.0, "top1_std": 2.5, "seeds": 5},
                                 "16-shot": {"top1": 71.5, "top1_std": 1.25, "seeds": 5},
                                 "2-shot": {"top1": 40.0, "top1_std": 2.0, "seeds": 5}}},
        "retrieval": {"RSITMD": {"i2t_R@1": 10.0, "i2t_R@5": 30.0, "i2t_R@10": 40.0, "t2i_R@1": 8.0,
                                 "t2i_R@5": 28.0, "t2i_R@10": 38.0, "mean_recall": 25.6667}},
    }


def make_meta(model: str = "ViT-B-32") -> dict:
    return {
        "model": model, "checkpoint": "/ck/remoteclip-b32.pt", "model_source": "/ck/remoteclip-b32.pt",
        "suite": "/suites/rs.yaml", "created": "2025-01-02T03:04:05+00:00",
        "datasets": [
            {"name": "EuroSAT", "tasks": ["zeroshot", "knn", "few_shot"], "status": "ran"},
            {"name": "AID", "tasks": ["zeroshot"], "status": "ran"},
            {"name": "RSITMD", "tasks": ["retrieval"], "status": "ran"},
            {"name": "my-scenes", "tasks": ["zeroshot", "knn"], "status": "ran"},
            {"name": "RESISC45", "tasks": ["zeroshot"], "status": "skipped", "reason": "folder not found: /data/r45"},
        ],
        "settings": {"batch_size": 64, "shots": [1, 2, 16]}, "seconds": {"EuroSAT": 12.5},
    }


class TextOf(HTMLParser):
    """The page's text (and whether it parsed), scripts counted."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.parts.append(data)

    @property
    def text(self) -> str:
        return " ".join("".join(self.parts).split())


def page_text(path: Path) -> TextOf:
    parser = TextOf()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def md_row(md: str, first_cell: str) -> str:
    """The first table row whose first cell is ``first_cell`` (the main table comes first)."""
    rows = [line for line in md.splitlines() if line.startswith(f"| {first_cell} |")]
    assert rows, (first_cell, md)
    return rows[0]


def test_markdown_rows_paper_numbers_and_averages(tmp_path):
    paths = write_suite_report(tmp_path / "out", make_suite(), make_meta())
    assert paths == {"md": tmp_path / "out" / "suite.md", "html": tmp_path / "out" / "suite.html"}
    md = paths["md"].read_text(encoding="utf-8")
    assert not list((tmp_path / "out").glob("*.tmp"))
    for text in ("ViT-B-32", "/ck/remoteclip-b32.pt", "2025-01-02T03:04:05+00:00", "/suites/rs.yaml"):
        assert text in md
    header = md_row(md, "dataset")
    assert header.split(" | ")[1:] == ["zeroshot (top1)", "knn (top1)", "few_shot (top1)", "retrieval (mean_recall) |"]
    assert header.count("|") == md_row(md, "EuroSAT").count("|") == md_row(md, "**average**").count("|")
    euro = md_row(md, "EuroSAT").split(" | ")
    assert euro[1] == "40.12 (paper 35.96)"
    assert euro[2] == "80.00"  # no paper k-NN number recorded
    assert euro[3] == "71.50 ± 1.25 (16-shot)"  # the largest shot count, not the last key
    assert euro[4] == "— |"
    assert "90.00 (paper 91.30)" in md_row(md, "AID")
    assert "25.67 (paper 49.38)" in md_row(md, "RSITMD")
    assert md_row(md, "my-scenes").split(" | ")[1] == "50.00"  # no paper number for a set of our own
    avg = md_row(md, "**average**").split(" | ")
    assert avg[1].startswith("60.04 (3 sets) (paper 62.41, 12 sets)") and "not comparable" in avg[1]
    assert avg[2].startswith("70.00 (2 sets)") and "not recorded" in avg[2]
    assert "RESISC45" not in md_row(md, "EuroSAT") and "| RESISC45 |" not in md
    assert "- RESISC45 (skipped; tasks: zeroshot): folder not found: /data/r45" in md
    assert "linear_probe" not in header  # only the tasks that ran
    # the per-shot table, sorted by shot count
    assert "| EuroSAT | 30.00 ± 2.50 (5 seeds) | 40.00 ± 2.00 (5 seeds) | 71.50 ± 1.25 (5 seeds) |" in md
    assert "in-domain" in md and "not zero-shot" in md
    assert "| EuroSAT | zeroshot | 40.12 | 61.40 |" in md  # GeoRSCLIP, the second anchor, in its own table


def test_html_parses_and_holds_the_numbers(tmp_path):
    paths = write_suite_report(tmp_path, make_suite(), make_meta())
    page = page_text(paths["html"])
    text = page.text
    for snippet in ("40.12 (paper 35.96)", "+4.16", "25.67 (paper 49.38)", "-23.71", "90.00 (paper 91.30)", "-1.30",
                    "60.04 (3 sets) (paper 62.41, 12 sets)", "71.50 ± 1.25 (16-shot)",
                    "folder not found: /data/r45", "/ck/remoteclip-b32.pt", "in-domain"):
        assert snippet in text, snippet
    raw = paths["html"].read_text(encoding="utf-8")
    assert 'class="delta up"' in raw and 'class="delta down"' in raw
    assert "script" not in page.tags


def test_model_without_paper_numbers(tmp_path):
    paths = write_suite_report(tmp_path, make_suite(), make_meta("rs-tiny"))
    md = paths["md"].read_text(encoding="utf-8")
    assert "no paper numbers for rs-tiny" in md
    assert "(paper" not in md and "GeoRSCLIP |" not in md
    assert md_row(md, "EuroSAT").split(" | ")[1] == "40.12"
    assert md_row(md, "**average**").split(" | ")[1] == "60.04 (3 sets)"
    assert "no paper numbers for rs-tiny" in page_text(paths["html"]).text
    rn50 = write_suite_report(tmp_path / "rn50", make_suite(), make_meta("RN50"))["md"].read_text(encoding="utf-8")
    assert "no paper numbers for RN50" in rn50


def test_hostile_dataset_name_is_escaped(tmp_path):
    name = '<script>alert("x")</script>|a'
    suite = {"zeroshot": {name: {"top1": 12.0}}}
    meta = {**make_meta(), "datasets": [{"name": name, "tasks": ["zeroshot"], "status": "ran"},
                                        {"name": "<img src=x onerror=1>", "status": "failed", "reason": "<b>bad</b>"}]}
    paths = write_suite_report(tmp_path, suite, meta)
    raw = paths["html"].read_text(encoding="utf-8")
    assert "<script>" not in raw and "<img" not in raw and "<b>bad" not in raw
    page = page_text(paths["html"])
    assert "script" not in page.tags and "img" not in page.tags
    assert '<script>alert("x")</script>|a' in page.text
    md = paths["md"].read_text(encoding="utf-8")
    assert "<script>" not in md and "&lt;script&gt;" in md
    row = md_row(md, '&lt;script&gt;alert("x")&lt;/script&gt;\\|a')
    assert row.count(" | ") == md_row(md, "dataset").count(" | ")  # the pipe does not add a column


def test_missing_and_odd_values(tmp_path):
    suite = {"zeroshot": {"EuroSAT": {"top1": float("nan")}}, "counting": {"DOTA-count": {"top1": 33.333}},
             "linear_probe": {"EuroSAT": {"top1": 91.0}}}
    meta = {"model": "ViT-L/14", "datasets": [{"name": "EuroSAT", "status": "ran"}]}
    md = write_suite_report(tmp_path, suite, meta)["md"].read_text(encoding="utf-8")
    euro = md_row(md, "EuroSAT").split(" | ")
    assert euro[1] == "— (paper 59.94)"  # ViT-L/14 is open_clip's ViT-L-14
    assert euro[2] == "91.00"
    assert "33.33" in md_row(md, "DOTA-count")  # a dataset in suite but not in meta still shows
    assert "paper linear_probe numbers: not recorded in REFERENCE.md" in md
    assert "paper counting numbers: none known" in md


def test_paper_numbers_lookup_and_aliases():
    n = paper_number("zeroshot", "EuroSAT", "ViT-B-32")
    assert (n.value, n.metric, n.source) == (35.96, "top1", "RemoteCLIP Table III")
    r = paper_number("retrieval", "RSITMD", "ViT-B-32")
    assert (r.value, r.metric, r.source) == (49.38, "mean_recall", "RemoteCLIP Table II") and "in-domain" in r.note
    for name in ("NWPU-RESISC45", "RESISC45", "resisc-45", "resisc_45"):
        assert canonical_dataset(name) == "resisc45"
        assert paper_number("zeroshot", name, "ViT-L-14").value == 79.84
    for name in ("UCMerced", "UCM", "UC-Merced", "ucm-captions", "UCM_Captions"):
        assert canonical_dataset(name) == "ucm"
        assert paper_number("retrieval", name, "ViT-B/32").value == 56.36
    for name in ("EuroSAT", "eurosat-rgb", "EUROSAT_RGB"):
        assert paper_number("zeroshot", name, "vit-l-14").value == 59.94
    assert canonical_model("ViT-B/32") == canonical_model("ViT-B-32-quickgelu") == "ViT-B-32"
    assert canonical_model("RN50") == "RN50" and canonical_model("rs-tiny") == "rs-tiny"
    assert paper_number("zeroshot", "AID", "ViT-L-14").value == 87.90
    assert paper_number("retrieval", "RSICD", "ViT-L-14").value == 36.35
    assert paper_number("zeroshot", "UCM", "ViT-B-32") is None  # not in REFERENCE.md
    assert paper_number("zeroshot", "EuroSAT", "RN50") is None
    assert paper_number("zeroshot", "EuroSAT", "rs-tiny") is None
    assert paper_number("linear_probe", "EuroSAT", "ViT-B-32") is None
    assert paper_number("counting", "DOTA", "ViT-B-32") is None
    with pytest.raises(ValueError, match="unknown task"):
        paper_number("segmentation", "EuroSAT", "ViT-B-32")


def test_paper_averages_and_second_reference():
    b32, l14 = paper_average("zeroshot", "ViT-B-32"), paper_average("zeroshot", "ViT-L/14")
    assert (b32.value, b32.n_datasets, l14.value, l14.n_datasets) == (62.41, 12, 71.30, 12)
    assert paper_average("linear_probe", "ViT-B-32") is None and paper_average("knn", "ViT-B-32") is None
    assert paper_average("zeroshot", "rs-tiny") is None
    geo = paper_number("zeroshot", "NWPU-RESISC45", "ViT-B-32", reference="GeoRSCLIP")
    assert geo.value == 72.74 and geo.reference == "GeoRSCLIP"
    assert paper_number("retrieval", "UCM", "ViT-B-32", reference="GeoRSCLIP") is None
    assert {k[0] for k in PAPER_NUMBERS} == {"RemoteCLIP", "GeoRSCLIP"}


def test_trained_on_marks_zero_shot_and_in_domain_cells(tmp_path):
    meta = {**make_meta(), "trained_on": ["eurosat-rgb", "rsitmd"]}
    md = write_suite_report(tmp_path, make_suite(), meta)["md"].read_text(encoding="utf-8")
    euro = md_row(md, "EuroSAT").split(" | ")
    assert euro[1] == "40.12 (paper 35.96) [not zero-shot: trained on its train split]"
    assert euro[2] == "80.00"  # a probe trains on the train split anyway
    assert md_row(md, "RSITMD").endswith("25.67 (paper 49.38) [in-domain: trained on its train split] |")
    assert "trained on" not in md_row(md, "AID")
