"""GeoChat box text, metrics and the eval CLI (scoring saved predictions; no model)."""

from __future__ import annotations

import json
import math
import sys

import pytest
from PIL import Image

from vlm_finetune.boxes import (
    Box,
    box_from_obb,
    box_from_pixels,
    box_to_polygon,
    format_box,
    format_boxes,
    parse_boxes,
    parse_phrases,
)
from vlm_finetune.metrics import (
    acc_at_iou,
    accuracy,
    meteor,
    normalize_answer,
    rotated_iou,
    rouge1_f,
    rouge_scores,
    rougel_f,
)

# ---------------------------------------------------------------- boxes

def test_format_parse_round_trip():
    boxes = [Box(1, 2, 30, 40, 0), Box(10, 20, 60, 70, -35), Box(0, 0, 100, 100, 90)]
    assert format_box(boxes[0]) == "{<1><2><30><40>|<0>}"
    text = format_boxes(boxes)
    assert text == "{<1><2><30><40>|<0>}{<10><20><60><70>|<-35>}{<0><0><100><100>|<90>}"
    res = parse_boxes(f"There are <p>three things</p> {text}.")
    assert res.boxes == boxes and res.n_malformed == 0


def test_parse_tolerant_and_malformed_counted():
    res = parse_boxes("{ <1> <2> <3> <4> }")  # spaces, theta missing
    assert res.boxes == [Box(1, 2, 3, 4, 0)]
    assert parse_boxes("{<1><2><3><4>}").boxes == [Box(1, 2, 3, 4, 0)]
    assert parse_boxes("{<1.4><2.6><3><4>|<10.2>}").boxes == [Box(1, 3, 3, 4, 10)]  # floats rounded
    assert parse_boxes("{<-5><20><150><4>|<0>}").boxes == [Box(0, 4, 100, 20, 0)]  # clamped + swapped
    assert parse_boxes("{<50><60><10><20>|45}").boxes == [Box(10, 20, 50, 60, 45)]  # swapped, bare theta
    bad = parse_boxes("{<1><2><3>|<0>}{<a><b><c><d>}{}{<1><2><3><4>|<x>}{<1><2><3><4>|<5>}{<7><8")
    assert bad.boxes == [Box(1, 2, 3, 4, 5)] and bad.n_malformed == 5
    for junk in (None, 42, "", "no boxes here", "}}}{{{", "<1><2><3><4>"):
        r = parse_boxes(junk)
        assert r.boxes == []


def test_parse_phrases():
    text = "<p>two planes</p> {<1><2><3><4>|<0>}{<5><6><7><8>|<0>} and <p>a car</p>{<1><1><9><9>|<3>} <p>x</p>"
    out = parse_phrases(text)
    assert [p for p, _ in out] == ["two planes", "a car", "x"]
    assert out[0][1].boxes == [Box(1, 2, 3, 4), Box(5, 6, 7, 8)]
    assert out[1][1].boxes == [Box(1, 1, 9, 9, 3)] and out[2][1].boxes == []
    assert parse_phrases(None) == []


def test_box_from_pixels():
    assert box_from_pixels((10, 20, 110, 220), 200, 400) == Box(5, 5, 55, 55, 0)
    assert box_from_pixels((-10, 390, 250, 500), 200, 400) == Box(0, 98, 100, 100, 0)


def test_box_from_obb_axis_aligned_and_45():
    # axis-aligned 40x20 (wide): theta 0; tall 20x40: longer side vertical -> theta 90
    assert box_from_obb([10, 10, 50, 10, 50, 30, 10, 30], 100, 100) == Box(10, 10, 50, 30, 0)
    assert box_from_obb([10, 10, 30, 10, 30, 50, 10, 50], 100, 100) == Box(0, 20, 40, 40, 90)
    # pixels on a 200x200 image scale to the grid
    assert box_from_obb([20, 20, 100, 20, 100, 60, 20, 60], 200, 200) == Box(10, 10, 50, 30, 0)
    # 45 degrees: long side 20*sqrt2 along (1,1), short side 5*sqrt2 along (-1,1), centre (47.5,47.5)
    pts = [40, 35, 60, 55, 55, 60, 35, 40]
    cx, cy = 47.5, 47.5
    b = box_from_obb(pts, 100, 100)
    assert b.theta == 45
    assert (b.x1, b.x2) == (round(cx - 10 * math.sqrt(2)), round(cx + 10 * math.sqrt(2)))
    assert (b.y1, b.y2) == (round(cy - 2.5 * math.sqrt(2)), round(cy + 2.5 * math.sqrt(2)))
    # the polygon lies on the original corners (within rounding)
    poly = box_to_polygon(b)
    for (px, py) in poly:
        assert min(math.hypot(px - pts[2 * i], py - pts[2 * i + 1]) for i in range(4)) < 1.5
    # the same box listed from another corner / the other way round gives the same angle mod 180
    assert box_from_obb(pts[4:] + pts[:4], 100, 100).theta == 45
    rev = [pts[6], pts[7], pts[4], pts[5], pts[2], pts[3], pts[0], pts[1]]
    assert box_from_obb(rev, 100, 100).theta == 45
    # a square's angle is reduced to (-45, 45]
    assert box_from_obb([50, 30, 70, 50, 50, 70, 30, 50], 100, 100).theta == 45
    assert box_from_obb([10, 10, 30, 10, 30, 30, 10, 30], 100, 100).theta == 0


