"""Vision-tower hand-over: open_clip ViT -> transformers CLIP vision folder (and back), position interpolation."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

import clip_pretrain  # noqa: F401 - registers rs-tiny
from clip_pretrain.checkpoint import save_safetensors
from clip_pretrain.models import create_clip
from launch.export_vision_tower import main as export_main
from vlm_finetune.export import (
    ExportError,
    check_model_config,
    check_vit,
    convert_visual,
    export_vision_tower,
    hf_to_open_clip,
    hf_vision_config,
    hf_vision_to_open_clip,
    load_hf_vision_into_open_clip,
    open_clip_to_hf,
)
from vlm_finetune.interpolate import check_image_size, interpolate_pos_embed


def perturbed(name: str, quick_gelu: bool = False, seed: int = 1) -> torch.nn.Module:
    """A random-init model whose every vision weight is moved off its init (LayerNorms away from 1/0, so a
    swapped ln_1/ln_2 or a dropped bias shows up in the outputs)."""
    model = create_clip(name, force_quick_gelu=quick_gelu).model.eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.visual.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    return model


def hf_model(visual, image_size=None, **kw) -> CLIPVisionModelWithProjection:
    cfg, state = convert_visual(visual, image_size, **kw)
    hf = CLIPVisionModelWithProjection(cfg).eval()
    hf.load_state_dict(state, strict=True)
    return hf


def block_output(visual, x: torch.Tensor, index: int = -2) -> torch.Tensor:
    """open_clip's output of ``visual.transformer.resblocks[index]`` as (N, L, D)."""
    got = {}
    handle = visual.transformer.resblocks[index].register_forward_hook(lambda m, i, o: got.__setitem__("out", o))
    try:
        with torch.no_grad():
            visual(x)
    finally:
        handle.remove()
    out = got["out"]
    return out if visual.transformer.batch_first else out.transpose(0, 1)


# ----------------------------------------------------------------------------------------------- interpolation


def test_interpolate_vit_l_336_to_504_gives_1297_rows():
    pos = torch.randn(577, 1024)
    out = interpolate_pos_embed(pos, 36)
    assert out.shape == (1297, 1024)
    assert torch.equal(out[0], pos[0])  # CLS row untouched
    grid_in = pos[1:].reshape(24, 24, 1024)
    grid_out = out[1:].reshape(36, 36, 1024)
    # align_corners=True samples the corner cells exactly
    for (i, j), (k, l) in [((0, 0), (0, 0)), ((0, 23), (0, 35)), ((23, 0), (35, 0)), ((23, 23), (35, 35))]:
        torch.testing.assert_close(grid_out[k, l], grid_in[i, j], atol=1e-5, rtol=0)
    batched = interpolate_pos_embed(pos.unsqueeze(0), 36)
    assert batched.shape == (1, 1297, 1024) and torch.equal(batched[0], out)


def test_interpolate_matches_geochat_recipe_and_options():
    pos = torch.randn(1 + 8 * 8, 16)
    # GeoChat: (1, L, D) -> permute to (1, D, L) -> reshape (1, D, g, g) -> bicubic align_corners=True -> back
    img = pos[1:].unsqueeze(0).permute(0, 2, 1).reshape(1, 16, 8, 8)
    ref = F.interpolate(img, size=12, mode="bicubic", align_corners=True).reshape(1, 16, 144).permute(0, 2, 1)[0]
    torch.testing.assert_close(interpolate_pos_embed(pos, 12)[1:], ref, atol=1e-6, rtol=0)
    assert not torch.allclose(interpolate_pos_embed(pos, 12, align_corners=False), interpolate_pos_embed(pos, 12))
    assert interpolate_pos_embed(pos, 12, mode="bilinear").shape == (145, 16)
    assert interpolate_pos_embed(pos, 12, mode="nearest").shape == (145, 16)  # no align_corners for nearest
    assert torch.equal(interpolate_pos_embed(pos, 8), pos)
    assert interpolate_pos_embed(pos.half(), 12).dtype == torch.float16


