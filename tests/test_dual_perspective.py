"""Dual-perspective GeoChat (INF-LLaVA's input path, ``--high-res dual-perspective``): crops against their
definitions, the tiny model's forward/backward/generation at N = 2 and 3, its token count, save/load, the plain path
unchanged, and a short LoRA run through launch/finetune_geochat.py (CPU, tiny models)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vlm_finetune.dual_crops import (
    dual_perspective_images,
    global_crops,
    interleave_global,
    local_crops,
    sub_image_count,
    tile_local,
)

PROMPT = "USER: <image>\ndescribe the image ASSISTANT: many planes"
WORDS = ["describe", "the", "image", "many", "planes", "what", "is", "this", "a", "green", "field"]


def _image(seed: int = 0, size=(50, 70)) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(*size, 3) * 255).astype("uint8"))


# ---------------------------------------------------------------------------------------------------------------
# cropping: the definitions, exactly
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grid", [2, 3])
def test_crops_match_their_definitions_and_invert_exactly(grid):
    side = 4
    x = torch.randn(2, 3, grid * side, grid * side)
    local, glob = local_crops(x, grid), global_crops(x, grid)
    assert local.shape == glob.shape == (2, grid * grid, 3, side, side)
    for r in range(grid):
        for c in range(grid):
            k = r * grid + c
            assert torch.equal(local[:, k], x[:, :, r * side:(r + 1) * side, c * side:(c + 1) * side])
            assert torch.equal(glob[:, k], x[:, :, r::grid, c::grid])  # global crop (i, j) = x[:, :, i::N, j::N]
    assert torch.equal(tile_local(local, grid), x)  # local crops re-tile to the image
    assert torch.equal(interleave_global(glob, grid), x)  # global crops interleave back to it
    resized = torch.randn(2, 3, side, side)
    subs = dual_perspective_images(resized, x, grid)
    assert subs.shape == (2, sub_image_count(grid), 3, side, side)
    assert torch.equal(subs[:, 0], resized) and torch.equal(subs[:, 1:1 + grid * grid], local)
    assert torch.equal(subs[:, 1 + grid * grid:], glob)
    with pytest.raises(ValueError, match="does not split"):
        local_crops(torch.randn(1, 3, 10, 10), 3)


# ---------------------------------------------------------------------------------------------------------------
# tiny models
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A rs-tiny CLIP tower (32 px, patch 8: 16 image tokens), a tiny LLaMA, and the plain GeoChat saved from them."""
    import clip_pretrain  # noqa: F401 - registers rs-tiny
    from rs_common.formats.conversation import SYSTEM
    from synthetic.tiny_llm import word_vocab, write_tiny_llm
    from vlm_finetune.export import export_vision_tower
    from vlm_finetune.geochat import assemble_geochat

    root = tmp_path_factory.mktemp("dual")
    tower = export_vision_tower(None, "rs-tiny", 32, root / "tower")
    llm = write_tiny_llm(root / "llm", word_vocab([SYSTEM, *WORDS, "USER: ASSISTANT:"]), hidden=64, layers=2, seed=0)
    assemble_geochat(tower, llm).save(root / "plain")
    return {"root": root, "tower": tower, "llm": llm, "plain": root / "plain"}


def _dual(parts, grid: int, gate: float | None = 0.5):
    """A dual-perspective GeoChat assembled from the tiny parts; ``gate`` set (so every new weight matters)."""
    from vlm_finetune.geochat import assemble_geochat

    chat = assemble_geochat(parts["tower"], parts["llm"], high_res="dual-perspective", high_res_grid=grid, seed=0)
    if gate is not None:
        with torch.no_grad():
            chat.model.model.dual_perspective.gate.fill_(gate)
    return chat


def _inputs(chat, image, prompt: str = PROMPT):
    from vlm_finetune.evaluate import prompt_inputs
    from vlm_finetune.image_prep import model_high_res_grid

    return prompt_inputs(chat.processor, image, prompt, "pad", model_high_res_grid(chat.model))


