"""--tune lora | unfrozen-attn-norm | bias and --vision-layers on the tiny GeoChat: what trains, the counts in
finetune.json, the saved outputs and their round trips (CPU, 1-2 steps each)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from rs_common.config import make_config
from tests.test_geochat_finetune import _record, tiny_dirs  # noqa: F401 - the module-scoped tiny GeoChat fixture
from vlm_finetune.train import FinetuneConfig


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune_data")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / f"img{i}.png")
    data = root / "train.json"
    data.write_text(json.dumps([_record(0, "img0.png"), _record(1, "img1.png", answer="a green field")]))
    return {"root": root, "data": data}


def _train(tiny_dirs, tiny_data, out, **settings):  # noqa: F811
    from vlm_finetune.train import train

    cfg = make_config(FinetuneConfig, model=str(tiny_dirs["model"]), data=str(tiny_data["data"]),
                      images=str(tiny_data["root"]), output=str(out), max_steps=2, batch_size=2, num_workers=0,
                      learning_rate=1e-2, warmup_ratio=0.0, bf16="false", max_length=512, save_steps=1000,
                      **settings)
    summary = train(cfg)
    assert summary["steps"] == 2
    return json.loads((out / "finetune.json").read_text())


def _state(folder):
    return load_file(str(folder / "model.safetensors"))


def _logits(model, seed=0):
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    size = cfg.vision_config.image_size
    ids = [1] + [cfg.image_token_index] * cfg.image_seq_length + [5, 6, 7, 8]
    pixels = torch.randn(1, 3, size, size, generator=gen)
    model.eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), pixel_values=pixels).logits.float()


def _text(model_dir):
    return json.loads((model_dir / "config.json").read_text())["text_config"]


def _changed(before, after):
    return sorted(k for k, v in before.items() if k in after and not torch.equal(v, after[k]))


def test_unfrozen_attn_norm_trains_attention_and_norms_only(tiny_dirs, tiny_data, tmp_path):  # noqa: F811
    from vlm_finetune.geochat import load_geochat

    summary = _train(tiny_dirs, tiny_data, tmp_path / "out", tune="unfrozen-attn-norm")
    t = _text(tiny_dirs["model"])
    h, kv = t["hidden_size"], t["num_key_value_heads"] * t["hidden_size"] // t["num_attention_heads"]
    per_layer = h * h + 2 * h * kv + h * h + 2 * h  # q, k, v, o + input/post-attention RMSNorm
    assert summary["tune"] == "unfrozen-attn-norm" and summary["lora_targets"] == []
    assert summary["trainable_params"] == t["num_hidden_layers"] * per_layer + h  # + the final norm
    assert not (tmp_path / "out/adapter").exists() and not (tmp_path / "out/tuned").exists()
    before, after = _state(tiny_dirs["model"]), _state(tmp_path / "out/merged")
    assert set(before) == set(after)
    changed = _changed(before, after)
    assert changed and all(("self_attn." in k and k.rsplit(".", 2)[-2] in ("q_proj", "k_proj", "v_proj", "o_proj"))
                           or "norm." in k for k in changed), changed
    assert any("self_attn.q_proj" in k for k in changed) and any("layernorm" in k for k in changed)
    load_geochat(tmp_path / "out/merged")  # loads as any GeoChat


def test_bias_trains_scale_and_shift_only_and_merges_exactly(tiny_dirs, tiny_data, tmp_path):  # noqa: F811
    from vlm_finetune.geochat import load_geochat
    from vlm_finetune.tuning import load_tuned

    out = tmp_path / "out"
    summary = _train(tiny_dirs, tiny_data, out, tune="bias")
    t = _text(tiny_dirs["model"])
    h, inter = t["hidden_size"], t["intermediate_size"]
    kv = t["num_key_value_heads"] * h // t["num_attention_heads"]
    outputs_per_layer = h + 2 * kv + h + 2 * inter + h  # q, k, v, o, gate, up, down
    assert summary["trainable_params"] == 2 * t["num_hidden_layers"] * outputs_per_layer
    tuned = load_file(str(out / "tuned/tuned.safetensors"))
    assert len(tuned) == 2 * 7 * t["num_hidden_layers"]
    assert all(k.startswith("model.language_model.layers.") and k.endswith((".scale", ".shift")) for k in tuned)
    assert any(not torch.equal(v, torch.ones_like(v)) for k, v in tuned.items() if k.endswith(".scale"))
    assert any(v.abs().sum() > 0 for k, v in tuned.items() if k.endswith(".shift"))
    # the merged model: only the language model's linears changed (plus their new biases); it loads as a GeoChat
    before, after = _state(tiny_dirs["model"]), _state(out / "merged")
    assert _text(out / "merged")["attention_bias"] and _text(out / "merged")["mlp_bias"]
    new = set(after) - set(before)
    assert len(new) == 7 * t["num_hidden_layers"] and all(k.endswith("proj.bias") for k in new)
    changed = _changed(before, after)
    assert all("language_model." in k and ".layers." in k and k.endswith("proj.weight") for k in changed), changed
    merged = load_geochat(out / "merged").model
    tuned_model = load_tuned(tiny_dirs["model"], out / "tuned").model
    want = _logits(tuned_model)
    assert not torch.allclose(want, _logits(load_geochat(tiny_dirs["model"]).model), atol=1e-4)
    torch.testing.assert_close(_logits(merged), want, atol=1e-4, rtol=1e-4)
    again = load_tuned(tiny_dirs["model"], out / "tuned", merge=True).model
    torch.testing.assert_close(_logits(again), want, atol=1e-4, rtol=1e-4)


def test_lora_is_the_default_and_unchanged(tiny_dirs, tiny_data, tmp_path):  # noqa: F811
    summary = _train(tiny_dirs, tiny_data, tmp_path / "out", lora_r=4)
    t = _text(tiny_dirs["model"])
    h, inter = t["hidden_size"], t["intermediate_size"]
    kv = t["num_key_value_heads"] * h // t["num_attention_heads"]
    per_layer = 4 * ((h + h) + 2 * (h + kv) + (h + h) + 2 * (h + inter) + (inter + h))  # r x (in + out) per linear
    assert summary["tune"] == "lora" and summary["trainable_params"] == t["num_hidden_layers"] * per_layer
    assert (tmp_path / "out/adapter/adapter_config.json").exists() and (tmp_path / "out/merged").is_dir()
    before, after = _state(tiny_dirs["model"]), _state(tmp_path / "out/merged")
    changed = _changed(before, after)
    assert changed and all("language_model." in k and ".layers." in k and k.endswith("proj.weight") for k in changed)


def test_multi_layer_features_train_save_and_load(tiny_dirs, tiny_data, tmp_path):  # noqa: F811
    from vlm_finetune.geochat import load_geochat
    from vlm_finetune.tuning import load_tuned

    out = tmp_path / "out"
    summary = _train(tiny_dirs, tiny_data, out, tune="bias", vision_layers=[-1, -2, -3])
    assert summary["config"]["train_projector"] is True  # a new projector is always trained
    merged = load_geochat(out / "merged").model
    width = merged.config.vision_config.hidden_size
    assert merged.config.vision_feature_layer == [-1, -2, -3]
    assert merged.model.multi_modal_projector.linear_1.in_features == 3 * width
    features = merged.model.get_image_features(pixel_values=torch.randn(1, 3, 32, 32), vision_feature_layer=[-1, -2, -3],
                                               vision_feature_select_strategy="default").pooler_output
    assert features[0].shape == (merged.config.image_seq_length, merged.config.text_config.hidden_size)
    tuned = load_file(str(out / "tuned/tuned.safetensors"))
    assert tuned["model.multi_modal_projector.linear_1.weight"].shape[1] == 3 * width
    rebuilt = load_tuned(tiny_dirs["model"], out / "tuned").model  # the base model rebuilt with 3 layers
    torch.testing.assert_close(_logits(merged), _logits(rebuilt), atol=1e-4, rtol=1e-4)


def test_tune_and_vision_layer_flags(tiny_dirs, capsys):  # noqa: F811
    from launch import finetune_geochat as cli
    from rs_common.config import config_parser, parse_config
    from vlm_finetune.data import FinetuneError
    from vlm_finetune.geochat import load_geochat
    from vlm_finetune.tuning import set_vision_layers

    base = ["--model", "m", "--data", "d.json", "--images", "i", "--output", "o"]
    with pytest.raises(SystemExit) as exc:
        cli.main([*base, "--tune", "prefix"])
    err = [line for line in capsys.readouterr().err.splitlines() if "prefix" in line]
    assert exc.value.code == 2 and len(err) == 1 and "tune must be one of lora, unfrozen-attn-norm, bias" in err[0]
    args = parse_config(config_parser(FinetuneConfig, ""), FinetuneConfig,
                        [*base, "--tune", "bias", "--vision-layers", "-2", "-5", "-8"])
    assert (args.tune, args.vision_layers) == ("bias", [-2, -5, -8])
    with pytest.raises(FinetuneError, match="--vision-layers -9: the tower has hidden states 0..2"):
        set_vision_layers(load_geochat(tiny_dirs["model"]).model, [-2, -9])