def test_interpolate_errors():
    with pytest.raises(ValueError, match="not a square grid"):
        interpolate_pos_embed(torch.randn(1 + 10, 8), 4)
    with pytest.raises(ValueError, match="interpolation mode"):
        interpolate_pos_embed(torch.randn(1 + 16, 8), 4, mode="cubic")
    with pytest.raises(ValueError, match=r"490 \(35x35 patches\) or 504 \(36x36 patches\)"):
        check_image_size(500, 14)
    assert check_image_size(504, 14) == 36


def test_one_image_size_policy():
    from vlm_finetune.interpolate import resolve_image_size

    assert resolve_image_size(None, 336, 14) == resolve_image_size(0, 336, 14) == 336  # 0/None: the model's own
    assert resolve_image_size(504, 336, 14) == 504
    with pytest.raises(ValueError, match="not a multiple of the patch size 14"):
        resolve_image_size(500, 336, 14)


# ----------------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("name,quick_gelu",
                         [("rs-tiny", False), ("rs-tiny", True), ("ViT-B-32", False), ("ViT-B-32", True)])
def test_parity_at_native_size(name, quick_gelu):
    model = perturbed(name, quick_gelu)
    hf = hf_model(model.visual)
    assert hf.config.hidden_act == ("quick_gelu" if quick_gelu else "gelu")
    size = model.visual.image_size[0]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model.encode_image(x)
        out = hf(pixel_values=x, output_hidden_states=True)
    assert len(out.hidden_states) == len(model.visual.transformer.resblocks) + 1  # embeddings (after ln_pre) + blocks
    diff = (out.image_embeds - ref).abs().max().item()
    feat_diff = (out.hidden_states[-2] - block_output(model.visual, x)).abs().max().item()
    print(f"{name} {hf.config.hidden_act}: image_embeds max diff {diff:.2e}, "
          f"hidden_states[-2] max diff {feat_diff:.2e}")
    assert diff <= 1e-4 and feat_diff <= 1e-4
    # hidden_states[0] is ln_pre(patch + class + position embeddings), what open_clip feeds its blocks
    with torch.no_grad():
        emb = model.visual._embeds(x)
    assert (out.hidden_states[0] - emb).abs().max().item() <= 1e-4


def test_parity_is_sensitive_to_the_activation():
    """A quick_gelu tower exported as gelu is measurably wrong: the parity test can see the difference."""
    model = perturbed("rs-tiny", quick_gelu=True)
    cfg, state = convert_visual(model.visual)
    cfg.hidden_act = "gelu"
    wrong = CLIPVisionModelWithProjection(cfg).eval()
    wrong.load_state_dict(state)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (wrong(pixel_values=x).image_embeds - model.encode_image(x)).abs().max().item() > 1e-3


# ----------------------------------------------------------------------------------------------- export to disk


@pytest.fixture(scope="module")
def stage1_checkpoints(tmp_path_factory):
    """A "trained" rs-tiny (perturbed weights) saved the way stage 1 saves: step_N.pt and final.safetensors."""
    root = tmp_path_factory.mktemp("run")
    model = perturbed("rs-tiny", seed=3)
    step = root / "checkpoints" / "step_00000001.pt"
    step.parent.mkdir()
    torch.save({"state_dict": model.state_dict(), "step": 1, "model_name": "rs-tiny",
                "config": {"model": "rs-tiny", "force_quick_gelu": False}}, step)
    final = root / "final.safetensors"
    save_safetensors(model.state_dict(), final)
    return model, step, final


@pytest.fixture(scope="module")
def exported(stage1_checkpoints, tmp_path_factory):
    model, step, _ = stage1_checkpoints
    out = export_vision_tower(step, "rs-tiny", 96, tmp_path_factory.mktemp("export") / "tower", legacy_layout=True)
    return model, out