def test_high_res_pixel_values_are_the_plain_image_and_the_crops_of_the_same_preprocessing(parts):
    from vlm_finetune.geochat import load_geochat
    from vlm_finetune.image_prep import pixel_values, prepare_image

    processor = load_geochat(parts["plain"]).processor
    image = _image()
    plain = pixel_values(image, processor, "pad")
    dual = pixel_values(image, processor, "pad", high_res_grid=3)
    assert plain.shape == (1, 3, 32, 32) and dual.shape == (1, 19, 3, 32, 32)
    assert torch.equal(dual[:, 0], plain)  # sub-image 0 is exactly plain GeoChat's input
    high = processor.image_processor(images=prepare_image(image, processor, "pad"), size={"shortest_edge": 96},
                                     crop_size={"height": 96, "width": 96}, return_tensors="pt")["pixel_values"]
    assert torch.equal(tile_local(dual[:, 1:10], 3), high) and torch.equal(interleave_global(dual[:, 10:], 3), high)


@pytest.mark.parametrize("grid", [2, 3])
def test_forward_backward_generation_and_token_count(parts, grid):
    from vlm_finetune.geochat import load_geochat

    plain = load_geochat(parts["plain"])
    chat = _dual(parts, grid)
    model = chat.model
    assert type(model).__name__ == "DualPerspectiveLlava"
    inputs = _inputs(chat, _image(grid))
    assert inputs["pixel_values"].shape == (1, sub_image_count(grid), 3, 32, 32)
    n_image = int((inputs["input_ids"] == model.config.image_token_index).sum())
    plain_inputs = _inputs(plain, _image(grid))
    assert n_image == int((plain_inputs["input_ids"] == plain.model.config.image_token_index).sum()) == 16
    assert model.config.image_seq_length == plain.model.config.image_seq_length == 16
    feats = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
    assert len(feats) == 1 and feats[0].shape == (16, model.config.text_config.hidden_size)

    model.train()
    model.model.vision_tower.requires_grad_(False)
    out = model(**inputs, labels=inputs["input_ids"])
    out.loss.backward()
    dual_grads = {n: p.grad for n, p in model.model.dual_perspective.named_parameters()}
    assert all(g is not None and g.abs().sum() > 0 for g in dual_grads.values()), \
        [n for n, g in dual_grads.items() if g is None or g.abs().sum() == 0]
    assert all(p.grad is None for p in model.model.vision_tower.parameters())

    model.eval()
    ask = _inputs(chat, _image(grid), "USER: <image>\ndescribe ASSISTANT:")
    with torch.no_grad():
        generated = model.generate(**ask, max_new_tokens=3, do_sample=False)
    assert ask["input_ids"].shape[1] < generated.shape[1] <= ask["input_ids"].shape[1] + 3


def test_at_initialisation_the_dual_model_answers_as_plain_geochat(parts):
    """Zero gate: the fused features are the resized view's, so the logits are plain GeoChat's exactly."""
    from vlm_finetune.dual_perspective import enable_dual_perspective
    from vlm_finetune.geochat import load_geochat

    plain = load_geochat(parts["plain"])
    image = _image(4)
    with torch.no_grad():
        ref = plain.model(**_inputs(plain, image)).logits
        dual = enable_dual_perspective(plain.model, seed=0)
        assert float(dual.model.dual_perspective.gate.abs().sum()) == 0
        got = dual(**_inputs(type(plain)(dual, plain.processor), image)).logits
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)


def test_save_load_round_trip_rebuilds_the_module_with_the_same_logits(parts, tmp_path):
    from vlm_finetune.geochat import load_geochat

    chat = _dual(parts, 2, gate=None)
    with torch.no_grad():
        for p in chat.model.model.dual_perspective.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    chat.save(tmp_path / "dual")
    saved = json.loads((tmp_path / "dual/config.json").read_text())
    assert saved["high_res"] == "dual-perspective" and saved["high_res_grid"] == 2 and saved["high_res_hidden"] == 64
    loaded = load_geochat(tmp_path / "dual")
    assert type(loaded.model).__name__ == "DualPerspectiveLlava" and loaded.model.model.dual_perspective.grid == 2
    before = chat.model.model.dual_perspective.state_dict()
    after = loaded.model.model.dual_perspective.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    image = _image(5)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(**_inputs(loaded, image)).logits,
                                   chat.model.eval()(**_inputs(chat, image)).logits, rtol=0, atol=0)