# ---------------------------------------------------------------- IoU

@pytest.mark.parametrize("backend", ["shapely", "opencv"])
def test_rotated_iou(monkeypatch, backend):
    if backend == "opencv":
        monkeypatch.setitem(sys.modules, "shapely", None)
        monkeypatch.setitem(sys.modules, "shapely.geometry", None)
    else:
        pytest.importorskip("shapely")
    rect = Box(40, 45, 60, 55, 0)  # 20 x 10 (2:1)
    assert rotated_iou(rect, rect) == pytest.approx(1.0)
    assert rotated_iou(Box(40, 45, 60, 55, 30), Box(40, 45, 60, 55, 30)) == pytest.approx(1.0, abs=1e-5)
    assert rotated_iou(rect, Box(40, 45, 60, 55, 90)) == pytest.approx(1 / 3, abs=1e-5)
    square = Box(40, 40, 60, 60, 0)
    assert rotated_iou(square, Box(40, 40, 60, 60, 90)) == pytest.approx(1.0, abs=1e-5)
    assert rotated_iou(Box(0, 0, 10, 10, 20), Box(50, 50, 60, 60, 0)) == 0.0
    assert rotated_iou(Box(0, 0, 10, 10, 20), Box(50, 50, 50, 60, 10)) == 0.0  # degenerate


def test_hbb_iou_simple():
    a, b = Box(0, 0, 10, 10), Box(5, 0, 15, 10)
    assert rotated_iou(a, b) == pytest.approx(50 / 150)
    assert rotated_iou(a, Box(20, 20, 30, 30)) == 0.0
    assert rotated_iou(a, Box(0, 0, 10, 10, 180 - 180)) == 1.0
    # the polygon path agrees with the rectangle formula (theta 0 vs theta 0 forced through polygons)
    from vlm_finetune import metrics
    assert metrics._polygon_intersection(box_to_polygon(a), box_to_polygon(b)) == pytest.approx(50)


def test_acc_at_iou():
    ref = [[Box(10, 10, 30, 30)], [Box(50, 50, 70, 70)], [Box(0, 0, 10, 10)], [Box(0, 0, 10, 10)]]
    pred = [[Box(10, 10, 30, 30)], [], None, [Box(60, 60, 90, 90), Box(0, 0, 10, 10)]]
    assert acc_at_iou(pred, ref) == 25.0  # empty, missing and a wrong first box are misses
    assert acc_at_iou(pred, ref, match="best") == 50.0
    assert acc_at_iou([], []) == 0.0
    assert acc_at_iou([[]], [[Box(0, 0, 1, 1)]]) == 0.0


# ---------------------------------------------------------------- answers / captions

def test_normalize_answer_and_accuracy():
    assert normalize_answer("Yes.") == "yes"
    assert normalize_answer("yes, there is") == "yes"
    assert normalize_answer("No") == "no"
    assert normalize_answer("  The Airport! ") == "airport"
    assert normalize_answer("three") == "3" and normalize_answer("There are Two planes") == "there are 2 planes"
    assert normalize_answer("Dense-Residential") == "dense residential"
    assert normalize_answer("2.5") == "2.5" and normalize_answer("1,000") == "1000"
    assert normalize_answer(None) == ""
    assert accuracy(["Yes.", "two", "Forest", None], ["yes", "2", "river", "no"]) == 50.0
    assert accuracy([], []) == 0.0