def test_export_folder_loads_in_both_classes(exported):
    _, out = exported
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "preprocessor_config.json",
                                               "export_info.json", "legacy"}
    with_proj, info = CLIPVisionModelWithProjection.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    plain, info = CLIPVisionModel.from_pretrained(out, output_loading_info=True)
    # transformers 5.x: CLIPVisionModel strips the saved `vision_model.` prefix; the projection is its only extra
    assert not info["missing_keys"] and not info["mismatched_keys"]
    assert set(info["unexpected_keys"]) == {"visual_projection.weight"}
    assert with_proj.config.image_size == plain.config.image_size == 96
    assert with_proj.vision_model.embeddings.position_embedding.weight.shape == (145, 128)
    for k, v in plain.state_dict().items():  # the plain tower holds exactly the same vision weights
        assert torch.equal(v, with_proj.vision_model.state_dict()[k]), k
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        a = with_proj(pixel_values=x, output_hidden_states=True)
        b = plain(pixel_values=x, output_hidden_states=True)
    assert torch.equal(a.hidden_states[-2], b.hidden_states[-2])
    info = json.loads((out / "export_info.json").read_text())
    assert info["positions"] == 145 and info["native_positions"] == 65 and info["hidden_act"] == "gelu"


def test_saved_keys_are_the_prefixed_layout(exported):
    _, out = exported
    keys = set(safe_open(str(out / "model.safetensors"), "pt").keys())
    assert "vision_model.embeddings.patch_embedding.weight" in keys and "visual_projection.weight" in keys
    assert all(k.startswith("vision_model.") or k == "visual_projection.weight" for k in keys)
    # in memory, transformers 5.x CLIPVisionModel has no `vision_model.` level, WithProjection has it
    tiny = CLIPVisionConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                            image_size=8, patch_size=4)
    assert "embeddings.patch_embedding.weight" in CLIPVisionModel(tiny).state_dict()
    assert "vision_model.embeddings.patch_embedding.weight" in CLIPVisionModelWithProjection(tiny).state_dict()


def test_preprocessor_at_new_size(exported):
    model, out = exported
    proc = CLIPImageProcessor.from_pretrained(out)
    pp = open_clip.get_model_preprocess_cfg(model)
    assert proc.size == {"shortest_edge": 96} and proc.crop_size == {"height": 96, "width": 96}
    assert proc.image_mean == pytest.approx(list(pp["mean"])) and proc.image_std == pytest.approx(list(pp["std"]))
    from PIL import Image

    img = Image.fromarray((torch.rand(120, 150, 3) * 255).to(torch.uint8).numpy())
    assert proc(images=img, return_tensors="pt")["pixel_values"].shape == (1, 3, 96, 96)


def test_runs_at_new_size_and_stays_close_to_native(exported):
    """At 96 px (grid 8 -> 12) the exported tower equals open_clip built at 96 with the same interpolated
    weights, and on a 2x-upsampled (1.5x) image stays close to the native 64 px embedding."""
    model, out = exported
    hf = CLIPVisionModelWithProjection.from_pretrained(out).eval()
    big = open_clip.create_model("rs-tiny", force_image_size=96).eval()
    load_hf_vision_into_open_clip(big, out)
    gen = torch.Generator().manual_seed(0)
    x96 = torch.randn(4, 3, 96, 96, generator=gen)
    with torch.no_grad():
        assert (hf(pixel_values=x96).image_embeds - big.encode_image(x96)).abs().max().item() <= 1e-4
    # smooth images (bicubic from 8x8) so that resizing keeps their content
    x64 = F.interpolate(torch.randn(8, 3, 8, 8, generator=gen), size=64, mode="bicubic", align_corners=False)
    up = F.interpolate(x64, size=96, mode="bicubic", align_corners=False)
    with torch.no_grad():
        cos = F.cosine_similarity(model.encode_image(x64), hf(pixel_values=up).image_embeds)
    print(f"rs-tiny 64 -> 96 px: cosine(native, interpolated) mean {cos.mean():.4f} min {cos.min():.4f}")
    assert cos.min().item() > 0.95


