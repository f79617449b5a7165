"""A model's identity travels with its weights: open_clip_config.json beside every checkpoint, read by every tool
that takes one (no --model needed, a contradicting one refused), QuickGELU kept from training to GeoChat."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

import clip_pretrain  # noqa: F401 - registers rs-tiny
from clip_pretrain.checkpoint import save_safetensors
from clip_pretrain.identity import CONFIG_NAME, read_identity
from clip_pretrain.models import CheckpointError, create_clip
from rs_common.config import load_config
from synthetic.tiny_shards import write_tiny_shards


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    """rs-tiny trained 2 steps with --force-quick-gelu."""
    from clip_pretrain.config import TrainConfig
    from clip_pretrain.train import train

    root = tmp_path_factory.mktemp("quick")
    shards = write_tiny_shards(root / "shards", n=32, shard_size=16)
    cfg = load_config(TrainConfig, overrides=dict(
        train_data=str(shards), model="rs-tiny", force_quick_gelu="true", batch_size=8, max_steps=2, warmup=1,
        workers=0, device="cpu", output=str(root / "run"), save_every_steps=1, log_every_steps=1, shuffle_buffer=8))
    train(cfg)
    return root / "run"


def test_every_checkpoint_has_its_config_in_open_clips_snapshot_layout(quick_run):
    for folder in (quick_run, quick_run / "checkpoints"):
        data = json.loads((folder / CONFIG_NAME).read_text())
        assert data["model_name"] == "rs-tiny" and data["model_cfg"]["quick_gelu"] is True
        assert data["model_cfg"]["vision_cfg"] == open_clip.get_model_config("rs-tiny")["vision_cfg"]
        assert {"mean", "std", "size"} <= set(data["preprocess_cfg"])
    for path in (quick_run / "final.safetensors", quick_run / "checkpoints" / "latest", quick_run):
        identity = read_identity(path)
        assert identity.name == "rs-tiny" and identity.quick_gelu, path
    # plain open_clip reads the run folder as a hub snapshot: config + weights, QuickGELU included
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{quick_run}")
    assert isinstance(model.visual.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)


def test_export_without_model_or_activation_flags_keeps_quick_gelu(quick_run, tmp_path):
    """The issue's test: no --model, no activation flag; the HF tower says quick_gelu and its features match
    open_clip's model built from the checkpoint with QuickGELU."""
    from transformers import CLIPVisionModelWithProjection

    from launch.export_vision_tower import main as export_main

    out = tmp_path / "tower"
    assert export_main(["--checkpoint", str(quick_run / "final.safetensors"), "--output", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["hidden_act"] == "quick_gelu"
    hf = CLIPVisionModelWithProjection.from_pretrained(str(out)).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = hf(pixel_values=x).image_embeds
        ref = reference_model(quick_run, quick_gelu=True).encode_image(x)
        gelu = reference_model(quick_run, quick_gelu=False).encode_image(x)
    assert (ours - ref).abs().max().item() < 1e-4
    assert (ours - gelu).abs().max().item() > 1e-3  # the activation matters for these weights: the check can fail


def reference_model(run: Path, quick_gelu: bool) -> torch.nn.Module:
    """The run's final weights in a model built by plain open_clip, with the activation given."""
    from safetensors.torch import load_file

    model = open_clip.create_model("rs-tiny", force_quick_gelu=quick_gelu, output_dict=True)
    model.load_state_dict(load_file(run / "final.safetensors"))
    return model.eval()


def test_eval_tools_without_model_flag_read_model_and_activation(quick_run, tmp_path):
    """eval_retrieval and eval_zeroshot with --checkpoint only: the recorded model with QuickGELU, whose embeddings
    are plain open_clip's QuickGELU model's (and not the GELU model's)."""
    from clip_pretrain.evaluate.embedding import embed_eval_set
    from clip_pretrain.evaluate.eval_sets import load_shard_eval_set
    from clip_pretrain.models import ClipBundle
    from launch.eval_retrieval import main as retrieval_main
    from launch.eval_zeroshot import main as zeroshot_main

    shards, ckpt = quick_run.parent / "shards", quick_run / "final.safetensors"
    out = tmp_path / "retrieval"
    assert retrieval_main(["--checkpoint", str(ckpt), "--shards", str(shards), "--output", str(out), "--workers", "0",
                           "--save-embeddings", "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "rs-tiny" and metrics["quick_gelu"] is True
    image_emb = np.load(out / "image_emb.npy")
    _, preprocess_train, preprocess_val = open_clip.create_model_and_transforms("rs-tiny")
    for quick_gelu, close in ((True, True), (False, False)):
        ref = ClipBundle("rs-tiny", reference_model(quick_run, quick_gelu), preprocess_train, preprocess_val,
                         open_clip.get_tokenizer("rs-tiny"), quick_gelu)
        ref_emb = embed_eval_set(ref, load_shard_eval_set(str(shards)), torch.device("cpu"))[0]
        assert (np.abs(image_emb - ref_emb).max() < 1e-4) == close, quick_gelu

    classes = tmp_path / "classes"
    for i, colour in enumerate(("red", "green", "blue", "red", "green", "blue")):
        (classes / colour).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 64), colour).save(classes / colour / f"{i}.png")
    assert zeroshot_main(["--checkpoint", str(ckpt), "--data", str(classes), "--output", str(tmp_path / "zs"),
                          "--workers", "0", "--device", "cpu"]) == 0
    zs = json.loads((tmp_path / "zs" / "metrics.json").read_text())
    assert zs["model"] == "rs-tiny" and zs["quick_gelu"] is True and zs["n_images"] == 6
    # a --model that contradicts the record stops with one line, before anything is embedded
    assert retrieval_main(["--model", "ViT-B-32", "--checkpoint", str(ckpt), "--shards", str(shards),
                           "--output", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()


def test_a_contradicting_model_name_is_a_clear_error(quick_run):
    with pytest.raises(CheckpointError, match="records the weights as 'rs-tiny'.*--model 'ViT-B-32'"):
        create_clip("ViT-B-32", quick_run / "final.safetensors")
    assert create_clip("rs-tiny", quick_run / "final.safetensors").quick_gelu  # agreeing is fine


def test_a_hub_snapshot_folder_gives_model_and_activation(tmp_path):
    """An open_clip hub snapshot (open_clip_config.json without a model name, open_clip_model.safetensors)."""
    bundle = create_clip("rs-tiny")
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    save_safetensors(bundle.model.state_dict(), snapshot / "open_clip_model.safetensors")
    cfg = dict(open_clip.get_model_config("rs-tiny"), quick_gelu=True)
    (snapshot / CONFIG_NAME).write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    loaded = create_clip(None, snapshot)
    assert loaded.name == "rs-tiny" and loaded.quick_gelu


def test_openai_weights_get_quick_gelu_in_any_form(tmp_path):
    """A state dict re-saved from OpenAI's TorchScript release keeps its extra buffers: QuickGELU, and they are
    dropped before loading."""
    state = create_clip("rs-tiny").model.state_dict()
    state.update(input_resolution=torch.tensor(64), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    path = tmp_path / "openai_resaved.pt"
    torch.save(state, path)
    assert create_clip("rs-tiny", path).quick_gelu
    with pytest.raises(CheckpointError, match="--model is required"):
        create_clip(None, path)  # nothing records the name of a bare state dict
