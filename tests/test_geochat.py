"""GeoChat on HF Llava: assembly, image-token expansion, vision-tower swap, original <-> HF checkpoint conversion, CLI.

Everything is tiny and random (CLIP vision: 2 layers, width 32, 28 px, patch 14; LLaMA: 2 layers, width 64) with an
offline WordLevel tokenizer; nothing is downloaded.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerFast,
)

from launch import convert_geochat as cli
from vlm_finetune.convert import (
    ConversionError,
    checkpoint_layout,
    hf_to_original,
    load_original_geochat,
    normalize_hf_keys,
    original_to_hf,
)
from vlm_finetune.geochat import assemble_geochat, load_geochat, swap_vision_tower
from vlm_finetune.parts import IMAGE_TOKEN, GeoChatError, image_token_count, interpolate_position_embeddings

WORDS = ["<unk>", "<s>", "</s>", "USER", ":", "ASSISTANT", "a", "an", "the", "of", "is", "this", "what", "describe",
         "image", "airport", "plane", "planes", "runway", "there", "are", "many", "in", "picture", "satellite", "photo",
         "?", ".", "green", "field"]
PROMPT = "USER: <image>\ndescribe the image ASSISTANT:"


def make_tokenizer(with_image_token: bool = False) -> PreTrainedTokenizerFast:
    words = WORDS + ([IMAGE_TOKEN] if with_image_token else [])
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    out = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    if with_image_token:
        out.add_tokens([IMAGE_TOKEN], special_tokens=True)
    return out


def write_tower(path, hidden=32, image=28, patch=14, seed=0, mean=None):
    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image, patch_size=patch, projection_dim=16)
    CLIPVisionModel(cfg).save_pretrained(str(path))
    extra = {"image_mean": mean} if mean else {}
    CLIPImageProcessor(size={"shortest_edge": image}, crop_size={"height": image, "width": image},
                       **extra).save_pretrained(str(path))
    return path


def tiny_llm(seed=0, vocab=None) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    vocab = len(WORDS) if vocab is None else vocab
    return LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=4, vocab_size=vocab,
                                        bos_token_id=1, eos_token_id=2, pad_token_id=0, max_position_embeddings=256))


def tiny_projector(vision=32, text=64, seed=3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"model.mm_projector.0.weight": torch.randn(text, vision, generator=g) * 0.05,
            "model.mm_projector.0.bias": torch.randn(text, generator=g) * 0.05,
            "model.mm_projector.2.weight": torch.randn(text, text, generator=g) * 0.05,
            "model.mm_projector.2.bias": torch.randn(text, generator=g) * 0.05}


def original_state(llm, projector, tower=None, buffers=False) -> dict[str, torch.Tensor]:
    """A state dict in the original LLaVA-1.5/GeoChat layout."""
    state = {k: v.clone() for k, v in llm.state_dict().items()}
    assert "model.embed_tokens.weight" in state and "lm_head.weight" in state
    state.update({k: v.clone() for k, v in projector.items()})
    if tower is not None:
        state.update({"model.vision_tower.vision_tower.vision_model." + k: v.clone()
                      for k, v in tower.state_dict().items()})
    if buffers:  # what checkpoints saved by transformers 4.31 carry
        state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
        if tower is not None:
            state["model.vision_tower.vision_tower.vision_model.embeddings.position_ids"] = torch.arange(5)[None]
    return state


def write_original_checkpoint(path, llm, projector, tower=None, fmt="safetensors", tokenizer=None,
                              model_type="geochat", buffers=True):
    path.mkdir(parents=True)
    state = original_state(llm, projector, tower, buffers=buffers)
    if fmt == "safetensors":
        save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    else:  # two pytorch_model-0000N-of-00002.bin shards + index, like LLaVA-1.5's release
        keys = sorted(state)
        shards = {"pytorch_model-00001-of-00002.bin": keys[: len(keys) // 2],
                  "pytorch_model-00002-of-00002.bin": keys[len(keys) // 2:]}
        for name, part in shards.items():
            torch.save({k: state[k] for k in part}, str(path / name))
        index = {"metadata": {}, "weight_map": {k: name for name, part in shards.items() for k in part}}
        (path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    cfg = {k: v for k, v in llm.config.to_dict().items() if k not in ("rope_parameters", "dtype", "architectures")}
    cfg.update(architectures=["GeoChatLlamaForCausalLM" if model_type == "geochat" else "LlavaLlamaForCausalLM"],
               model_type=model_type, torch_dtype="float32", rope_theta=10000.0, rope_scaling=None,
               mm_vision_tower="openai/clip-vit-large-patch14-336", mm_hidden_size=projector[
                   "model.mm_projector.0.weight"].shape[1], mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2,
               mm_vision_select_feature="patch", mm_use_im_start_end=False, mm_use_im_patch_token=False,
               image_aspect_ratio="pad", use_mm_proj=True, tune_mm_mlp_adapter=False, freeze_mm_mlp_adapter=False,
               tokenizer_model_max_length=2048, tokenizer_padding_side="right", max_length=4096)
    (path / "config.json").write_text(json.dumps(cfg))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("geochat")
    llm = tiny_llm()
    llm.save_pretrained(str(root / "llm"))
    make_tokenizer().save_pretrained(str(root / "llm"))
    return {
        "root": root,
        "llm": root / "llm",
        "tower": write_tower(root / "tower_a", seed=0),
        "tower_b": write_tower(root / "tower_b", seed=1, mean=[0.3, 0.4, 0.5]),
        "tower_wide": write_tower(root / "tower_wide", hidden=48, seed=2),
        "tower_p7": write_tower(root / "tower_p7", patch=7, seed=4),
    }


def synthetic_image(w=90, h=70, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def n_image_tokens(model, inputs) -> int:
    return int((inputs["input_ids"] == model.config.image_token_index).sum())


# ---------------------------------------------------------------------------------------------------------------
# assembly, processor, forward / generate
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("image_size,tokens", [(None, 4), (28, 4), (56, 16), (42, 9)])
def test_image_token_count_matches_grid(dirs, image_size, tokens):
    model, processor = assemble_geochat(dirs["tower"], dirs["llm"], image_size=image_size)
    size = image_size or 28
    assert image_token_count(model) == (size // 14) ** 2 == tokens == model.config.image_seq_length
    assert model.model.vision_tower.embeddings.position_embedding.weight.shape[0] == tokens + 1
    inputs = processor(images=synthetic_image(), text=PROMPT, return_tensors="pt")
    assert inputs["pixel_values"].shape[-2:] == (size, size)
    assert n_image_tokens(model, inputs) == tokens
    with torch.no_grad():
        feats = model.model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
    assert feats[0].shape == (tokens, 64)  # one projected feature per image token, CLS dropped
    assert model.config.vision_feature_layer == -2 and model.config.vision_feature_select_strategy == "default"


def test_llava_processor_needs_one_additional_token_for_cls(dirs):
    """LlavaProcessor (transformers 5.x) counts (H/p)*(W/p) + num_additional_image_tokens, minus 1 for "default"."""
    model, processor = assemble_geochat(dirs["tower"], dirs["llm"], image_size=56)
    assert processor.num_additional_image_tokens == 1 and processor.patch_size == 14
    assert processor.vision_feature_select_strategy == "default"
    inputs = processor(images=synthetic_image(), text=PROMPT, return_tensors="pt")
    assert n_image_tokens(model, inputs) == 16
    processor.num_additional_image_tokens = 0  # the constructor default: one token short, the model refuses it
    short = processor(images=synthetic_image(), text=PROMPT, return_tensors="pt")
    assert n_image_tokens(model, short) == 15
    with pytest.raises(Exception, match="do not match"):
        model(**short)


def test_tokenizer_gets_image_token_and_embeddings_grow(dirs):
    model, processor = assemble_geochat(dirs["tower"], dirs["llm"])
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    assert image_id == len(WORDS) == model.config.image_token_index
    assert model.get_input_embeddings().weight.shape[0] == len(WORDS) + 1 == model.config.text_config.vocab_size
    assert model.lm_head.weight.shape[0] == len(WORDS) + 1
    assert tok.encode("USER: <image>", add_special_tokens=False) == [3, 4, image_id]
    assert tok.pad_token == "<unk>"
    # a tokenizer that already knows <image> keeps its id and the vocabulary is not grown past it
    tok2 = make_tokenizer(with_image_token=True)
    model2, _ = assemble_geochat(dirs["tower"], tiny_llm(vocab=len(WORDS) + 1).config, tokenizer=tok2)
    assert model2.config.image_token_index == len(WORDS) and model2.get_input_embeddings().weight.shape[0] == len(WORDS) + 1
    # no tokenizer: the image id is the first id past the vocabulary, and the processor is the sized image processor
    model3, ip = assemble_geochat(dirs["tower"], tiny_llm().config, image_size=56)
    assert isinstance(ip, CLIPImageProcessor) and ip.crop_size["height"] == 56
    assert model3.config.image_token_index == len(WORDS)


def test_one_handle_whatever_the_folder_holds(dirs, tmp_path):
    """assemble/load give a GeoChat handle with the same attributes; no tokenizer -> processor None, the image
    processor kept, and a LlavaProcessor is asked for with one error; a tower resize refuses a size off the patch
    grid (the one image-size policy)."""
    chat = assemble_geochat(dirs["tower"], tiny_llm().config, image_size=56)
    assert chat.processor is None and chat.tokenizer is None
    assert isinstance(chat.image_processor, CLIPImageProcessor) and chat.image_processor.crop_size["height"] == 56
    chat.save(tmp_path / "bare")
    again = load_geochat(tmp_path / "bare")
    assert again.processor is None and again.image_processor.crop_size["height"] == 56
    with pytest.raises(GeoChatError, match="has no LlavaProcessor"):
        again.require_processor(tmp_path / "bare")
    full = assemble_geochat(dirs["tower"], dirs["llm"])
    assert full.processor.tokenizer is full.tokenizer and full.processor.image_processor is full.image_processor
    model, processor = full
    assert model is full.model and processor is full.processor
    with pytest.raises(GeoChatError, match="not a multiple of the patch size 14"):
        assemble_geochat(dirs["tower"], dirs["llm"], image_size=50)


def _check_forward_generate(model, processor, image):
    inputs = processor(images=image, text=PROMPT, return_tensors="pt")
    labels = inputs["input_ids"].clone()
    labels[labels == model.config.image_token_index] = -100
    model.train()
    out = model(**inputs, labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.model.multi_modal_projector.linear_1.weight.grad is not None
    assert model.model.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        gen = model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert gen.shape == (1, inputs["input_ids"].shape[1] + 3)
    assert torch.equal(gen[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])
    assert processor.batch_decode(gen[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def test_forward_loss_generate_on_a_real_rs_image(dirs, shared_data):
    path = shared_data / "scenes/aid/Airport/airport_1.jpg"
    assert path.exists(), path
    model, processor = assemble_geochat(dirs["tower"], dirs["llm"], image_size=56)
    _check_forward_generate(model, processor, Image.open(path).convert("RGB"))


def test_forward_loss_generate_on_a_generated_image(dirs):
    model, processor = assemble_geochat(dirs["tower"], dirs["llm"])
    _check_forward_generate(model, processor, synthetic_image(120, 60, seed=5))


def test_interpolation_keeps_cls_and_grid_corners():
    torch.manual_seed(0)
    w = torch.randn(1 + 4, 8)
    assert torch.equal(interpolate_position_embeddings(w, 2), w)
    big = interpolate_position_embeddings(w, 4)
    assert big.shape == (17, 8)
    assert torch.equal(big[0], w[0])  # CLS row untouched
    grid_old, grid_new = w[1:].reshape(2, 2, 8), big[1:].reshape(4, 4, 8)
    for (i, j), (a, b) in {(0, 0): (0, 0), (0, 1): (0, 3), (1, 0): (3, 0), (1, 1): (3, 3)}.items():
        assert torch.allclose(grid_new[a, b], grid_old[i, j], atol=1e-5)  # align_corners=True keeps the corners
    with pytest.raises(GeoChatError, match="square grid"):
        interpolate_position_embeddings(torch.randn(4, 8), 3)


def test_projector_weights_from_llava_mm_projector_bin(dirs, tmp_path):
    proj = tiny_projector()
    torch.save(proj, tmp_path / "mm_projector.bin")
    model, _ = assemble_geochat(dirs["tower"], dirs["llm"], projector=tmp_path / "mm_projector.bin")
    p = model.model.multi_modal_projector
    assert torch.equal(p.linear_1.weight, proj["model.mm_projector.0.weight"])
    assert torch.equal(p.linear_2.bias, proj["model.mm_projector.2.bias"])
    with pytest.raises(GeoChatError, match="shape"):
        assemble_geochat(dirs["tower_wide"], dirs["llm"], projector=proj)


# ---------------------------------------------------------------------------------------------------------------
# vision tower swap
# ---------------------------------------------------------------------------------------------------------------


def test_swap_same_width_changes_outputs_and_keeps_the_rest(dirs):
    model, processor = assemble_geochat(dirs["tower"], dirs["llm"], image_size=56)
    inputs = processor(images=synthetic_image(), text=PROMPT, return_tensors="pt")
    with torch.no_grad():
        before = model(**inputs).logits
    projector = {k: v.clone() for k, v in model.model.multi_modal_projector.state_dict().items()}
    swap_vision_tower(model, dirs["tower_b"], processor=processor)
    new_tower = CLIPVisionModel.from_pretrained(str(dirs["tower_b"]))
    assert torch.equal(model.model.vision_tower.encoder.layers[0].mlp.fc1.weight, new_tower.encoder.layers[0].mlp.fc1.weight)
    assert model.config.vision_config.image_size == 56 and model.config.image_seq_length == 16  # size kept
    for k, v in model.model.multi_modal_projector.state_dict().items():
        assert torch.equal(v, projector[k])  # projector kept
    assert list(processor.image_processor.image_mean) == pytest.approx([0.3, 0.4, 0.5])  # the new tower's processor
    inputs = processor(images=synthetic_image(), text=PROMPT, return_tensors="pt")
    assert n_image_tokens(model, inputs) == 16
    with torch.no_grad():
        after = model(**inputs).logits
    assert after.shape == before.shape and not torch.allclose(after, before)


def test_swap_other_width_clear_error_then_reinit(dirs):
    model, processor = assemble_geochat(dirs["tower"], dirs["llm"])
    with pytest.raises(GeoChatError) as exc:
        swap_vision_tower(model, dirs["tower_wide"])
    msg = str(exc.value)
    assert "48" in msg and "32" in msg and "reinit_projector" in msg and "--reinit-projector" in msg
    assert model.model.vision_tower.config.hidden_size == 32  # nothing changed on error
    swap_vision_tower(model, dirs["tower_wide"], reinit_projector=True, processor=processor, seed=0)
    assert model.model.multi_modal_projector.linear_1.in_features == 48
    assert model.config.vision_config.hidden_size == 48
    _check_forward_generate(model, processor, synthetic_image())


def test_swap_to_another_patch_size_updates_token_count(dirs):
    model, processor = assemble_geochat(dirs["tower"], dirs["llm"], image_size=56)
    swap_vision_tower(model, dirs["tower_p7"], processor=processor)
    assert model.config.vision_config.patch_size == 7 and model.config.image_seq_length == 64 == image_token_count(model)
    assert model.model.vision_tower.embeddings.position_embedding.weight.shape[0] == 65
    assert processor.patch_size == 7
    inputs = processor(images=synthetic_image(), text=PROMPT, return_tensors="pt")
    assert n_image_tokens(model, inputs) == 64
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()


def test_swapped_model_saves_and_reloads(dirs, tmp_path):
    model, processor = assemble_geochat(dirs["tower"], dirs["llm"], image_size=42)
    swap_vision_tower(model, dirs["tower_wide"], reinit_projector=True, processor=processor)
    model.save_pretrained(str(tmp_path))
    processor.save_pretrained(str(tmp_path))
    again, proc2 = load_geochat(tmp_path)
    inputs = proc2(images=synthetic_image(), text=PROMPT, return_tensors="pt")
    assert n_image_tokens(again, inputs) == 9
    with torch.no_grad():
        assert torch.allclose(again(**inputs).logits, model(**inputs).logits, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# original <-> HF conversion
# ---------------------------------------------------------------------------------------------------------------


def _tiny_llava(tower_cfg, llm) -> LlavaForConditionalGeneration:
    cfg = LlavaConfig(vision_config=tower_cfg, text_config=llm.config, image_token_index=len(WORDS) - 1,
                      image_seq_length=4, vision_feature_layer=-2, vision_feature_select_strategy="default")
    return LlavaForConditionalGeneration(cfg)


def test_converter_round_trip_and_strict_load(dirs):
    llm, tower = tiny_llm(seed=7), CLIPVisionModel.from_pretrained(str(dirs["tower"]))
    original = original_state(llm, tiny_projector(), tower)
    hf = original_to_hf(original)
    assert set(hf) & {"model.language_model.embed_tokens.weight", "model.language_model.norm.weight", "lm_head.weight",
                      "model.multi_modal_projector.linear_1.weight", "model.multi_modal_projector.linear_2.bias",
                      "model.vision_tower.embeddings.position_embedding.weight"} and len(hf) == len(original)
    model = _tiny_llava(tower.config, llm)
    assert set(model.state_dict()) == set(hf)  # exactly the keys of transformers' in-memory layout
    model.load_state_dict(hf, strict=True)
    sd = model.state_dict()
    assert torch.equal(sd["model.language_model.layers.1.mlp.down_proj.weight"], original["model.layers.1.mlp.down_proj.weight"])
    assert torch.equal(sd["model.multi_modal_projector.linear_2.weight"], original["model.mm_projector.2.weight"])
    assert torch.equal(sd["model.vision_tower.encoder.layers.1.self_attn.q_proj.bias"],
                       original["model.vision_tower.vision_tower.vision_model.encoder.layers.1.self_attn.q_proj.bias"])
    back = hf_to_original(sd)
    assert set(back) == set(original)
    assert all(torch.equal(back[k], original[k]) for k in original)
    no_tower = hf_to_original(sd, include_vision_tower=False)
    assert not any(k.startswith("model.vision_tower") for k in no_tower)


def test_converter_reads_the_on_disk_layout_and_drops_buffers(dirs, tmp_path):
    llm, tower = tiny_llm(seed=8), CLIPVisionModel.from_pretrained(str(dirs["tower"]))
    original = original_state(llm, tiny_projector(), tower, buffers=True)
    dropped: list[str] = []
    hf = original_to_hf(original, dropped)
    assert sorted(dropped) == ["model.layers.0.self_attn.rotary_emb.inv_freq",
                               "model.vision_tower.vision_tower.vision_model.embeddings.position_ids"]
    model = _tiny_llava(tower.config, llm)
    model.load_state_dict(hf, strict=True)
    model.save_pretrained(str(tmp_path))
    on_disk = load_file(str(tmp_path / "model.safetensors"))
    assert "language_model.model.embed_tokens.weight" in on_disk and "language_model.lm_head.weight" in on_disk
    assert set(normalize_hf_keys(on_disk)) == set(hf)
    back = hf_to_original(on_disk)
    clean = {k: v for k, v in original.items() if k not in dropped}
    assert set(back) == set(clean) and all(torch.equal(back[k], clean[k]) for k in clean)
    # the transformers 4.x spelling with a vision_model level
    legacy = {("vision_tower.vision_model." + k[len("vision_tower."):] if k.startswith("vision_tower.") else k): v
              for k, v in on_disk.items()}
    assert set(hf_to_original(legacy)) == set(clean)


def test_converter_errors_name_the_keys(dirs):
    llm = tiny_llm()
    state = original_state(llm, tiny_projector())
    with pytest.raises(ConversionError, match="model.weird.thing"):
        original_to_hf({**state, "model.weird.thing": torch.zeros(1)})
    linear = {k: v for k, v in state.items() if "mm_projector" not in k}
    linear["model.mm_projector.weight"] = torch.zeros(64, 32)
    with pytest.raises(ConversionError, match="mlp2x_gelu"):
        original_to_hf(linear)
    with pytest.raises(ConversionError, match="not part of an HF Llava"):
        hf_to_original({"model.embed_tokens.weight": torch.zeros(2, 2)})


@pytest.mark.parametrize("fmt", ["safetensors", "bin-sharded"])
def test_load_original_checkpoint_matches_the_source_llm(dirs, tmp_path, fmt):
    llm = tiny_llm(seed=11)
    proj = tiny_projector()
    ckpt = write_original_checkpoint(tmp_path / "ckpt", llm, proj, fmt=fmt, tokenizer=make_tokenizer())
    assert checkpoint_layout(ckpt) == "original"
    (model, _), info = load_original_geochat(ckpt, dirs["tower"])
    assert info["dropped_keys"] == ["model.layers.0.self_attn.rotary_emb.inv_freq"]
    assert model.config.vision_config.image_size == 504  # a GeoChat config without a tower copy: GeoChat's 504 px
    assert image_token_count(model) == 1296
    assert torch.equal(model.model.multi_modal_projector.linear_1.weight, proj["model.mm_projector.0.weight"])
    ids = torch.tensor([[1, 3, 4, 13, 8, 14]])
    with torch.no_grad():  # the language model of the converted checkpoint is the source LLM (text-only prompt)
        ref = llm(input_ids=ids).logits
        got = model(input_ids=ids).logits[..., : len(WORDS)]
    assert torch.allclose(got, ref, atol=1e-5)
    (model2, processor2), _ = load_original_geochat(ckpt, dirs["tower"], image_size=56)
    inputs = processor2(images=synthetic_image(), text=PROMPT, return_tensors="pt")
    assert n_image_tokens(model2, inputs) == 16
    with torch.no_grad():
        assert torch.isfinite(model2(**inputs).logits).all()


def test_load_original_checkpoint_tower_copy_and_position_mismatch(dirs, tmp_path):
    llm, tower = tiny_llm(seed=12), CLIPVisionModel.from_pretrained(str(dirs["tower_b"]))
    ckpt = write_original_checkpoint(tmp_path / "ckpt", llm, tiny_projector(), tower=tower, model_type="llava")
    (model, _), info = load_original_geochat(ckpt, dirs["tower"], tower_from_checkpoint=True)
    assert info["image_size_from"] == "the checkpoint's tower positions" and model.config.vision_config.image_size == 28
    assert torch.equal(model.model.vision_tower.embeddings.patch_embedding.weight, tower.embeddings.patch_embedding.weight)
    (model_a, _), _ = load_original_geochat(ckpt, dirs["tower"])  # default: the tower comes from --vision-tower
    ref = CLIPVisionModel.from_pretrained(str(dirs["tower"]))
    assert torch.equal(model_a.model.vision_tower.embeddings.patch_embedding.weight, ref.embeddings.patch_embedding.weight)
    with pytest.raises(ConversionError, match=r"\(5, 32\).*\(17, 32\)"):  # the "577 vs 1297" class of error
        load_original_geochat(ckpt, dirs["tower"], tower_from_checkpoint=True, image_size=56)
    with pytest.raises(ConversionError, match="hidden size 48"):
        load_original_geochat(ckpt, dirs["tower_wide"])


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------


def test_cli_end_to_end(dirs, tmp_path, capsys):
    llm, proj = tiny_llm(seed=21), tiny_projector()
    ckpt = write_original_checkpoint(tmp_path / "geochat_orig", llm, proj, fmt="bin-sharded", tokenizer=make_tokenizer())
    hf_dir = tmp_path / "hf"
    assert cli.main(["--llava-checkpoint", str(ckpt), "--vision-tower", str(dirs["tower"]), "--output", str(hf_dir),
                     "--image-size", "56"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["image_tokens"] == 16 and summary["processor"] == "LlavaProcessor"
    assert summary["input_layout"] == "original" and summary["dropped_keys"] == 1
    assert checkpoint_layout(hf_dir) == "hf"
    model, processor = load_geochat(hf_dir)
    inputs = processor(images=synthetic_image(), text=PROMPT, return_tensors="pt")
    assert n_image_tokens(model, inputs) == 16
    assert torch.equal(model.model.multi_modal_projector.linear_2.weight, proj["model.mm_projector.2.weight"])
    with torch.no_grad():
        base = model(**inputs).logits

    # swapping to a wider tower: a clear error, then --reinit-projector
    assert cli.main(["--llava-checkpoint", str(hf_dir), "--output", str(tmp_path / "bad"),
                     "--swap-vision-tower", str(dirs["tower_wide"])]) == 2
    err = capsys.readouterr().err
    assert "hidden size 48" in err and "32" in err and "--reinit-projector" in err
    wide = tmp_path / "wide"
    assert cli.main(["--llava-checkpoint", str(hf_dir), "--output", str(wide), "--swap-vision-tower",
                     str(dirs["tower_wide"]), "--reinit-projector"]) == 0
    capsys.readouterr()
    model_w, proc_w = load_geochat(wide)
    assert model_w.model.multi_modal_projector.linear_1.in_features == 48
    assert model_w.config.vision_config.image_size == 56
    inputs_w = proc_w(images=synthetic_image(), text=PROMPT, return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(model_w(**inputs_w).logits).all()

    # same-width swap keeps the projector and changes the outputs
    same = tmp_path / "same"
    assert cli.main(["--llava-checkpoint", str(hf_dir), "--output", str(same), "--swap-vision-tower",
                     str(dirs["tower_b"])]) == 0
    capsys.readouterr()
    model_s, proc_s = load_geochat(same)
    with torch.no_grad():
        swapped = model_s(**proc_s(images=synthetic_image(), text=PROMPT, return_tensors="pt")).logits
    assert not torch.allclose(swapped, base)

    # HF -> original -> HF gives back the same weights
    orig = tmp_path / "orig"
    assert cli.main(["--llava-checkpoint", str(hf_dir), "--output", str(orig), "--to-original"]) == 0
    capsys.readouterr()
    written = load_file(str(orig / "model.safetensors"))
    assert "model.mm_projector.0.weight" in written and "model.embed_tokens.weight" in written
    assert "model.vision_tower.vision_tower.vision_model.embeddings.position_embedding.weight" in written
    cfg = json.loads((orig / "config.json").read_text())
    assert cfg["mm_projector_type"] == "mlp2x_gelu" and cfg["mm_hidden_size"] == 32 and cfg["model_type"] == "geochat"
    assert cfg["mm_vision_select_layer"] == -2 and cfg["mm_vision_select_feature"] == "patch"
    tower_keys = load_file(str(orig / "vision_tower" / "model.safetensors"))
    assert all(k.startswith("vision_model.") for k in tower_keys)  # loadable by the transformers GeoChat pins
    assert (orig / "tokenizer.json").exists()
    again = tmp_path / "again"
    assert cli.main(["--llava-checkpoint", str(orig), "--vision-tower", str(orig / "vision_tower"),
                     "--output", str(again)]) == 0
    capsys.readouterr()
    model_2, _ = load_geochat(again)
    assert model_2.config.vision_config.image_size == 56  # from the tower copy's positions
    sd1, sd2 = model.state_dict(), model_2.state_dict()
    assert set(sd1) == set(sd2) and all(torch.equal(sd1[k], sd2[k]) for k in sd1)


def test_cli_help_and_errors(dirs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    for flag in ("--llava-checkpoint", "--vision-tower", "--swap-vision-tower", "--reinit-projector", "--to-original"):
        assert flag in out
    with pytest.raises(SystemExit) as exc:
        cli.main(["--output", str(tmp_path / "o")])
    assert exc.value.code == 2 and "llava_checkpoint is required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["--llava-checkpoint", "x", "--output", "y", "--reinit-projector"])
    assert exc.value.code == 2 and "--swap-vision-tower" in capsys.readouterr().err
    missing = tmp_path / "missing"
    assert cli.main(["--llava-checkpoint", str(missing), "--output", str(tmp_path / "o")]) == 2
    assert str(missing) in capsys.readouterr().err
    ckpt = write_original_checkpoint(tmp_path / "ckpt", tiny_llm(), tiny_projector())
    assert cli.main(["--llava-checkpoint", str(ckpt), "--output", str(tmp_path / "o")]) == 2
    assert "--vision-tower" in capsys.readouterr().err
    assert cli.main(["--llava-checkpoint", str(ckpt), "--vision-tower", str(tmp_path / "no_tower"),
                     "--output", str(tmp_path / "o")]) == 2
    assert "no_tower" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert cli.main(["--llava-checkpoint", str(ckpt), "--vision-tower", str(dirs["tower"]),
                     "--output", str(tmp_path / "full")]) == 2
    assert "not empty" in capsys.readouterr().err


def test_exported_rs_tower_assembles_with_the_tiny_stand_in_llm(tmp_path):
    """The demo's stage 2: our exporter's output + synthetic.tiny_llm's LLaMA -> HF Llava GeoChat that runs."""
    from vlm_finetune.export import export_vision_tower
    from synthetic.tiny_llm import word_vocab, write_tiny_llm

    tower = export_vision_tower(None, "rs-tiny", 96, tmp_path / "tower")
    llm = write_tiny_llm(tmp_path / "llm", word_vocab(["Many planes are parked near the runway .", "A green field ."]))
    model, processor = assemble_geochat(tower, llm)
    inputs = processor(images=synthetic_image(100, 80), text="USER: <image>\nDescribe the image ASSISTANT: many planes .",
                       return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_index).sum()) == (96 // 8) ** 2
    labels = inputs["input_ids"].clone()
    labels[labels == model.config.image_token_index] = -100
    assert torch.isfinite(model(**inputs, labels=labels).loss)
    assert processor.tokenizer.convert_tokens_to_ids("planes") != processor.tokenizer.unk_token_id


def test_forward_loss_generate_on_a_demo_data_image(dirs, tmp_path):
    from synthetic.demo_data import generate_demo

    generate_demo(tmp_path / "demo", seed=0, n_dota=2, n_coco=2, n_masks=1, n_captions=3, n_scenes_per_class=1, size=96)
    image = Image.open(next(iter(sorted((tmp_path / "demo" / "dota" / "images").iterdir())))).convert("RGB")
    model, processor = assemble_geochat(dirs["tower"], dirs["llm"])
    _check_forward_generate(model, processor, image)


def test_cli_bad_inputs_are_one_line_errors_before_loading(dirs, tmp_path, capsys, monkeypatch):
    from tests.test_weights_guards import one_error_line
    from vlm_finetune import convert

    hf = tmp_path / "hf"
    model, processor = assemble_geochat(dirs["tower"], dirs["llm"])
    model.save_pretrained(str(hf))
    processor.save_pretrained(str(hf))
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    listed = tmp_path / "listed"
    listed.mkdir()
    (listed / "config.json").write_text("[1, 2]")
    monkeypatch.setattr(convert, "load_geochat", lambda *a, **k: pytest.fail("checkpoint loaded before the checks"))
    out = ["--output", str(tmp_path / "o")]
    for argv, says in [
        (["--llava-checkpoint", str(tmp_path / "file.txt")] + out, "is a file"),
        (["--llava-checkpoint", str(tmp_path / "empty")] + out, "has no config.json"),
        (["--llava-checkpoint", str(listed)] + out, "expected a config object"),
        (["--llava-checkpoint", str(hf), "--output", str(tmp_path / "file.txt")], "is a file"),
        (["--llava-checkpoint", str(hf), "--swap-vision-tower", str(tmp_path / "nope")] + out, "nope"),
        (["--llava-checkpoint", str(hf), "--tokenizer", str(tmp_path / "nope")] + out, "nope"),
    ]:
        assert cli.main(argv) == 2, argv
        one_error_line(capsys.readouterr().err, says)
    with pytest.raises(SystemExit):
        cli.main(["--llava-checkpoint", str(hf), "--max-shard-size", "lots"] + out)
    assert "max_shard_size 'lots'" in capsys.readouterr().err
