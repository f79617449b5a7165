"""GeoChat fine-tuning: vicuna_v1 template, loss mask, instruction data, dataset, LoRA training (CPU, tiny models)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

from vlm_finetune.conversation import (
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
    from shards.paths import shared_data_dir
    from vlm_finetune.export import export_vision_tower
    from vlm_finetune.geochat import assemble_geochat, save_geochat
    from vlm_finetune.tiny import word_vocab, write_tiny_llm

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

    return load_geochat(tiny_dirs["model"])[1]


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
    assert len(cut) == 2 and cut.truncated == 2 and not cut.dropped
    for k in range(2):
        ids = cut[k]["input_ids"]
        assert len(ids) == limit and int((ids == image_id).sum()) == n_img
        assert torch.equal(ids, full[k]["input_ids"][:limit])
    tiny = GeoChatDataset(recs, tmp_path, processor, max_length=start + n_img - 1)  # image tokens alone don't fit
    assert len(tiny) == 0 and tiny.dropped == ["r0", "r1"]
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
    peft_model = prepare_model(model, FinetuneConfig(model="m", data="d", images="i", output="o"))
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
    from vlm_finetune.conversation import tokenize_with_labels as twl
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
    assert losses[-1] < 0.05 * losses[0]
    assert elapsed < 60
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
