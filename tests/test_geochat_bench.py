"""GeoChat-Bench read as released: bench files in GeoChat's formats, hand-made answers with known scores, the
``--answers`` and ``--model`` modes of launch/eval_geochat.py, malformed lines counted, the demo bench."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from launch.eval_geochat import main
from synthetic.geochat_bench import oracle_answer, scene_records, write_answers, write_demo_bench
from vlm_finetune.bench import BenchConfig, bench_prompt, load_bench_file, run_bench
from vlm_finetune.bench_metrics import (
    reference_boxes,
    score_boxes,
    score_captions,
    score_scene,
    score_vqa,
)
from vlm_finetune.boxes import format_box, make_box, parse_boxes
from vlm_finetune.metrics import rotated_iou


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from synthetic.demo_data import generate_demo

    root = tmp_path_factory.mktemp("bench")
    generate_demo(root / "data", seed=0, n_dota=4, n_coco=2, n_masks=1, n_captions=3, n_scenes_per_class=2, size=128)
    paths = write_demo_bench(root / "data", root / "bench", n_per_file=6)
    return {"root": root, "data": root / "data", "bench": root / "bench", "paths": paths}


# ---------------------------------------------------------------- the rules, on hand-made answers

def test_scene_rule_is_geochats_exact_match():
    rec = {"question_id": "DenseResidential/denseresidential_1.jpg", "ground_truth": "DenseResidential"}
    answers = ["Dense Residential.", "dense residential", "DENSERESIDENTIAL", "dense-residential", "residential", None]
    m = score_scene([{**rec, "answer": a} for a in answers])
    assert m["accuracy"] == pytest.approx(50.0) and m["n_correct"] == 3 and m["n_no_answer"] == 1


def test_rsvqa_accuracy_per_type_and_the_papers_average():
    rows = [("presence", "yes", "Yes."), ("presence", "no", "yes"), ("comp", "no", "No"), ("comp", "yes", "yes"),
            ("rural_urban", "rural", "urban"), ("count", "4", "4")]
    items = [{"question_id": i, "category": c, "ground_truth": gt, "answer": a} for i, (c, gt, a) in enumerate(rows)]
    m = score_vqa(items)
    assert m["accuracy"] == {"presence": 50.0, "comparison": 100.0, "rural_urban": 0.0, "count": 100.0,
                             "average": 60.0}  # average: 3 of the 5 presence/comparison/rural-urban questions
    assert m["mean_of_types"] == pytest.approx(50.0) and m["n_by_type"]["count"] == 1
    assert list(m["accuracy"]) == ["presence", "comparison", "rural_urban", "count", "average"]


def _poly(cx, cy, w, h, deg):
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return [[cx + dx * c - dy * s, cy + dx * s + dy * c] for dx, dy in ((-w / 2, -h / 2), (w / 2, -h / 2),
                                                                         (w / 2, h / 2), (-w / 2, h / 2))]


def test_rotated_pixel_ground_truth_and_every_split_key():
    size = (200, 200)  # square: the angle on the 0-100 grid is the angle in pixels
    rotated = _poly(100, 100, 80, 10, 30)  # a long thin box turned by 30 degrees
    boxes, problem = reference_boxes([rotated], size)
    assert problem is None and boxes[0].theta == 30
    flat = make_box(boxes[0].x1, boxes[0].y1, boxes[0].x2, boxes[0].y2, 0)
    assert rotated_iou(boxes[0], flat) < 0.5  # the same box without its angle is a miss
    two, _ = reference_boxes([[10, 10, 30, 30], _poly(150, 70, 20, 20, 0)], size)
    items = [
        {"type": "ref", "size_group": "small", "obj_ids": [0], "answer": format_box(boxes[0]), "ref_boxes": boxes},
        {"type": "ref", "size_group": "large", "obj_ids": [0], "answer": format_box(flat), "ref_boxes": boxes},
        {"type": "grounding", "size_group": "medium", "obj_ids": [1, 2], "ref_boxes": two,
         "answer": "<p>cars</p>" + "".join(format_box(b) for b in reversed(two))},
        {"type": "grounding", "size_group": "medium", "obj_ids": [1, 2], "ref_boxes": two,
         "answer": "<p>cars</p>" + format_box(two[0]) + "{<1><2>"},
    ]
    m = score_boxes(items)
    assert m["acc@0.5"] == {"overall": 50.0, "small": 100.0, "medium": 50.0, "large": 0.0, "single": 50.0,
                            "multi": 50.0, "refer": 50.0, "grounding": 50.0}
    assert m["n_by_split"]["overall"] == 4 and m["n_malformed_answer_boxes"] == 1
    assert reference_boxes([rotated], None)[1] == "no_image_size_for_pixel_ground_truth"
    assert reference_boxes(format_box(flat), None) == ([flat], None)  # box text on the grid needs no size


def test_rouge_and_meteor_sanity():
    ref = "a plane at the top left of the image"
    perfect = score_captions([{"ground_truth": ref, "answer": ref}])
    assert perfect["rouge1"] == pytest.approx(100) and perfect["rougeL"] == pytest.approx(100)
    assert perfect["meteor"] is None or perfect["meteor"] > 99
    none = score_captions([{"ground_truth": ref, "answer": "zzz qqq"}])
    assert none["rouge1"] == 0 and none["rougeL"] == 0 and (none["meteor"] is None or none["meteor"] == 0)
    part = score_captions([{"ground_truth": ref, "answer": "<p>a plane</p> at the left"}])
    assert 0 < part["rouge1"] < 100 and part["rougeL"] <= part["rouge1"]
    assert part["meteor"] is None or 0 < part["meteor"] < 100


def test_prompts_are_geochats():
    assert bench_prompt("boxes", {"type": "ref", "question": "the plane"}) == \
        "[refer] Give me the location of <p> the plane </p>"
    assert bench_prompt("boxes", {"type": "grounding", "question": " Describe it."}) == "[grounding] Describe it."
    assert bench_prompt("caption", {"question": "{<1><2><3><4>|<0>}"}) == \
        "[identify] What is the object present at {<1><2><3><4>|<0>}"
    vqa = "Is there a road?\nAnswer the question using a single word or phrase."
    assert bench_prompt("vqa", {"text": vqa}) == vqa  # the released text already ends with it: not appended twice
    assert bench_prompt("vqa", {"text": "Is there a road?"}) == vqa


# ---------------------------------------------------------------- files as released, end to end

def test_malformed_lines_are_counted_and_counts_balance(tmp_path):
    good = {"question_id": "Airport/airport_1.jpg", "image": "a.jpg", "text": "t", "ground_truth": "Airport"}
    path = _jsonl(tmp_path / "aid.jsonl", [good, "not json {", "[1, 2]", {"image": "x.jpg"},
                                           {"question_id": "no-slash.jpg"}, ""])
    records, counts = load_bench_file(path, "scene", None)
    assert len(records) == 1 and counts["n_lines"] == 5
    assert counts["malformed"] == {"not_json": 1, "not_an_object": 1, "no_question_id": 1,
                                   "no_class_in_question_id": 1}
    assert counts["n_lines"] == counts["n_records"] + counts["n_malformed"]
    ref = _jsonl(tmp_path / "referring.jsonl", [
        {"question_id": 1, "image_id": "img", "question": "q", "type": "ref", "ground_truth": [[1, 2, 3]]},
        {"question_id": 2, "image_id": "img", "question": "q", "type": "ref", "ground_truth": [[0, 0, 9, 9]]}])
    _, counts = load_bench_file(ref, "boxes", None)
    assert counts["malformed"] == {"unreadable_ground_truth_box": 1, "no_image_size_for_pixel_ground_truth": 1}


def test_answers_mode_end_to_end_through_the_launch_script(demo, tmp_path, capsys):
    answers = tmp_path / "answers"
    write_answers(demo["bench"], answers, lambda stem, rec: oracle_answer(stem, rec, demo["data"]))
    aid = (answers / "aid.jsonl").read_text().splitlines()
    wrong = json.loads(aid[0]) | {"answer": "Not A Class"}
    (answers / "aid.jsonl").write_text("\n".join([json.dumps(wrong), *aid[2:], "garbage",
                                                  json.dumps({"question_id": "x/y", "answer": "x"})]) + "\n")
    (demo["bench"] / "hrben.jsonl").rename(demo["bench"] / "hrben.keep")
    try:
        out = tmp_path / "eval"
        rc = main(["--bench", str(demo["bench"]), "--answers", str(answers), "--images", str(demo["data"]),
                   "--output", str(out)])
    finally:
        (demo["bench"] / "hrben.keep").rename(demo["bench"] / "hrben.jsonl")
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and printed["output"] == str(out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert "hrben" not in metrics and any("hrben" in line for line in printed["skipped"])
    n = metrics["aid"]["n"]
    assert metrics["aid"]["accuracy"] == pytest.approx(100 * (n - 2) / n)  # one wrong, one missing
    assert metrics["aid"]["n_no_answer"] == 1
    assert metrics["aid"]["answers"] == {"n_lines": n + 1, "n_matched": n - 1, "n_unmatched": 1, "n_malformed": 1,
                                         "malformed": {"not_json": 1}}
    for stem in ("UCmerced", "lrben", "referring", "grounding_description"):
        m = metrics[stem]
        assert m["n_lines"] == m["n_records"] + m["n_malformed"] and m["n_malformed"] == 0
        score = m["accuracy"] if stem == "UCmerced" else m["accuracy"]["average"] if stem == "lrben" \
            else m["acc@0.5"]["overall"]
        assert score == pytest.approx(100.0), stem
    assert metrics["region_captioning"]["rouge1"] == pytest.approx(100.0)
    table = (out / "table.md").read_text()
    assert "| AID scene classification | aid | accuracy |" in table and "72.03" in table and "87.30" in table
    assert "<table" in (out / "report.html").read_text()


def test_answers_files_alone_score_the_same_and_bad_settings_are_one_line_errors(demo, tmp_path, capsys):
    answers = tmp_path / "answers"
    write_answers(demo["bench"], answers, lambda stem, rec: oracle_answer(stem, rec, demo["data"]))
    both = run_bench(BenchConfig(bench=str(demo["bench"]), answers=str(answers), images=str(demo["data"]),
                                 output=str(tmp_path / "a"), files=["aid", "lrben", "region_captioning"]))
    alone = run_bench(BenchConfig(answers=str(answers), output=str(tmp_path / "b"),
                                  files=["aid", "lrben", "region_captioning"]))
    for stem in ("aid", "lrben", "region_captioning"):
        for key in ("accuracy", "rouge1", "n"):
            assert both["metrics"][stem].get(key) == alone["metrics"][stem].get(key)
    with pytest.raises(SystemExit) as exc:
        main(["--bench", str(demo["bench"])])  # neither --model nor --answers
    assert exc.value.code == 2
    assert main(["--bench", str(tmp_path / "nowhere"), "--answers", str(answers)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "not a folder" in err[-1]


def test_rsvqa_answers_from_rsvqa_answers_json(tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    _jsonl(bench / "lrben.jsonl", [{"question_id": 7, "image": "1.tif", "text": "Is there a road?", "category": "presence"},
                                   {"question_id": 8, "image": "1.tif", "text": "Rural?", "category": "rural_urban"}])
    gt = tmp_path / "LR_split_test_answers.json"
    gt.write_text(json.dumps({"answers": [{"question_id": 7, "answer": "yes", "active": True},
                                          {"question_id": 8, "answer": "rural", "active": True}]}))
    answers = tmp_path / "answers"
    answers.mkdir()
    _jsonl(answers / "lrben.jsonl", [{"question_id": 7, "answer": "Yes"}, {"question_id": 8, "answer": "urban"}])
    r = run_bench(BenchConfig(bench=str(bench), answers=str(answers), lrben_gt=str(gt), output=str(tmp_path / "o")))
    assert r["metrics"]["lrben"]["accuracy"] == {"presence": 100.0, "rural_urban": 0.0, "average": 50.0}


def test_shared_real_samples_in_bench_formats(shared_data, tmp_path):
    """AID class folders (CamelCase names) and DOTA's real oriented boxes, in the bench's formats."""
    rows = scene_records(shared_data / "scenes" / "aid", shared_data, 30)
    assert {r["question_id"].split("/")[0] for r in rows} >= {"DenseResidential", "BaseballField"}
    bench = tmp_path / "bench"
    bench.mkdir()
    _jsonl(bench / "aid.jsonl", rows)
    data = tmp_path / "data"
    (data / "dota").mkdir(parents=True)
    for sub in ("images", "labelTxt"):
        (data / "dota" / sub).symlink_to(shared_data / "detection" / "dota" / sub)
    paths = write_demo_bench(data, tmp_path / "dota_bench", n_per_file=6)
    for stem in ("referring", "region_captioning"):
        Path(paths[stem]).rename(bench / f"{stem}.jsonl")

    def answer(stem, rec):
        if stem == "aid":  # GeoChat's rule: "Dense Residential." matches the folder DenseResidential
            return " ".join(w for w in __import__("re").findall("[A-Z][a-z]*", rec["ground_truth"])) + "."
        return oracle_answer(stem, rec, data)
    write_answers(bench, tmp_path / "answers", answer)
    r = run_bench(BenchConfig(bench=str(bench), answers=str(tmp_path / "answers"), images=str(data),
                              output=str(tmp_path / "out")))
    assert r["metrics"]["aid"]["accuracy"] == 100.0
    ref = r["metrics"]["referring"]
    assert ref["acc@0.5"]["overall"] == 100.0 and ref["n_malformed"] == 0 and ref["n"] == 6
    assert {"single", "multi", "refer", "grounding"} <= set(ref["acc@0.5"])


def test_tiny_model_generates_geochat_answers_files(demo, tmp_path):
    """The --model mode on a tiny GeoChat: answers files in GeoChat's format, re-scored identically by --answers."""
    import clip_pretrain  # noqa: F401 - registers rs-tiny
    from synthetic.tiny_llm import word_vocab, write_tiny_llm
    from vlm_finetune.export import export_vision_tower
    from vlm_finetune.geochat import assemble_geochat, save_geochat

    tower = export_vision_tower(None, "rs-tiny", 32, tmp_path / "tower")
    llm = write_tiny_llm(tmp_path / "llm", word_vocab(["yes no airport plane many two"]), hidden=64, layers=2, seed=0)
    model, processor = assemble_geochat(tower, llm)
    save_geochat(model, processor, tmp_path / "geochat")
    files = ["aid", "lrben", "referring", "region_captioning"]
    gen = run_bench(BenchConfig(bench=str(demo["bench"]), model=str(tmp_path / "geochat"), images=str(demo["data"]),
                                output=str(tmp_path / "gen"), files=files, limit=2, max_new_tokens=4))
    rows = [json.loads(x) for x in (tmp_path / "gen" / "answers" / "referring.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and {"question_id", "image_id", "answer", "ground_truth", "type", "obj_ids",
                               "size_group", "dataset", "question"} <= set(rows[0])
    again = run_bench(BenchConfig(bench=str(demo["bench"]), answers=str(tmp_path / "gen" / "answers"),
                                  images=str(demo["data"]), output=str(tmp_path / "again"), files=files, limit=2))
    for stem in files:
        g, a = gen["metrics"][stem], again["metrics"][stem]
        assert g["n"] == a["n"] == 2 and g["n_no_answer"] == 0
        for key in ("accuracy", "acc@0.5", "rouge1"):
            assert g.get(key) == a.get(key), (stem, key)
    assert parse_boxes("{<1><2><3><4>|<0>}").boxes  # the parser the box scores rest on
