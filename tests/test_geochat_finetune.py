"""GeoChat fine-tuning: vicuna_v1 template, loss mask, instruction data, dataset, LoRA training (CPU, tiny models)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

from rs_common.formats.conversation import (
    IGNORE_INDEX,
    SYSTEM,
    build_prompt,
    tokenize_with_labels,
)
from vlm_finetune.data import (
    GeoChatCollator,
    GeoChatDataset,
    expand2square,
    mean_colour,
)
from vlm_finetune.instruct import (
    InstructError,
    build_instruct,
    read_instruct_json,
)

TINY_TEXTS = ["describe the image", "many planes", "what is this", "a green field", "how many", "two"]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    """A rs-tiny CLIP tower (32 px, patch 8: 16 image tokens) + a tiny LLaMA whose vocabulary covers the shared-data
    instruction texts, assembled and saved as an HF Llava GeoChat dir."""
    import clip_pretrain  # noqa: F401 - registers rs-tiny
    from rs_common.paths import shared_data_dir
    from vlm_finetune.export import export_vision_tower
    from vlm_finetune.geochat import assemble_geochat, save_geochat
    from synthetic.tiny_llm import word_vocab, write_tiny_llm

    root = tmp_path_factory.mktemp("ft")
    texts = [SYSTEM, *TINY_TEXTS]
    data = shared_data_dir()
    instruct = []
    if (data / "README.md").exists():
        instruct = build_instruct([("dota", str(data / "detection/dota")), ("folders", str(data / "scenes/aid"))],
                                  seed=0, image_root=data)
        texts += [t["value"] for r in instruct for t in r["conversations"]]
    tower = export_vision_tower(None, "rs-tiny", 32, root / "tower")
    llm = write_tiny_llm(root / "llm", word_vocab(texts), hidden=64, layers=2, seed=0)
    model, processor = assemble_geochat(tower, llm)  # write_tiny_llm sharpens the random lm_head (see its comment)
    save_geochat(model, processor, root / "geochat")
    return {"root": root, "model": root / "geochat", "instruct": instruct, "data": data}


@pytest.fixture(scope="module")
def processor(tiny_dirs):
    from vlm_finetune.geochat import load_geochat

    return load_geochat(tiny_dirs["model"]).processor


# ---------------------------------------------------------------------------------------------------------------
# template and mask
# ---------------------------------------------------------------------------------------------------------------


def test_vicuna_v1_template_is_exact():
    turns = [{"from": "human", "value": "<image>\nq1"}, {"from": "gpt", "value": "a1"},
             {"from": "human", "value": "q2"}, {"from": "gpt", "value": "a2"}]
    assert build_prompt(turns) == SYSTEM + " USER: <image>\nq1 ASSISTANT: a1</s>USER: q2 ASSISTANT: a2</s>"
    assert SYSTEM == ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                      "helpful, detailed, and polite answers to the user's questions.")
    assert build_prompt(["q"], add_generation_prompt=True) == SYSTEM + " USER: q ASSISTANT:"
    with pytest.raises(ValueError, match="turn 1"):
        build_prompt([{"from": "human", "value": "a"}, {"from": "human", "value": "b"}])


def test_label_mask_exact_positions(processor):
    tok = processor.tokenizer
    turns = [{"from": "human", "value": "<image>\ndescribe the image"}, {"from": "gpt", "value": "many planes"},
             {"from": "human", "value": "how many"}, {"from": "gpt", "value": "two"}]
    ids, labels = tokenize_with_labels(turns, tok, image_tokens=1)
    # piece tokenisation agrees with tokenising the whole rendered prompt (image token = 1 placeholder)
    assert ids == [tok.bos_token_id] + tok.encode(build_prompt(turns), add_special_tokens=False)
    enc = lambda s: tok.encode(s, add_special_tokens=False)
    n_sys = len(enc(SYSTEM))
    first = 1 + n_sys + len(enc("USER: <image>\ndescribe the image ASSISTANT:"))
    a1 = enc("many planes") + [tok.eos_token_id]
    second = first + len(a1) + len(enc("USER: how many ASSISTANT:"))
    a2 = enc("two") + [tok.eos_token_id]
    kept = [i for i, v in enumerate(labels) if v != IGNORE_INDEX]
    assert kept == list(range(first, first + len(a1))) + list(range(second, second + len(a2)))
    assert [labels[i] for i in kept] == a1 + a2 == [ids[i] for i in kept]
    assert len(ids) == second + len(a2)
    # with the image expanded to N tokens everything after shifts by N - 1
    ids16, labels16 = tokenize_with_labels(turns, tok, image_tokens=16)
    assert len(ids16) == len(ids) + 15
    image_id = tok.convert_tokens_to_ids("<image>")
    assert ids16.count(image_id) == 16 and [i for i, v in enumerate(labels16) if v != IGNORE_INDEX] == [
        k + 15 for k in kept]


# ---------------------------------------------------------------------------------------------------------------
# dataset
# ---------------------------------------------------------------------------------------------------------------


def _record(i, image="img.png", answer="many planes"):
    return {"id": f"r{i}", "image": image, "conversations": [
        {"from": "human", "value": "<image>\ndescribe the image"}, {"from": "gpt", "value": answer}]}


def test_pad_to_square_uses_the_processor_mean_colour(processor):
    ip = processor.image_processor
    img = Image.fromarray(np.full((10, 30, 3), 255, dtype=np.uint8))
    sq = expand2square(img, mean_colour(ip))
    assert sq.size == (30, 30)
    arr = np.asarray(sq)
    assert tuple(arr[0, 0]) == tuple(int(x * 255) for x in ip.image_mean) == (122, 116, 104)
    assert (arr[10:20] == 255).all() and tuple(arr[29, 29]) == (122, 116, 104)


def test_dataset_expands_image_tokens_and_truncation_never_cuts_them(processor, tmp_path):
    Image.fromarray(np.zeros((20, 40, 3), dtype=np.uint8)).save(tmp_path / "img.png")
    long_answer = " ".join(["many planes"] * 50)
    recs = [_record(0), _record(1, answer=long_answer)]
    n_img = 16
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    full = GeoChatDataset(recs, tmp_path, processor, max_length=4096)
    assert full.image_seq_length == n_img and len(full) == 2 and full.truncated == 0
    item = full[0]
    assert int((item["input_ids"] == image_id).sum()) == n_img and item["pixel_values"].shape == (3, 32, 32)
    start = int((item["input_ids"] == image_id).nonzero()[0])
    limit = start + n_img + 3  # room for the image and 3 text tokens
    cut = GeoChatDataset(recs, tmp_path, processor, max_length=limit)
    assert len(cut) == 2 and cut.truncated == 2 and not any(cut.dropped.values())
    for k in range(2):
        ids = cut[k]["input_ids"]
        assert len(ids) == limit and int((ids == image_id).sum()) == n_img
        assert torch.equal(ids, full[k]["input_ids"][:limit])
    tiny = GeoChatDataset(recs, tmp_path, processor, max_length=start + n_img - 1)  # image tokens alone don't fit
    assert len(tiny) == 0 and tiny.dropped == {"missing_image": [], "unreadable_image": [],
                                               "image_tokens_exceed_max_length": ["r0", "r1"]}
    batch = GeoChatCollator(processor.tokenizer.pad_token_id)([full[0], full[1]])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["attention_mask"][0].sum() == len(full[0]["input_ids"])
    assert (batch["labels"][0, len(full[0]["input_ids"]):] == IGNORE_INDEX).all()
    assert batch["pixel_values"].shape == (2, 3, 32, 32)


# ---------------------------------------------------------------------------------------------------------------
# instruction data
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad,match", [
    ({"id": "x7", "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]},
     "record 1 \\(id 'x7'\\): missing 'image'"),
    ({"id": "x8", "image": "a.png", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
     "record 1 \\(id 'x8'\\): the first human turn has no '<image>'"),
    ({"id": "x9", "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nq"},
                                                      {"from": "human", "value": "a"}]},
     "record 1 \\(id 'x9'\\): turn 1 is from 'human'"),
])
def test_read_instruct_json_errors_name_the_record(tmp_path, bad, match):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([_record(0), bad]))
    with pytest.raises(InstructError, match=match):
        read_instruct_json(path)
    path.write_text(json.dumps([_record(0)]))
    assert read_instruct_json(path)[0]["id"] == "r0"


def test_build_instruct_is_deterministic_and_has_every_task(shared_data, tmp_path):
    from launch import build_instruct as cli

    inputs = [("dota", str(shared_data / "detection/dota")), ("folders", str(shared_data / "scenes/aid")),
              ("captions", str(shared_data / "captions/ucm"))]
    a = build_instruct(inputs, seed=3)
    assert sorted(map(json.dumps, a)) == sorted(map(json.dumps, build_instruct(list(reversed(inputs)), seed=3)))
    assert a != build_instruct(inputs, seed=4)  # the seed matters
    assert a == build_instruct(inputs, seed=3)
    assert {r["task"] for r in a} == {"refer", "grounding", "identify", "region_caption", "count", "presence",
                                      "scene", "caption"}
    by_task = {r["task"]: r for r in a}
    assert by_task["refer"]["conversations"][0]["value"].startswith("<image>\n[refer] ")
    assert "<p>" in by_task["grounding"]["conversations"][1]["value"] and "{<" in by_task["grounding"][
        "conversations"][1]["value"]
    assert by_task["scene"]["conversations"][0]["value"].endswith(
        "Classify the image from the following classes. Answer in one word or a short phrase.")
    for r in a:  # image paths relative to the common root (shared_data)
        assert (shared_data / r["image"]).is_file()
    out = tmp_path / "i.json"
    assert cli.main(["--input", *[f"{f}:{p}" for f, p in inputs], "--output", str(out), "--seed", "3"]) == 0
    assert read_instruct_json(out) == a
    report = (tmp_path / "i_report.html").read_text()  # examples drawn on their images, every task shown
    assert report.count("<img src=\"data:image/jpeg;base64,") >= 8 and all(t in report for t in ("refer", "grounding"))


# ---------------------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------------------


def test_lora_targets_exclude_lm_head_and_vision_tower(tiny_dirs):
    from vlm_finetune.geochat import load_geochat
    from vlm_finetune.train import FinetuneConfig, lora_target_names, prepare_model

    model, _ = load_geochat(tiny_dirs["model"])
    assert lora_target_names(model) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert not any("multi_modal_projector" in n for n, p in prepare_model(
        load_geochat(tiny_dirs["model"]).model, FinetuneConfig(model="m", data="d", images="i", output="o"),
    ).named_parameters() if p.requires_grad)  # frozen by default, as GeoChat's released script
    peft_model = prepare_model(model, FinetuneConfig(model="m", data="d", images="i", output="o", train_projector=True))
    lora = {n for n, _ in peft_model.named_modules() if n.endswith("lora_A")}
    assert lora and all(".language_model." in n for n in lora) and not any("lm_head" in n for n in lora)
    assert len(lora) == 7 * 2
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert not any("vision_tower" in n for n in trainable)
    assert any("multi_modal_projector" in n for n in trainable)
    assert all("lora_" in n or "multi_modal_projector" in n for n in trainable)


def test_tiny_geochat_overfits_shared_data_samples(tiny_dirs, tmp_path):
    """LEARNING TEST: 6 instruction samples from ../shared/data; train() (HF Trainer + LoRA + projector) drives the
    loss below 0.05x its start and greedy decoding of the merged model reproduces a trained answer exactly."""
    if not tiny_dirs["instruct"]:
        pytest.skip("shared data absent")
    from rs_common.formats.conversation import tokenize_with_labels as twl
    from vlm_finetune.data import load_image
    from vlm_finetune.geochat import load_geochat
    from vlm_finetune.train import FinetuneConfig, train

    picked = [r for r in tiny_dirs["instruct"] if r["task"] in ("refer", "identify", "count")]
    picked += [r for r in tiny_dirs["instruct"] if r["task"] == "scene"][:2]
    assert len(picked) == 8
    data = tmp_path / "train.json"
    data.write_text(json.dumps(picked))
    cfg = FinetuneConfig(model=str(tiny_dirs["model"]), data=str(data), images=str(tiny_dirs["data"]),
                         output=str(tmp_path / "out"), learning_rate=3e-3, max_steps=60, batch_size=8,
                         warmup_ratio=0.0, lr_scheduler="constant", logging_steps=1, save_steps=1000, num_workers=0,
                         max_length=512)
    t0 = time.time()
    summary = train(cfg)
    elapsed = time.time() - t0
    losses = summary["losses"]
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.4f} ({losses[-1] / losses[0]:.4f}x) in {elapsed:.1f} s")
    assert losses[-1] < 0.05 * losses[0]  # speed is bench_finetune's job, not a test's: no time limit here
    assert (tmp_path / "out/adapter/adapter_config.json").exists()
    merged, processor = load_geochat(tmp_path / "out/merged")
    merged.eval()
    tok = processor.tokenizer
    hits = 0
    for rec in picked[:3]:
        question, answer = rec["conversations"][0], rec["conversations"][1]["value"]
        ids, _ = twl([question], tok, image_tokens=merged.config.image_seq_length)
        image = load_image(tiny_dirs["data"] / rec["image"], True, processor.image_processor)
        pixels = processor.image_processor(images=image, return_tensors="pt")["pixel_values"]
        want = tok.encode(answer, add_special_tokens=False) + [tok.eos_token_id]
        with torch.no_grad():
            out = merged.generate(input_ids=torch.tensor([ids]), pixel_values=pixels,
                                  attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                  max_new_tokens=len(want) + 2, do_sample=False)
        got = out[0, len(ids):].tolist()[:len(want)]
        hits += got == want
    print(f"greedy generation reproduced {hits}/3 trained answers exactly")
    assert hits >= 2, "greedy generation reproduced fewer than 2 of 3 trained answers"


def test_cli_trains_checkpoints_and_resumes(tiny_dirs, tmp_path, capsys):
    if not tiny_dirs["instruct"]:
        pytest.skip("shared data absent")
    from launch import finetune_geochat as cli

    data = tmp_path / "train.json"
    data.write_text(json.dumps([r for r in tiny_dirs["instruct"] if r["task"] == "count"]))
    base = ["--model", str(tiny_dirs["model"]), "--data", str(data), "--images", str(tiny_dirs["data"]),
            "--output", str(tmp_path / "out"), "--batch-size", "2", "--save-steps", "2", "--num-workers", "0",
            "--lora-r", "8", "--merge", "false"]
    assert cli.main([*base, "--max-steps", "2"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["steps"] == 2 and (tmp_path / "out/checkpoint-2").is_dir() and "merged" not in first
    assert cli.main([*base, "--max-steps", "4", "--resume", "last"]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["steps"] == 4 and (tmp_path / "out/checkpoint-4").is_dir()
    cfg = json.loads((tmp_path / "out/adapter/adapter_config.json").read_text())
    assert cfg["r"] == 8 and "lm_head" not in json.dumps(cfg["target_modules"])
    with pytest.raises(SystemExit) as exc:  # a missing --model is a usage error (exit 2), not a traceback
        cli.main(["--data", str(data)])
    assert exc.value.code == 2
    assert "--model is required" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# checks before the model loads, dropped records, bad images at train time, the output lock
# ---------------------------------------------------------------------------------------------------------------


def _records_with_bad_images(tmp_path):
    """Two good images, one missing, one that is not an image, one whose header opens but whose data is cut."""
    images = tmp_path / "imgs"
    images.mkdir()
    for name in ("good0.png", "good1.png"):
        Image.fromarray(np.full((20, 30, 3), 200, dtype=np.uint8)).save(images / name)
    (images / "notes.png").write_text("not an image")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(images / "cut.png")
    data = (images / "cut.png").read_bytes()
    (images / "cut.png").write_bytes(data[: len(data) // 3])
    recs = [_record(0, "good0.png"), _record(1, "missing.png"), _record(2, "notes.png"), _record(3, "good1.png"),
            _record(4, "cut.png"), _record(5, "good0.png")]
    return images, recs


def test_missing_and_unreadable_images_are_dropped_and_counted_at_load(processor, tmp_path, caplog):
    images, recs = _records_with_bad_images(tmp_path)
    with caplog.at_level("WARNING"):
        ds = GeoChatDataset(recs, images, processor, max_length=4096)
    assert ds.dropped == {"missing_image": ["r1"], "unreadable_image": ["r2"], "image_tokens_exceed_max_length": []}
    assert [rec["id"] for rec, _, _ in ds.items] == ["r0", "r3", "r4", "r5"]  # cut.png's header opens: kept
    assert "missing.png" in caplog.text and "notes.png" in caplog.text


def test_an_image_that_fails_to_decode_is_replaced_and_logged_once(processor, tmp_path, caplog):
    images, recs = _records_with_bad_images(tmp_path)
    ds = GeoChatDataset(recs, images, processor, max_length=4096)
    bad = [rec["id"] for rec, _, _ in ds.items].index("r4")
    with caplog.at_level("WARNING"):
        first = ds[bad]
        again = ds[bad]
    replacement = ds[(bad + 1) % len(ds)]
    assert torch.equal(first["input_ids"], replacement["input_ids"]) and first["pixel_values"].shape == (3, 32, 32)
    assert torch.equal(again["pixel_values"], first["pixel_values"])
    assert caplog.text.count("cut.png does not decode") == 1
    with pytest.raises(IndexError):
        ds[len(ds)]


def _cli_base(tiny_dirs, tmp_path, data, images):
    return ["--model", str(tiny_dirs["model"]), "--data", str(data), "--images", str(images), "--output",
            str(tmp_path / "out"), "--num-workers", "0", "--batch-size", "2"]


def test_no_usable_image_fails_before_the_model_loads(tiny_dirs, tmp_path, capsys, monkeypatch):
    from launch import finetune_geochat as cli
    from vlm_finetune import geochat
    from vlm_finetune.train import FinetuneConfig, FinetuneError, train

    monkeypatch.setattr(geochat, "load_geochat", lambda *a, **k: pytest.fail("model loaded before the data checks"))
    images = tmp_path / "imgs"
    images.mkdir()
    data = tmp_path / "train.json"
    data.write_text(json.dumps([_record(0, "gone/a.png"), _record(1, "gone/b.png")]))
    with pytest.raises(FinetuneError) as exc:
        train(FinetuneConfig(model=str(tiny_dirs["model"]), data=str(data), images=str(images),
                             output=str(tmp_path / "out")))
    msg = str(exc.value)
    assert str(data) in msg and str(images / "gone" / "a.png") in msg and "missing_image 2" in msg
    assert cli.main(_cli_base(tiny_dirs, tmp_path, data, images)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and [line for line in err.splitlines() if line.startswith("error:")] == [f"error: {msg}"]
    assert not (tmp_path / "out").exists()  # nothing written (not even the lock) before the inputs are known good


@pytest.mark.parametrize("flag,value,says", [
    ("--learning-rate", "0", "learning_rate must be > 0"), ("--epochs", "0", "epochs must be > 0"),
    ("--max-steps", "0", "max_steps must be >= 1, or -1"), ("--max-steps", "-2", "max_steps must be >= 1, or -1"),
    ("--logging-steps", "0", "logging_steps must be >= 1"), ("--save-steps", "0", "save_steps must be >= 1"),
    ("--save-total-limit", "-1", "save_total_limit must be >= 0"), ("--num-workers", "-1", "num_workers must be >= 0"),
    ("--lora-r", "0", "lora_r must be >= 1"), ("--lora-alpha", "0", "lora_alpha must be > 0"),
    ("--lora-dropout", "1", "lora_dropout must be in [0, 1)"), ("--weight-decay", "-0.1", "weight_decay must be >= 0"),
    ("--seed", "-1", "seed must be >= 0"), ("--learning-rate", "nan", "finite number"),
])
def test_settings_are_validated_at_parse(flag, value, says, capsys):
    from launch import finetune_geochat as cli

    with pytest.raises(SystemExit) as exc:
        cli.main(["--model", "m", "--data", "d.json", "--images", "i", "--output", "o", flag, value])
    assert exc.value.code == 2 and says in capsys.readouterr().err


def test_bad_paths_are_one_line_errors_before_the_model_loads(tiny_dirs, tmp_path, capsys, monkeypatch):
    from launch import finetune_geochat as cli
    from vlm_finetune import geochat

    monkeypatch.setattr(geochat, "load_geochat", lambda *a, **k: pytest.fail("model loaded before the checks"))
    images = tmp_path / "imgs"
    images.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(images / "img.png")
    data = tmp_path / "train.json"
    data.write_text(json.dumps([_record(0)]))
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "bad.json").write_text("{oops")
    (tmp_path / "obj.json").write_text('{"records": []}')
    base = _cli_base(tiny_dirs, tmp_path, data, images)
    cases = [
        (["--data", str(tmp_path / "nope.json")], "data file not found"),
        (["--data", str(tmp_path)], "is a folder"),
        (["--data", str(tmp_path / "bad.json")], "not valid json"),
        (["--data", str(tmp_path / "obj.json")], "the top level must be a list of records"),
        (["--images", str(tmp_path / "nope")], "no such folder"),
        (["--images", str(tmp_path / "file.txt")], "a file, not a folder"),
        (["--output", str(tmp_path / "file.txt")], "exists and is not a folder"),
        (["--model", str(tmp_path / "nope")], "not found"),
        (["--model", str(images)], "no config.json"),
        (["--deepspeed", str(tmp_path / "ds.json")], "ds.json: no such json file"),
        (["--lr-scheduler", "zigzag"], "'zigzag' is not one of"),
        (["--resume", "last"], "no checkpoint-*"),
    ]
    for extra, says in cases:
        assert cli.main(base + extra) == 2, extra
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert "Traceback" not in err and len(lines) == 1 and says in lines[0], (extra, err)


def test_a_second_run_on_a_held_output_is_refused(tiny_dirs, tmp_path, capsys, monkeypatch):
    from launch import finetune_geochat as cli
    from rs_common.guards import RunLock
    from vlm_finetune import geochat
    from vlm_finetune.train import output_lock

    images = tmp_path / "imgs"
    images.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(images / "img.png")
    data = tmp_path / "train.json"
    data.write_text(json.dumps([_record(0)]))
    monkeypatch.setattr(geochat, "load_geochat", lambda *a, **k: pytest.fail("model loaded on a busy output"))
    with RunLock(tmp_path / "out", what="fine-tuning run"):  # a live run holds the folder
        assert cli.main(_cli_base(tiny_dirs, tmp_path, data, images)) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "in use by another fine-tuning run" in err and str(tmp_path / "out") in err
        monkeypatch.setenv("RANK", "1")  # only world process zero takes the lock
        with output_lock(tmp_path / "out"):
            pass


def test_dropped_records_are_reported_and_save_total_limit_0_keeps_all(tiny_dirs, tmp_path, capsys):
    from launch import finetune_geochat as cli

    images, recs = _records_with_bad_images(tmp_path)
    data = tmp_path / "train.json"
    data.write_text(json.dumps(recs))
    assert cli.main(_cli_base(tiny_dirs, tmp_path, data, images) + [
        "--max-steps", "3", "--save-steps", "1", "--save-total-limit", "0", "--lora-r", "4", "--merge", "false"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["steps"] == 3 and printed["samples"] == 4
    assert printed["dropped"] == {"missing_image": 1, "unreadable_image": 1, "image_tokens_exceed_max_length": 0}
    summary = json.loads((tmp_path / "out" / "finetune.json").read_text())
    assert summary["dropped_examples"] == {"missing_image": ["r1"], "unreadable_image": ["r2"]}
    assert summary["dropped_first"]["missing_image"] == str(images / "missing.png")
    assert sorted(p.name for p in (tmp_path / "out").glob("checkpoint-*")) == [
        "checkpoint-1", "checkpoint-2", "checkpoint-3"]  # 0 = keep every checkpoint


def test_build_instruct_cli_bad_inputs(tmp_path, capsys):
    from launch import build_instruct as cli

    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    out = tmp_path / "i.json"
    cases = [
        (["--input", f"folders:{tmp_path / 'nope'}", "--output", str(out)], "not found"),
        (["--input", f"nope:{tmp_path}", "--output", str(out)], "unknown dataset format"),
        (["--input", f"folders:{tmp_path / 'file.txt'}", "--output", str(out)], "not a file"),
        (["--input", f"folders:{tmp_path / 'empty'}", "--output", str(out)], "no instruction records"),
        (["--input", f"folders:{tmp_path / 'empty'}", "--output", str(tmp_path / 'empty')], "is a folder"),
        (["--input", f"folders:{tmp_path / 'empty'}", "--output", str(out), "--image-root", str(tmp_path / "x")],
         "no such folder"),
    ]
    for argv, says in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert "Traceback" not in err and len(lines) == 1 and says in lines[0], (argv, err)
    assert not out.exists()
    with pytest.raises(SystemExit) as exc:
        cli.main(["--input", f"folders:{tmp_path}", "--output", str(out), "--max-objects", "0"])
    assert exc.value.code == 2 and "max_objects must be >= 1" in capsys.readouterr().err
