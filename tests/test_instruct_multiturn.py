"""Instruction data, issue 14 parts 3a and 3c: multi-turn records (several tasks about one image in one
conversation), RSVQA-LR/HR and GeoChat-Bench files as training records, and multi-turn tokenisation (loss on the
gpt turns only)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from rs_common.formats.conversation import IGNORE_INDEX, IMAGE_TOKEN, SYSTEM, tokenize_with_labels
from rs_common.formats.llava_record import count_turns, make_conversation, qa_pairs, validate_record
from vlm_finetune.instruct import InstructConfig, InstructError, build_instruct, read_instruct_json
from vlm_finetune.instruct_sources import CLS_SUFFIX, VQA_SUFFIX


def _check_records(records):
    """Every record valid (one <image>, in the first human turn), ids unique."""
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids))
    for i, rec in enumerate(records):
        validate_record(rec, i)
        conv = rec["conversations"]
        assert conv[0]["value"].startswith(f"{IMAGE_TOKEN}\n")
        assert all(IMAGE_TOKEN not in t["value"] for t in conv[1:])
        if count_turns(rec) > 1:
            assert rec["task"] == "multi" and len(rec["tasks"]) == count_turns(rec)


def _rounds(records):
    """Every (image, question, answer) round of the records, as a sorted list."""
    return sorted((r["image"], q, a) for r in records for q, a in qa_pairs(r))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from synthetic.demo_data import generate_demo

    root = tmp_path_factory.mktemp("demo")
    generate_demo(root, seed=0, n_dota=4, n_coco=1, n_masks=1, n_captions=2, n_scenes_per_class=1, size=128)
    return root


def test_multi_turn_on_demo_data_keeps_every_question_once(demo, tmp_path):
    from launch.build_instruct import main

    inputs = [("dota", str(demo / "dota")), ("folders", str(demo / "scenes"))]
    single = build_instruct(inputs, InstructConfig(), seed=1, image_root=demo)
    stats: dict = {}
    multi = build_instruct(inputs, InstructConfig(turns="multi", max_turns=3), seed=1, image_root=demo, stats=stats)
    both = build_instruct(inputs, InstructConfig(turns="both", max_turns=3), seed=1, image_root=demo)
    for recs in (single, multi, both):
        _check_records(recs)
    assert all(count_turns(r) == 1 for r in single)
    assert any(count_turns(r) == 3 for r in multi) and max(count_turns(r) for r in multi) <= 3
    assert _rounds(multi) == _rounds(single)  # the same questions, grouped by image
    long = [r for r in multi if count_turns(r) > 1]
    assert {r["image"] for r in long} <= {r["image"] for r in single if r["task"] in ("refer", "count")}
    assert len(both) == len(single) + len(long) and _rounds(both) == sorted(_rounds(single) + _rounds(long))
    # deterministic with the seed, whatever the input order; the seed changes the grouping
    again = build_instruct(list(reversed(inputs)), InstructConfig(turns="multi"), seed=1, image_root=demo)
    assert sorted(map(json.dumps, again)) == sorted(map(json.dumps, multi))
    assert build_instruct(inputs, InstructConfig(turns="multi"), seed=2, image_root=demo) != multi
    turns = stats["turns"]
    assert turns["single_turn"] + turns["multi_turn"] == len(multi) == stats["records"]
    assert turns["rounds"] == len(single) == sum(stats["tasks"].values())
    assert sum(int(n) * c for n, c in turns["records_by_rounds"].items()) == turns["rounds"]
    # the CLI: --turns / --max-turns, the summary and the report count the turns
    out = tmp_path / "i.json"
    assert main(["--input", *[f"{f}:{p}" for f, p in inputs], "--output", str(out), "--seed", "1",
                 "--image-root", str(demo), "--turns", "multi", "--max-turns", "3"]) == 0
    assert read_instruct_json(out) == multi
    report = (tmp_path / "i_report.html").read_text()
    assert f"{turns['multi_turn']} multi-turn" in report and f"{turns['rounds']} question/answer rounds" in report
    for bad in (["--turns", "many"], ["--max-turns", "1"]):
        with pytest.raises(SystemExit):
            main(["--input", f"dota:{demo / 'dota'}", "--output", str(out), *bad])


def test_multi_turn_on_shared_dota(shared_data):
    inputs = [("dota", str(shared_data / "detection/dota"))]
    cfg = InstructConfig(turns="multi", max_turns=4, tasks=["refer", "count", "presence", "identify"])
    recs = build_instruct(inputs, cfg, seed=0)
    _check_records(recs)
    assert recs and all(count_turns(r) == 4 and sorted(r["tasks"]) == sorted(cfg.tasks) for r in recs)
    assert all((shared_data / "detection/dota" / r["image"]).is_file() for r in recs)
    first = recs[0]["conversations"]
    assert first[0]["value"].startswith("<image>\n") and not any(t["value"].startswith("<image>") for t in first[1:])
    assert recs == build_instruct(inputs, cfg, seed=0)
    assert [r["id"] for r in recs] == [f"{r['id'].split('#')[0]}#multi0" for r in recs]


# ---------------------------------------------------------------------------------------------------------------
# RSVQA
# ---------------------------------------------------------------------------------------------------------------


def _rsvqa(root, split="train", prefix="LR_split"):
    """An RSVQA-LR-layout folder: 3 images (id 0, 1, 2; 2 has no file), questions linked by ids, plus bad entries."""
    images_dir = root / "Images_LR"
    images_dir.mkdir(parents=True, exist_ok=True)
    for i in (0, 1):
        Image.fromarray(np.full((16, 16, 3), 40 * i, dtype=np.uint8)).save(images_dir / f"{i}.tif")
    qs = [(0, 0, "count", "How many buildings are there?", "12"), (1, 0, "presence", "Is there a road?", "yes"),
          (2, 0, "comp", "Are there more roads than water areas?", "no"), (3, 0, "rural_urban", "Is it rural?", "no"),
          (4, 1, "presence", "Is there a farmland?", "yes"), (5, 2, "presence", "Is there water?", "no")]
    questions = [{"id": q, "img_id": img, "type": t, "question": text, "answers_ids": [q], "active": True,
                  "date_added": 0, "people_id": 0} for q, img, t, text, _ in qs]
    answers = [{"id": q, "question_id": q, "answer": a, "active": True} for q, _, _, _, a in qs]
    questions += [{"id": 6, "img_id": 1, "type": "count", "question": "How many?", "answers_ids": [6], "active": False},
                  {"id": 7, "img_id": 9, "type": "count", "question": "Where?", "answers_ids": [7], "active": True},
                  {"id": 8, "img_id": 1, "type": "count", "question": "No answer?", "answers_ids": [99],
                   "active": True},
                  {"id": 9, "question": "no image id"}, "not an object",
                  {"id": 10, "img_id": 3, "type": "count", "question": "Inactive image?", "answers_ids": [4]}]
    images = [{"id": i, "questions_ids": [], "active": i != 3} for i in range(4)]
    for name, key, data in (("questions", "questions", questions), ("answers", "answers", answers),
                            ("images", "images", images)):
        (root / f"{prefix}_{split}_{name}.json").write_text(json.dumps({key: data}))
    return root


def test_rsvqa_layout_becomes_vqa_records(tmp_path):
    root = _rsvqa(tmp_path / "RSVQA_LR")
    _rsvqa(root, split="test")  # the test split is not read from a folder
    stats: dict = {}
    recs = build_instruct([("rsvqa", str(root))], stats=stats)
    _check_records(recs)
    counts = stats["sources"][f"rsvqa:{root}"]
    assert counts["unit"] == "question" and counts["read"] == 12 and counts["written"] == 5
    assert counts["skipped"] == {"inactive_image": 1, "inactive_question": 1, "malformed_question": 2,
                                 "missing_image": 1, "no_answer": 1, "unknown_image": 1}
    assert counts["read"] == counts["written"] + sum(counts["skipped"].values())
    assert len(recs) == 5 and {r["task"] for r in recs} == {"vqa"}
    assert all(r["conversations"][0]["value"].endswith(VQA_SUFFIX) for r in recs)
    by_id = {r["id"]: r for r in recs}
    rec = by_id["rsvqa:RSVQA_LR/LR_split_train/0#q0"]
    assert rec["image"] == "RSVQA_LR/Images_LR/0.tif" and rec["question_type"] == "count"
    assert qa_pairs(rec) == [(f"How many buildings are there? {VQA_SUFFIX}", "12")]
    assert (tmp_path / rec["image"]).is_file() and stats["image_root"] == str(tmp_path)
    # multi-turn: one conversation per image (up to max_turns rounds)
    multi = build_instruct([("rsvqa", str(root))], InstructConfig(turns="multi", max_turns=4))
    _check_records(multi)
    assert sorted(count_turns(r) for r in multi) == [1, 4]
    assert _rounds(multi) == _rounds(recs)
    assert [r["id"] for r in multi if count_turns(r) == 4] == ["rsvqa:RSVQA_LR/LR_split_train/0#multi0"]
    assert multi == build_instruct([("rsvqa", str(root))], InstructConfig(turns="multi", max_turns=4))
    # a *_questions.json names a split; a missing companion file stops the build naming it
    test = build_instruct([("rsvqa", str(root / "LR_split_test_questions.json"))])
    assert {r["id"].split("/")[1] for r in test} == {"LR_split_test"}
    (root / "LR_split_test_answers.json").unlink()
    with pytest.raises(InstructError, match="LR_split_test_answers.json not found"):
        build_instruct([("rsvqa", str(root / "LR_split_test_questions.json"))])
    (root / "Images_LR").rename(root / "elsewhere")
    with pytest.raises(InstructError, match="no image folder"):
        build_instruct([("rsvqa", str(root))])


def test_rsvqa_bad_files_are_one_line_errors(tmp_path, capsys):
    from launch.build_instruct import main

    root = _rsvqa(tmp_path / "hr", prefix="USGS_split")
    (root / "USGS_split_train_answers.json").write_text('{"answers": {"not": "a list"}}')
    assert main(["--input", f"rsvqa:{root}", "--output", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and 'expected {"answers": [...]}' in err.strip().splitlines()[-1]
    assert main(["--input", f"rsvqa:{tmp_path / 'nope'}", "--output", str(tmp_path / "o.json")]) == 2
    assert "not found" in capsys.readouterr().err and not (tmp_path / "o.json").exists()


# ---------------------------------------------------------------------------------------------------------------
# GeoChat-Bench
# ---------------------------------------------------------------------------------------------------------------


def _bench(folder):
    (folder / "bench").mkdir(parents=True, exist_ok=True)
    for name in ("a.png", "P0003_0004.png", "b.jpg", "bench/c.png"):
        Image.fromarray(np.zeros((20, 40, 3), dtype=np.uint8)).save(folder / name)
    box = "{<10><20><30><40>|<45>}"
    lines = [
        {"question_id": "airport/b.jpg", "image": "b.jpg", "text": f"Classes: airport, beach.\n{CLS_SUFFIX}",
         "ground_truth": "airport"},
        {"question_id": 17, "image": "a.png", "text": "Is there a road?", "ground_truth": "yes",
         "category": "presence"},
        {"question_id": 18, "image": "a.png", "text": "How many buildings?", "ground_truth": 4, "category": "count"},
        {"question_id": "r1", "image_id": "P0003_0004", "question": "the white ship at the top", "ground_truth": box,
         "type": "ref", "dataset": "dota", "obj_ids": [3], "size_group": "small"},
        {"question_id": "r2", "image_id": "P0003_0004", "question": "all ships", "ground_truth": [box, box],
         "type": "grounding", "dataset": "dota", "obj_ids": [3, 4], "size_group": "small"},
        {"question_id": "c1", "image_id": "P0003_0004.png", "question": box, "ground_truth": "a white ship"},
        {"question_id": "t1", "image_id": "P0003_0004", "question": "[refer] give me the location of <p>x</p>",
         "ground_truth": box, "type": "ref"},
        {"question_id": "g1", "image_id": "P0003_0004", "question": "the ship", "type": "ref",
         "ground_truth": [[[4, 2], [20, 2], [20, 10], [4, 10]]]},  # pixel corners of one object
        {"question_id": 23, "image": "c.png", "text": "Is it rural?", "ground_truth": "no"},  # IMAGES/<stem>/c.png
        "not json {",
        ["an", "array"],
        {"question_id": 19, "image": "a.png", "text": "Is there water?"},  # no ground_truth
        {"question_id": 17, "image": "a.png", "text": "Again?", "ground_truth": "no"},  # duplicate id
        {"question_id": 20, "image": "missing.png", "text": "Where?", "ground_truth": "here"},
        {"question_id": 24, "image": "../a.png", "text": "Where?", "ground_truth": "here"},
        {"question_id": "r3", "image_id": "P0003_0004", "question": "ships", "ground_truth": {"x": 1}, "type": "ref"},
        {"question_id": 21, "text": "No image?", "ground_truth": "no"},
        {"question_id": 22, "image": "a.png", "ground_truth": "no"},  # no question
    ]
    path = folder / "bench.jsonl"
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n\n" for x in lines))
    return path


def test_geochat_bench_lines_become_training_records(tmp_path):
    path = _bench(tmp_path / "bench")
    stats: dict = {}
    recs = build_instruct([("geochat-bench", str(path))], stats=stats)
    _check_records(recs)
    counts = stats["sources"][f"geochat-bench:{path}"]
    assert counts["unit"] == "line" and counts["read"] == 18 and counts["written"] == 9
    assert counts["skipped"] == {"bad_json": 1, "duplicate_question_id": 1, "image_outside_folder": 1,
                                 "missing_image": 1, "no_ground_truth": 1, "no_image": 1, "no_question": 1,
                                 "not_an_object": 1, "unsupported_ground_truth": 1}
    assert counts["read"] == counts["written"] + sum(counts["skipped"].values())
    by_id = {r["id"].removeprefix("geochat-bench:bench/"): r for r in recs}
    assert qa_pairs(by_id["airport/b.jpg"]) == [(f"Classes: airport, beach.\n{CLS_SUFFIX}", "airport")]  # as given
    assert by_id["airport/b.jpg"]["task"] == "scene"
    assert qa_pairs(by_id["17"]) == [(f"Is there a road?\n{VQA_SUFFIX}", "yes")]  # the bench's instruction line
    assert by_id["18"]["question_type"] == "count" and qa_pairs(by_id["18"])[0][1] == "4"
    assert by_id["23"]["image"] == "bench/c.png"
    r1, r2, c1, t1, g1 = (by_id[k] for k in ("r1", "r2", "c1", "t1", "g1"))
    assert qa_pairs(r1) == [("[refer] Give me the location of <p> the white ship at the top </p>",
                             "{<10><20><30><40>|<45>}")]
    assert r1["task"] == "refer" and r1["image"] == "P0003_0004.png"
    assert r2["task"] == "grounding" and qa_pairs(r2)[0] == ("[grounding]all ships", "{<10><20><30><40>|<45>}" * 2)
    assert c1["task"] == "region_caption" and qa_pairs(c1)[0] == (
        "[identify] What is the object present at {<10><20><30><40>|<45>}", "a white ship")
    assert t1["task"] == "refer" and qa_pairs(t1)[0][0] == "[refer] give me the location of <p>x</p>"  # as given
    assert qa_pairs(g1)[0][1] == "{<10><10><50><50>|<0>}"  # 40 x 20 px image: x 4..20 -> 10..50, y 2..10 -> 10..50
    # multi-turn: the questions of one image in one conversation, ids deterministic
    multi = build_instruct([("geochat-bench", str(path))], InstructConfig(turns="multi", max_turns=4))
    _check_records(multi)
    assert sorted(count_turns(r) for r in multi) == [1, 1, 1, 2, 4]
    assert _rounds(multi) == _rounds(recs)
    assert sorted(r["id"] for r in multi if count_turns(r) > 1) == [
        "geochat-bench:bench/P0003_0004.png#multi0", "geochat-bench:bench/a.png#multi0"]
    assert multi == build_instruct([("geochat-bench", str(path))], InstructConfig(turns="multi", max_turns=4))
    # the images may live elsewhere: bench_images
    moved = tmp_path / "bench.jsonl"
    path.rename(moved)
    recs2 = build_instruct([("geochat-bench", str(moved))], InstructConfig(bench_images=str(tmp_path / "bench")))
    assert len(recs2) == 9
    with pytest.raises(InstructError, match="image folder"):
        build_instruct([("geochat-bench", str(moved))], InstructConfig(bench_images=str(tmp_path / "none")))


def test_repeated_ids_get_a_suffix(tmp_path):
    path = _bench(tmp_path / "bench")
    recs = build_instruct([("geochat-bench", str(path)), ("geochat-bench", str(path))])
    ids = [r["id"] for r in recs]
    assert len(ids) == len(set(ids)) == 18 and sum(i.endswith("~2") for i in ids) == 9


# ---------------------------------------------------------------------------------------------------------------
# tokenisation: loss on the gpt turns only
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from synthetic.tiny_llm import word_vocab
    from vlm_finetune.parts import prepare_tokenizer

    words = word_vocab([SYSTEM, "how many planes are there 3 is there a ship yes give me the location of the plane",
                        "answer the question using a single word or phrase 10 20 30 40"])
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    prepare_tokenizer(tokenizer)
    return tokenizer


def test_three_turn_record_has_labels_on_the_three_gpt_turns_only(tokenizer, tmp_path):
    from vlm_finetune.data import GeoChatDataset

    pairs = [("[refer] give me the location of <p>the plane</p>", "{<10><20><30><40>|<0>}"),
             ("How many planes are there?", "3"), ("Is there a ship?", "yes")]
    rec = make_conversation("img.png#multi0", "img.png", pairs, task="multi", tasks=["refer", "count", "presence"])
    validate_record(rec, 0)
    enc = lambda s: tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    eos = tokenizer.eos_token_id
    for n_image in (1, 16):
        ids, labels = tokenize_with_labels(rec["conversations"], tokenizer, image_tokens=n_image)
        kept = [i for i, v in enumerate(labels) if v != IGNORE_INDEX]
        answers = [enc(a) + [eos] for _, a in pairs]
        assert [labels[i] for i in kept] == [t for a in answers for t in a] == [ids[i] for i in kept]
        # the kept tokens are exactly the three answers, each right after its own "ASSISTANT:"
        spans, pos = [], 1 + len(enc(SYSTEM)) + len(enc(f"USER: {IMAGE_TOKEN}\n{pairs[0][0]} ASSISTANT:")) + n_image - 1
        for k, answer in enumerate(answers):
            spans += list(range(pos, pos + len(answer)))
            pos += len(answer) + (len(enc(f"USER: {pairs[k + 1][0]} ASSISTANT:")) if k + 1 < len(pairs) else 0)
        assert kept == spans and pos == len(ids)
        assert ids.count(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)) == n_image
    # the fine-tuning dataset (vlm_finetune/data.py) tokenises the record the same way
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "img.png")
    processor = SimpleNamespace(tokenizer=tokenizer, image_processor=SimpleNamespace(image_mean=[0.5] * 3))
    ds = GeoChatDataset([rec], tmp_path, processor, max_length=4096, image_seq_length=16)
    _, ds_ids, ds_labels = ds.items[0]
    assert (ds_ids, ds_labels) == tokenize_with_labels(rec["conversations"], tokenizer, image_tokens=16)