def test_plain_path_is_unchanged_when_the_option_is_off(parts):
    """Off (the default, or "none"): the model is transformers' own LlavaForConditionalGeneration, the image one
    (1, 3, S, S) tensor, and the logits those of LlavaForConditionalGeneration.from_pretrained on the same folder."""
    from transformers import LlavaForConditionalGeneration

    from vlm_finetune.geochat import assemble_geochat, load_geochat

    chat = load_geochat(parts["plain"])
    assert type(chat.model) is LlavaForConditionalGeneration and not hasattr(chat.model.config, "high_res")
    torch.manual_seed(0)
    none = assemble_geochat(parts["tower"], parts["llm"], high_res="none")
    assert type(none.model) is LlavaForConditionalGeneration
    image = _image(6)
    inputs = _inputs(chat, image)
    assert inputs["pixel_values"].shape == (1, 3, 32, 32)
    reference = LlavaForConditionalGeneration.from_pretrained(str(parts["plain"])).eval()
    with torch.no_grad():
        torch.testing.assert_close(chat.model(**inputs).logits, reference(**inputs).logits, rtol=0, atol=0)
    with pytest.raises(Exception, match="pixel_values"):
        _dual(parts, 2).model(**inputs)  # a dual model refuses a plain (1, 3, S, S) input, naming the fix


def test_lora_finetune_with_dual_perspective_trains_the_module_not_the_tower(parts, tmp_path, capsys):
    from launch import finetune_geochat as cli
    from vlm_finetune.dual_perspective import DualPerspectiveSettings, enable_dual_perspective
    from vlm_finetune.evaluate import answer_question, load_for_inference
    from vlm_finetune.geochat import load_geochat

    images = tmp_path / "images"
    images.mkdir()
    records = []
    for i in range(4):
        _image(10 + i, (40 + 8 * i, 48)).save(images / f"{i}.png")
        records.append({"id": str(i), "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nwhat is this"}, {"from": "gpt", "value": "a green field"}]})
    data = tmp_path / "train.json"
    data.write_text(json.dumps(records))
    out = tmp_path / "out"
    assert cli.main(["--model", str(parts["plain"]), "--data", str(data), "--images", str(images), "--output",
                     str(out), "--high-res", "dual-perspective", "--high-res-grid", "2", "--max-steps", "2",
                     "--batch-size", "2", "--num-workers", "0", "--lora-r", "4", "--learning-rate", "1e-2",
                     "--warmup-ratio", "0", "--logging-steps", "1", "--save-steps", "100"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["high_res_grid"] == 2
    merged = load_geochat(out / "merged").model
    assert type(merged).__name__ == "DualPerspectiveLlava" and merged.config.high_res_grid == 2
    base = load_geochat(parts["plain"]).model
    tower_before, tower_after = base.model.vision_tower.state_dict(), merged.model.vision_tower.state_dict()
    assert all(torch.equal(tower_before[k], tower_after[k]) for k in tower_before)  # the tower stayed frozen
    init = enable_dual_perspective(base, DualPerspectiveSettings(grid=2), seed=0).model.dual_perspective.state_dict()
    trained = merged.model.dual_perspective.state_dict()
    changed = {k for k in init if not torch.equal(init[k], trained[k])}
    assert {"gate", "ffn_crop.0.weight", "ffn_stride.2.weight", "cross_attn.q.weight"} <= changed, sorted(changed)
    # the adapter applies to the plain base: it is rebuilt dual-perspective from adapter/high_res.json
    model, processor = load_for_inference(parts["plain"], adapter=out / "adapter")
    assert model.config.high_res_grid == 2
    loaded = load_geochat(out / "merged")
    inputs = _inputs(loaded, _image(21))
    with torch.no_grad():  # the adapter's dual_perspective weights were loaded, not a fresh module
        torch.testing.assert_close(model(**inputs).logits, loaded.model.eval()(**inputs).logits, rtol=1e-4, atol=1e-4)
    assert isinstance(answer_question(model, processor, _image(20), "what is this", max_new_tokens=2), str)