def test_rouge_hand_cases(monkeypatch):
    assert rouge1_f("the cat sat", "the cat sat") == 1.0
    # pred "a b c d", ref "a c e": overlap 2 -> P 2/4, R 2/3 -> F 4/7; LCS "a c" = 2 -> same
    assert rouge1_f("a b c d", "a c e") == pytest.approx(4 / 7)
    assert rougel_f("a b c d", "a c e") == pytest.approx(4 / 7)
    # order matters for L only: pred "c b a", ref "a b c": R1 = 1, LCS = 1 -> 1/3
    assert rouge1_f("c b a", "a b c") == 1.0 and rougel_f("c b a", "a b c") == pytest.approx(1 / 3)
    assert rouge1_f("", "a") == 0.0
    monkeypatch.setitem(sys.modules, "rouge_score", None)
    s = rouge_scores(["a b c d", None], ["a c e", "x"])
    assert s["rouge_impl"] == "builtin"
    assert s["rouge1"] == pytest.approx(100 * 4 / 7 / 2) and s["rougeL"] == pytest.approx(100 * 4 / 7 / 2)


def test_rouge_score_package_agrees():
    pytest.importorskip("rouge_score")
    s = rouge_scores(["a large plane parked near the terminal"], ["a plane parked at the terminal"])
    assert s["rouge_impl"] == "rouge_score"
    assert s["rouge1"] == pytest.approx(100 * rouge1_f("a large plane parked near the terminal",
                                                       "a plane parked at the terminal"))


def test_meteor_optional(monkeypatch):
    monkeypatch.setitem(sys.modules, "nltk", None)
    monkeypatch.setitem(sys.modules, "nltk.translate.meteor_score", None)
    value, note = meteor(["a"], ["a"])
    assert value is None and "nltk" in note


# ---------------------------------------------------------------- CLI

def _rec(i, question, answer, image="img0.png"):
    return {"id": i, "image": image, "conversations": [{"from": "human", "value": "<image>\n" + question},
                                                       {"from": "gpt", "value": answer}]}


CASES = {
    "classify": ([_rec("c1", "Classify the image ...", "Airport"), _rec("c2", "Classify ...", "forest"),
                  _rec("c3", "Classify ...", "river")],
                 {"c1": "airport.", "c2": "beach"}, "accuracy", 100 / 3),
    "vqa": ([_rec("v1", "Is there a road? Answer the question using a single word or phrase.", "Yes"),
             _rec("v2", "How many planes?", "3")], {"v1": "yes", "v2": "three"}, "accuracy", 100.0),
    "refer": ([_rec("r1", "[refer] <p>the plane</p>", "<p>the plane</p>{<10><10><30><20>|<0>}"),
               _rec("r2", "[refer] <p>the car</p>", "{<50><50><70><60>|<30>}"),
               _rec("r3", "[refer] <p>x</p>", "{<0><0><10><10>|<0>}")],
              {"r1": "{<11><10><30><20>|<0>}", "r2": "{<50><50><70><60>|<30>}{<1><2>", "r3": "no idea"},
              "acc@0.5", 200 / 3),
    "grounding": ([_rec("g1", "[grounding] Describe", "<p>planes</p>{<10><10><30><20>|<0>}{<50><50><60><60>|<0>}")],
                  {"g1": "<p>planes</p>{<0><80><5><90>|<0>}{<50><50><60><60>|<0>}"}, "acc@0.5", 100.0),
    "region-caption": ([_rec("k1", "[identify] {<1><2><3><4>|<0>}", "a white plane"),
                        _rec("k2", "[identify] {<1><2><3><4>|<0>}", "a car")],
                       {"k1": "a white plane"}, "rouge1", 50.0),
}


@pytest.mark.parametrize("task", list(CASES))
def test_eval_cli_scores_predictions(tmp_path, capsys, task):
    from launch.eval_geochat import main

    records, preds, key, expected = CASES[task]
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (64, 48), (30, 90, 30)).save(tmp_path / "imgs" / "img0.png")
    data = tmp_path / "data.json"
    data.write_text(json.dumps(records))
    pred_file = tmp_path / "preds.jsonl"
    pred_file.write_text("".join(json.dumps({"question_id": k, "answer": v}) + "\n" for k, v in preds.items()))
    out = tmp_path / "out"
    rc = main(["--task", task, "--data", str(data), "--images", str(tmp_path / "imgs"),
               "--predictions", str(pred_file), "--output", str(out)])
    assert rc == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    printed = json.loads(last)
    saved = json.loads((out / "metrics.json").read_text())
    for m in (printed, saved):
        assert m["task"] == task and m["n"] == len(records)
        assert m["n_missing"] == len(records) - len(preds)
        assert "n_malformed_boxes" in m
        assert m["score"] == pytest.approx(expected) and m[key] == pytest.approx(expected)
    if task == "refer":
        assert saved["n_malformed_boxes"] == 1 and saved["box_match"] == "first"
    if task == "region-caption":
        assert "rougeL" in saved and ("meteor" in saved or any("METEOR" in n for n in saved["notes"]))
    report = (out / "report.html").read_text()
    assert "data:image/jpeg;base64," in report and "<table>" in report
    assert not (out / "predictions.jsonl").exists()