def test_round_trip_open_clip_hf_open_clip(stage1_checkpoints, tmp_path):
    model, step, _ = stage1_checkpoints
    out = export_vision_tower(step, "rs-tiny", None, tmp_path / "native")
    back = hf_vision_to_open_clip(out)
    original = model.visual.state_dict()
    assert set(back) == set(original)
    for k, v in original.items():
        assert torch.equal(back[k], v), k
    fresh = create_clip("rs-tiny").model.eval()
    load_hf_vision_into_open_clip(fresh, out)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(fresh.encode_image(x), model.encode_image(x))
    with pytest.raises(ExportError, match="force_quick_gelu=False"):
        load_hf_vision_into_open_clip(create_clip("rs-tiny", force_quick_gelu=True).model, out)


def test_hf_to_open_clip_ignores_text_side_of_a_full_clip_model(stage1_checkpoints):
    model, _, _ = stage1_checkpoints
    hf_state = open_clip_to_hf(model.state_dict())  # a whole CLIP state dict: the visual.* part is used
    full = {**hf_state, "text_model.embeddings.token_embedding.weight": torch.zeros(3, 2),
            "text_projection.weight": torch.zeros(2, 2), "logit_scale": torch.zeros(()),
            "vision_model.embeddings.position_ids": torch.arange(65)[None]}
    back = hf_to_open_clip(full)
    assert set(back) == set(model.visual.state_dict())
    no_proj = {k: v for k, v in hf_state.items() if k != "visual_projection.weight"}
    assert "proj" not in hf_to_open_clip({k.removeprefix("vision_model."): v for k, v in no_proj.items()})
    with pytest.raises(ExportError, match="no open_clip ViT equivalent"):
        hf_to_open_clip({**hf_state, "vision_model.head.weight": torch.zeros(1)})


def test_export_from_step_and_safetensors_agree(stage1_checkpoints, tmp_path):
    _, step, final = stage1_checkpoints
    a = export_vision_tower(step, "rs-tiny", 96, tmp_path / "a")
    b = export_vision_tower(final, "rs-tiny", 96, tmp_path / "b")
    sa, sb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_training_checkpoint_without_a_config_file_still_names_its_model(stage1_checkpoints, tmp_path):
    """Checkpoints written before open_clip_config.json existed record the model and activation themselves."""
    model, _, _ = stage1_checkpoints
    step = tmp_path / "step_00000002.pt"
    torch.save({"state_dict": model.state_dict(), "model_name": "rs-tiny", "config": {"force_quick_gelu": True}}, step)
    out = export_vision_tower(step, None, None, tmp_path / "q")
    assert json.loads((out / "config.json").read_text())["hidden_act"] == "quick_gelu"
    with pytest.raises(ExportError, match="records the weights as 'rs-tiny'"):
        export_vision_tower(step, "ViT-B-32", None, tmp_path / "wrong")


# ----------------------------------------------------------------------------------------------- legacy layout