def test_eval_cli_errors(tmp_path, capsys):
    from launch.eval_geochat import main

    with pytest.raises(SystemExit):
        main(["--task", "nope", "--data", "x.json", "--predictions", "p.jsonl"])
    with pytest.raises(SystemExit):
        main(["--task", "vqa", "--data", "x.json"])  # neither --model nor --predictions
    assert main(["--task", "vqa", "--data", str(tmp_path / "missing.json"), "--predictions", "p.jsonl",
                 "--output", str(tmp_path / "o")]) == 2
    assert "error:" in capsys.readouterr().err


def test_eval_prompt_is_vicuna_v1():
    from rs_common.formats.conversation import SYSTEM, generation_prompt

    assert generation_prompt("How many planes?") == f"{SYSTEM} USER: <image>\nHow many planes? ASSISTANT:"


def test_every_vicuna_v1_prompt_comes_from_the_one_template():
    """The system prompt and the ``USER:``/``ASSISTANT:`` roles are written in one module only; every other product
    module that prompts a GeoChat builds the prompt from rs_common.formats.conversation."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    owner = root / "rs_common" / "formats" / "conversation.py"
    for pkg in ("rs_common", "shards", "clip_pretrain", "vlm_finetune", "launch", "synthetic"):
        for path in (root / pkg).rglob("*.py"):
            text = path.read_text()
            if path != owner:
                assert "A chat between a curious user" not in text, path
                assert "ASSISTANT:" not in text.replace("``ASSISTANT:``", ""), path
                assert 'IMAGE_TOKEN = "' not in text, path


def test_eval_cli_runs_tiny_model(tmp_path, capsys):
    """End to end with a tiny random GeoChat (the helpers of tests/test_geochat.py): predictions.jsonl written."""
    from launch.eval_geochat import main
    from tests.test_geochat import make_tokenizer, tiny_llm, write_tower
    from vlm_finetune.geochat import assemble_geochat, save_geochat

    llm = tiny_llm()
    llm.save_pretrained(str(tmp_path / "llm"))
    make_tokenizer().save_pretrained(str(tmp_path / "llm"))
    model, processor = assemble_geochat(write_tower(tmp_path / "tower"), tmp_path / "llm")
    save_geochat(model, processor, tmp_path / "model")
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (64, 48), (30, 90, 30)).save(tmp_path / "imgs" / "img0.png")
    records, _, _, _ = CASES["refer"]
    (tmp_path / "data.json").write_text(json.dumps(records))
    out = tmp_path / "out"
    rc = main(["--model", str(tmp_path / "model"), "--task", "refer", "--data", str(tmp_path / "data.json"),
               "--images", str(tmp_path / "imgs"), "--output", str(out), "--max-new-tokens", "4"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [x["question_id"] for x in lines] == ["r1", "r2", "r3"] and all("answer" in x for x in lines)
    assert printed["source"] == "model" and printed["n"] == 3 and printed["n_missing"] == 0
    assert 0.0 <= printed["score"] <= 100.0


def test_geochat_infer_cli_answers_parses_and_draws(tmp_path, capsys):
    """launch/geochat_infer.py on a tiny GeoChat: prints the answer, then a JSON line; boxes parsed, image drawn."""
    import json as _json

    from PIL import Image as _Image

    from launch import geochat_infer
    from vlm_finetune.export import export_vision_tower
    from vlm_finetune.geochat import assemble_geochat, save_geochat
    from synthetic.tiny_llm import word_vocab, write_tiny_llm

    tower = export_vision_tower(None, "rs-tiny", 64, tmp_path / "tower")
    llm = write_tiny_llm(tmp_path / "llm", word_vocab(["[refer] the plane {<10><20><30><40>|0}"]))
    save_geochat(*assemble_geochat(tower, llm), tmp_path / "model")
    image = tmp_path / "scene.png"
    _Image.new("RGB", (80, 60), (90, 120, 90)).save(image)
    rc = geochat_infer.main(["--model", str(tmp_path / "model"), "--image", str(image), "--prompt", "[refer] the plane",
                             "--max-new-tokens", "8", "--output", str(tmp_path / "drawn.png")])
    assert rc == 0
    result = _json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"answer", "boxes", "n_malformed_boxes", "drawn"}
    assert _Image.open(tmp_path / "drawn.png").size == (80, 60)
    assert geochat_infer.main(["--model", str(tmp_path / "model"), "--image", str(tmp_path / "nope.png"),
                               "--prompt", "x"]) == 2


def test_eval_and_infer_cli_bad_inputs_are_one_line_errors(tmp_path, capsys, monkeypatch):
    """Each case exits 2 with one `error:` line naming the culprit and no traceback; the ones that need a model are
    all caught before it loads."""
    from launch.eval_geochat import main as evaluate
    from launch.geochat_infer import main as infer
    from tests.test_weights_guards import one_error_line
    from vlm_finetune import geochat

    monkeypatch.setattr(geochat, "load_geochat", lambda *a, **k: pytest.fail("model loaded before the checks"))
    import torch
    from safetensors.torch import save_file

    model = tmp_path / "model"  # config + weights that pass the cheap checks (the loader itself is stubbed above)
    model.mkdir()
    (model / "config.json").write_text("{}")
    save_file({"w": torch.zeros(1)}, str(model / "model.safetensors"))
    (model / "processor_config.json").write_text("{}")
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (64, 48)).save(tmp_path / "imgs" / "img0.png")
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    records, preds, _, _ = CASES["vqa"]
    data = tmp_path / "data.json"
    data.write_text(json.dumps(records))
    missing_img = tmp_path / "missing_img.json"
    missing_img.write_text(json.dumps([{**records[0], "image": "gone.png"}]))
    bad_turn = tmp_path / "bad_turn.json"
    bad_turn.write_text(json.dumps([{"id": "t", "image": "img0.png", "conversations": ["hi", "there"]}]))
    (tmp_path / "bad.jsonl").write_text("[1, 2]\n")
    (tmp_path / "bad.json").write_text("{oops")
    run = ["--task", "vqa", "--model", str(model), "--images", str(tmp_path / "imgs"), "--output", str(tmp_path / "o")]
    scored = ["--task", "vqa", "--output", str(tmp_path / "o")]
    for argv, says in [
        (scored + ["--data", str(tmp_path / "empty"), "--predictions", str(tmp_path / "bad.jsonl")], "is a folder"),
        (scored + ["--data", str(tmp_path / "bad.json"), "--predictions", str(tmp_path / "bad.jsonl")], "not valid json"),
        (scored + ["--data", str(bad_turn), "--predictions", str(tmp_path / "bad.jsonl")], "each turn must be an object"),
        (scored + ["--data", str(data), "--predictions", str(tmp_path / "bad.jsonl")], "bad.jsonl:1: each line must be"),
        (scored + ["--data", str(data), "--predictions", str(tmp_path / "empty")], "is a folder"),
        (run + ["--data", str(missing_img)], "gone.png"),
        (run[:-2] + ["--data", str(data), "--output", str(tmp_path / "file.txt")], "exists and is not a folder"),
        (run + ["--data", str(data), "--images", str(tmp_path / "nope")], "--images"),
        (run + ["--data", str(data), "--adapter", str(tmp_path / "empty")], "no adapter_config.json"),
        (["--task", "vqa", "--model", str(tmp_path / "empty"), "--data", str(data), "--images",
          str(tmp_path / "imgs")], "no config.json"),
    ]:
        assert evaluate(argv) == 2, argv
        one_error_line(capsys.readouterr().err, says)
    with pytest.raises(SystemExit):
        evaluate(scored + ["--data", str(data), "--predictions", str(tmp_path / "bad.jsonl"), "--limit", "0"])
    assert "limit must be >= 1" in capsys.readouterr().err
    ask = ["--model", str(model), "--prompt", "what is this"]
    image = str(tmp_path / "imgs" / "img0.png")
    for argv, says in [
        (ask + ["--image", str(tmp_path / "empty")], "is a folder"),
        (ask + ["--image", str(tmp_path / "notes.png")], "cannot read the image"),
        (ask + ["--image", image, "--output", str(tmp_path / "nodir" / "x.png")], "does not exist"),
        (ask + ["--image", image, "--output", str(tmp_path / "x.xyz")], "unknown image extension"),
        (ask + ["--image", image, "--output", str(tmp_path / "b.png"), "--adapter", str(tmp_path / "nope")],
         "--adapter"),
    ]:
        assert infer(argv) == 2, argv
        one_error_line(capsys.readouterr().err, says)