def test_legacy_layout(exported, tmp_path):
    _, out = exported
    legacy = out / "legacy"
    with safe_open(str(legacy / "model.safetensors"), "pt") as fh:
        assert fh.metadata() == {"format": "pt"}  # transformers 4.x refuses safetensors without it
        keys = set(fh.keys())
    # transformers 4.31-4.36 names (CLIPVisionModel and CLIPVisionModelWithProjection both nest vision_model)
    for k in ("vision_model.embeddings.patch_embedding.weight", "vision_model.embeddings.class_embedding",
              "vision_model.embeddings.position_embedding.weight", "vision_model.pre_layrnorm.weight",
              "vision_model.encoder.layers.0.self_attn.q_proj.weight", "vision_model.encoder.layers.1.mlp.fc2.bias",
              "vision_model.encoder.layers.0.layer_norm1.weight", "vision_model.post_layernorm.bias",
              "visual_projection.weight"):
        assert k in keys, k
    assert "vision_model.embeddings.position_ids" not in keys  # non-persistent since 4.31
    assert keys == set(safe_open(str(out / "model.safetensors"), "pt").keys())
    cfg = json.loads((legacy / "config.json").read_text())
    assert cfg["transformers_version"] == "4.31.0" and cfg["torch_dtype"] == "float32" and "dtype" not in cfg
    assert cfg["image_size"] == 96 and cfg["hidden_act"] == "gelu" and cfg["model_type"] == "clip_vision_model"
    assert json.loads((legacy / "preprocessor_config.json").read_text())["crop_size"] == {"height": 96, "width": 96}
    # state-dict level: the legacy names are exactly a WithProjection module's keys, and the weights are the export's
    state = load_file(str(legacy / "model.safetensors"))
    hf = CLIPVisionModelWithProjection.from_pretrained(out)
    hf.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(hf(pixel_values=x).image_embeds,
                           CLIPVisionModelWithProjection.from_pretrained(out)(pixel_values=x).image_embeds)
    # position_ids on request, for strict loaders written against transformers <= 4.30
    again = export_vision_tower(None, "rs-tiny", 96, tmp_path / "pid", legacy_layout=True, legacy_position_ids=True)
    pid = load_file(str(again / "legacy" / "model.safetensors"))["vision_model.embeddings.position_ids"]
    assert torch.equal(pid, torch.arange(145)[None])


# ----------------------------------------------------------------------------------------------- large shapes


def test_vit_l_14_336_shapes_at_504():
    """ViT-L-14-336 on the meta device (no memory, no init): config, every key and shape at 504 px."""
    model = open_clip.create_model("ViT-L-14-336", device="meta")
    cfg = hf_vision_config(model.visual, 504)
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.num_attention_heads) == \
        (1024, 4096, 24, 16)
    assert (cfg.patch_size, cfg.image_size, cfg.projection_dim, cfg.hidden_act) == (14, 504, 768, "gelu")
    state = open_clip_to_hf(model.visual.state_dict())
    with torch.device("meta"):
        ref = CLIPVisionModelWithProjection(hf_vision_config(model.visual)).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in ref.items()}
    assert state["vision_model.embeddings.position_embedding.weight"].shape == (577, 1024)
    assert interpolate_pos_embed(torch.randn(577, 1024), 36).shape == (1297, 1024)
    quick = open_clip.create_model("ViT-L-14-336", device="meta", force_quick_gelu=True)
    assert hf_vision_config(quick.visual, 504).hidden_act == "quick_gelu"


# ----------------------------------------------------------------------------------------------- errors


def test_non_vit_models_are_refused(tmp_path):
    with pytest.raises(ExportError, match="ResNet"):
        export_vision_tower(None, "RN50", None, tmp_path / "rn")
    with pytest.raises(ExportError, match="timm"):
        check_model_config("ViT-B-16-SigLIP")
    with pytest.raises(ExportError, match="ResNet"):
        check_vit(open_clip.create_model("RN50", device="meta").visual)
    assert not (tmp_path / "rn").exists()


def test_bad_size_names_the_nearest_valid_sizes(tmp_path):
    with pytest.raises(ExportError) as err:
        export_vision_tower(None, "ViT-L-14-336", 500, tmp_path / "x")
    assert "490" in str(err.value) and "504" in str(err.value)
    with pytest.raises(ExportError, match="88 .* or 96"):
        export_vision_tower(None, "rs-tiny", 90, tmp_path / "y")


def test_unsupported_vit_features_are_refused():
    ls = open_clip.create_model("rs-tiny", device="meta")
    ls.visual.transformer.resblocks[0].ls_1 = torch.nn.Linear(1, 1)
    with pytest.raises(ExportError, match="layer scale"):
        check_vit(ls.visual)
    state = {**{f"visual.{k}": v for k, v in open_clip.create_model("rs-tiny").visual.state_dict().items()},
             "visual.transformer.resblocks.0.ls_1.gamma": torch.ones(128)}
    with pytest.raises(ExportError, match="no transformers CLIP equivalent"):
        open_clip_to_hf(state)


def test_cli(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        export_main(["--help"])
    assert exc.value.code == 0 and "--image-size" in capsys.readouterr().out
    out = tmp_path / "cli"
    assert export_main(["--model", "rs-tiny", "--random-init", "--image-size", "96", "--output", str(out),
                        "--legacy-layout", "--interpolation", "bicubic", "--align-corners", "true"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["positions"] == 145
    assert (out / "legacy" / "model.safetensors").is_file()
    assert export_main(["--model", "RN50", "--random-init", "--output", str(tmp_path / "rn")]) == 2
    assert "ResNet" in capsys.readouterr().err
    assert export_main(["--model", "ViT-L-14-336", "--random-init", "--image-size", "500",
                        "--output", str(tmp_path / "bad")]) == 2
    assert "504" in capsys.readouterr().err
    assert export_main(["--model", "no-such-model", "--random-init", "--output", str(tmp_path / "nm")]) == 2
    for argv in (["--model", "rs-tiny", "--checkpoint", str(tmp_path / "missing.pt"), "--output", str(out)],
                 ["--model", "rs-tiny", "--output", str(out)]):
        with pytest.raises(SystemExit) as exc:
            export_main(argv)
        assert exc.value.code == 2
    assert "no such file" in capsys.readouterr().err



@pytest.mark.parametrize("name,width,layers,patch,size", [("ViT-B-16", 768, 12, 16, 512), ("ViT-L-14", 1024, 24, 14, 504),
                                                          ("ViT-B-32", 768, 12, 32, 512)])
def test_other_vit_shapes_map_onto_hf(name, width, layers, patch, size):
    """Every key and shape of the exported state dict matches CLIPVisionModelWithProjection's (meta device)."""
    model = open_clip.create_model(name, device="meta")
    cfg = hf_vision_config(model.visual, size)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.patch_size, cfg.image_size) == (width, layers, patch, size)
    state = open_clip_to_hf(model.visual.state_dict())
    with torch.device("meta"):
        ref = CLIPVisionModelWithProjection(hf_vision_config(model.visual)).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in ref.items()}


def test_cli_bad_inputs_are_one_line_errors(stage1_checkpoints, tmp_path, capsys):
    _, step, final = stage1_checkpoints
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "zero.pt").write_bytes(b"")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "final.safetensors").write_bytes(final.read_bytes())
    out = ["--output", str(tmp_path / "out")]
    cases = [
        (["--model", "rs-tiny", "--checkpoint", str(tmp_path / "zero.pt")] + out, "zero.pt: empty file"),
        (["--model", "rs-tiny", "--checkpoint", str(tmp_path / "file.txt")] + out, "not a checkpoint"),
        (["--model", "rs-tiny", "--checkpoint", str(tmp_path / "empty")] + out, "checkpoint folder holds none of"),
        (["--model", "rs-tiny", "--checkpoint", str(step), "--output", str(tmp_path / "file.txt")],
         "exists and is not a folder"),
        (["--model", "ViT-B-16", "--checkpoint", str(final)] + out, "its shapes match rs-tiny"),
    ]
    for argv, says in cases:
        assert export_main(argv) == 2, argv
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert "Traceback" not in err and len(lines) == 1 and says in lines[0], (argv, err)
    # a run folder works like the file inside it
    assert export_main(["--model", "rs-tiny", "--checkpoint", str(run_dir), "--output", str(tmp_path / "from_dir")]) == 0
    a = load_file(str(tmp_path / "from_dir" / "model.safetensors"))
    b = load_file(str(export_vision_tower(final, "rs-tiny", None, tmp_path / "from_file") / "model.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
