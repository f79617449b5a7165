"""Weights files are read safely and bad ones fail as one line naming the file.

* A TorchScript archive (what ``torch.jit.load`` reads, running the code stored in it) is refused by every tool that
  takes a checkpoint unless ``--allow-torchscript`` is given, and ``torch.jit.load`` is never called on it.
* Empty, truncated and foreign weights files are one-line errors naming the file (CLIP checkpoints and every
  transformers folder of stage two), never a traceback.
* A checkpoint loaded as the wrong ``--model`` is one line: counts and first examples of the mismatches, and the
  registered model whose shapes it has, found before the model is built.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path
from typing import Tuple

import pytest
import torch
from PIL import Image
from torch import Tensor

import clip_pretrain  # noqa: F401 - registers rs-tiny
from clip_pretrain.checkpoint import save_safetensors
from clip_pretrain.models import (
    CheckpointError,
    check_fits,
    create_clip,
    is_torchscript,
    matching_models,
    read_state_dict,
    weight_mismatch,
)
from launch import eval_retrieval, eval_zeroshot, export_vision_tower

PAYLOAD_MARK = "PAYLOAD RAN AT LOAD"


def one_error_line(err: str, *needles) -> str:
    """The single ``error: ...`` line of a CLI's stderr (log lines may surround it); no traceback; each needle in it."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


class Payload(torch.nn.Module):
    """A TorchScript module whose ``__setstate__`` (compiled into the archive) prints when the archive is loaded:
    loading alone runs code stored in the file."""

    def __init__(self):
        super().__init__()
        self.marker = torch.zeros(1)

    def forward(self, x: Tensor) -> Tensor:
        return x

    @torch.jit.export
    def __getstate__(self) -> Tuple[Tensor, bool]:
        return (self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[Tensor, bool]) -> None:
        print("PAYLOAD RAN AT LOAD")
        self.marker = state[0]
        self.training = state[1]


@pytest.fixture(scope="module")
def payload(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ts") / "ViT-B-32.pt"
    torch.jit.save(torch.jit.script(Payload()), str(path))
    return path


@pytest.fixture
def jit_calls(monkeypatch) -> list:
    """Every torch.jit.load call, recorded (then passed on, so a missed guard would also show the payload's print)."""
    calls: list = []
    real = torch.jit.load

    def recording(f, *args, **kwargs):
        calls.append(str(f))
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch.jit, "load", recording)
    return calls


@pytest.fixture(scope="module")
def rs_tiny_files(tmp_path_factory):
    """rs-tiny weights as final.safetensors, plus broken copies: zero bytes, truncated safetensors and .pt."""
    root = tmp_path_factory.mktemp("weights")
    model = create_clip("rs-tiny").model
    final = root / "final.safetensors"
    save_safetensors(model.state_dict(), final)
    data = final.read_bytes()
    (root / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (root / "zero.pt").write_bytes(b"")
    torch.save({"state_dict": model.state_dict()}, root / "step.pt")
    pt = (root / "step.pt").read_bytes()
    (root / "truncated.pt").write_bytes(pt[: len(pt) // 2])
    (root / "notes.pt").write_text("not weights at all")
    return {"model": model, "final": final, "root": root}


def scene_folders(root: Path) -> Path:
    for i, name in enumerate(("Forest", "Lake")):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (40, 40), (30, 150 if i == 0 else 30, 200 if i else 30)).save(root / name / "a.png")
    return root


def caption_set(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    entries = []
    for i, text in enumerate(("a green forest .", "a blue lake .")):
        Image.new("RGB", (40, 40), (30 * i, 120, 90)).save(root / "images" / f"{i}.png")
        entries.append({"filename": f"{i}.png", "split": "test", "sentences": [{"raw": text}]})
    (root / "dataset.json").write_text(json.dumps({"images": entries}))
    return root / "dataset.json"


def cli_cases(tmp_path: Path, checkpoint: Path) -> dict:
    """argv of each CLI that takes a CLIP checkpoint, with valid inputs around ``checkpoint``."""
    return {
        "eval_retrieval": (eval_retrieval.main, ["--model", "rs-tiny", "--checkpoint", checkpoint, "--captions",
                                                 caption_set(tmp_path / "caps"), "--output", tmp_path / "r",
                                                 "--workers", "0", "--device", "cpu", "--report-queries", "0"]),
        "eval_zeroshot": (eval_zeroshot.main, ["--model", "rs-tiny", "--checkpoint", checkpoint, "--data",
                                               scene_folders(tmp_path / "scenes"), "--output", tmp_path / "z",
                                               "--workers", "0", "--device", "cpu"]),
        "export_vision_tower": (export_vision_tower.main, ["--model", "rs-tiny", "--checkpoint", checkpoint,
                                                           "--output", tmp_path / "e"]),
    }


# ------------------------------------------------------------------------------------------------ TorchScript


def test_the_payload_runs_code_when_loaded(payload, capfd):
    """The fixture is a real hazard: torch.jit.load of it executes the code stored in the file."""
    torch.jit.load(str(payload))
    assert PAYLOAD_MARK in capfd.readouterr().out


def test_loaders_refuse_torchscript_without_loading_it(payload, jit_calls, tmp_path, capfd, monkeypatch):
    from clip_pretrain.identity import read_identity
    from vlm_finetune.export import export_vision_tower as export_api

    torch_loads: list = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: torch_loads.append(a) or real_load(*a, **k))
    for call in (lambda: read_state_dict(payload), lambda: create_clip("rs-tiny", payload),
                 lambda: export_api(payload, "rs-tiny", None, tmp_path / "out")):
        with pytest.raises(CheckpointError) as exc:
            call()
        assert str(payload) in str(exc.value) and "--allow-torchscript" in str(exc.value)
        assert "\n" not in str(exc.value)
    assert read_identity(payload) is None  # what step_N.pt records is never read from a TorchScript archive
    as_bin = tmp_path / "pytorch_model.bin"  # the name does not matter, the content does
    shutil.copy(payload, as_bin)
    with pytest.raises(CheckpointError, match="--allow-torchscript"):
        create_clip("rs-tiny", tmp_path)  # a folder holding it
    assert jit_calls == [] and torch_loads == []
    assert PAYLOAD_MARK not in capfd.readouterr().out
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("tool", ["eval_retrieval", "eval_zeroshot", "export_vision_tower"])
def test_clis_refuse_torchscript_with_one_line(tool, payload, jit_calls, tmp_path, capfd):
    main, argv = cli_cases(tmp_path, payload)[tool]
    assert main([str(a) for a in argv]) == 2
    out, err = capfd.readouterr()
    one_error_line(err, payload, "--allow-torchscript")
    assert jit_calls == [] and PAYLOAD_MARK not in out


def test_crafted_archive_layouts_are_recognised(tmp_path, rs_tiny_files):
    top_code = tmp_path / "top_code.pt"
    with zipfile.ZipFile(top_code, "w") as zf:  # code/ at the top level, no constants.pkl
        zf.writestr("code/__torch__.py", "def f(): pass\n")
        zf.writestr("data.pkl", b"\x80\x02}q\x00.")
    constants = tmp_path / "constants.pt"
    with zipfile.ZipFile(constants, "w") as zf:
        zf.writestr("deep/er/constants.pkl", b"\x80\x02).")
    assert is_torchscript(top_code) and is_torchscript(constants)
    for path in (top_code, constants):
        with pytest.raises(CheckpointError, match="--allow-torchscript"):
            read_state_dict(path)
    root = rs_tiny_files["root"]
    for plain in (root / "step.pt", root / "final.safetensors", root / "truncated.pt", root / "zero.pt"):
        assert not is_torchscript(plain)


class _OpenAIStyle(torch.nn.Module):
    """rs-tiny's modules and parameters under a forward TorchScript can trace (OpenAI's archives are a whole
    scripted CLIP: open_clip state-dict names, QuickGELU)."""

    def __init__(self, model):
        super().__init__()
        for name, child in model.named_children():
            setattr(self, name, child)
        for name, param in model.named_parameters(recurse=False):
            self.register_parameter(name, param)

    def forward(self, x):
        return self.visual(x)


def test_allow_torchscript_loads_an_openai_style_archive(tmp_path, jit_calls, capsys):
    source = create_clip("rs-tiny", force_quick_gelu=True).model.eval()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.01)
    archive = tmp_path / "rs-tiny-openai.pt"
    torch.jit.save(torch.jit.trace(_OpenAIStyle(source), torch.randn(1, 3, 64, 64), check_trace=False), str(archive))
    bundle = create_clip("rs-tiny", archive, allow_torchscript=True)
    assert bundle.quick_gelu  # OpenAI weights were trained with QuickGELU
    loaded = bundle.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in source.state_dict().items())
    assert jit_calls == [str(archive)]
    out = tmp_path / "tower"
    assert export_vision_tower.main(["--model", "rs-tiny", "--checkpoint", str(archive), "--output", str(out),
                                     "--allow-torchscript"]) == 0
    assert json.loads((out / "config.json").read_text())["hidden_act"] == "quick_gelu"
    capsys.readouterr()
    cases = cli_cases(tmp_path, archive)
    for tool in ("eval_zeroshot", "eval_retrieval"):  # the flag reaches the loader of both evaluations
        main, argv = cases[tool]
        assert main([str(a) for a in argv] + ["--allow-torchscript"]) == 0, capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ bad CLIP files


@pytest.mark.parametrize("name,says", [("zero.pt", "empty file"), ("truncated.safetensors", "truncated"),
                                       ("truncated.pt", "truncated"), ("notes.pt", "not a checkpoint")])
def test_bad_checkpoint_files_are_one_line_errors(rs_tiny_files, name, says, tmp_path, capfd):
    path = rs_tiny_files["root"] / name
    with pytest.raises(CheckpointError) as exc:
        read_state_dict(path)
    assert str(path) in str(exc.value) and says in str(exc.value) and "\n" not in str(exc.value)
    for tool, (main, argv) in cli_cases(tmp_path / name, path).items():
        assert main([str(a) for a in argv]) == 2, tool
        one_error_line(capfd.readouterr().err, path, says)


def test_pickled_objects_are_refused_by_name(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "when": io.StringIO("x")}, path)
    with pytest.raises(CheckpointError, match="objects other than tensors.*weights_only"):
        read_state_dict(path)


# ------------------------------------------------------------------------------------------------ wrong --model


def test_wrong_model_is_one_line_with_the_matching_model(rs_tiny_files, tmp_path, capfd, monkeypatch):
    import open_clip

    state = read_state_dict(rs_tiny_files["final"])
    assert weight_mismatch(rs_tiny_files["model"], state) is None
    assert matching_models(state)[:1] == ["rs-tiny"]
    built: list = []
    real = open_clip.create_model_and_transforms
    monkeypatch.setattr(open_clip, "create_model_and_transforms", lambda *a, **k: built.append(a) or real(*a, **k))
    with pytest.raises(CheckpointError) as exc:
        check_fits("ViT-B-32", state, source="final.safetensors")
    assert "\n" not in str(exc.value)
    assert export_vision_tower.main(["--model", "ViT-B-32", "--checkpoint", str(rs_tiny_files["final"]),
                                     "--output", str(tmp_path / "e")]) == 2
    line = one_error_line(capfd.readouterr().err, rs_tiny_files["final"], "'ViT-B-32'", "missing key",
                          "shape mismatch", "visual.conv1.weight checkpoint (128, 3, 8, 8) vs model (768, 3, 32, 32)",
                          "pass the --model the checkpoint was trained as", "its shapes match rs-tiny")
    assert len(line) < 600
    assert built == []  # refused from the shapes alone: the full model was never built
    assert not (tmp_path / "e").exists()


def test_wrong_model_at_load_time_is_one_line_too(rs_tiny_files):
    """load_weights (the check after the real build) words it the same way, e.g. a ViT-B-32 state into rs-tiny."""
    from clip_pretrain.models import load_weights

    state = {f"visual.{k}": torch.zeros(3) for k in ("conv1.weight", "class_embedding")}
    with pytest.raises(CheckpointError) as exc:
        load_weights(create_clip("rs-tiny").model, state, source="odd.pt", model_name="rs-tiny")
    msg = str(exc.value)
    assert msg.startswith("odd.pt: weights do not fit model 'rs-tiny'") and "\n" not in msg
    assert "missing key(s)" in msg and "shape mismatch(es) (first: visual.conv1.weight checkpoint (3,) vs model" in msg


# ------------------------------------------------------------------------------------------------ stage two


@pytest.fixture(scope="module")
def geochat_dir(tmp_path_factory) -> Path:
    from tests.test_geochat import make_tokenizer, tiny_llm, write_tower
    from vlm_finetune.geochat import assemble_geochat, save_geochat

    root = tmp_path_factory.mktemp("gc")
    tiny_llm().save_pretrained(str(root / "llm"))
    make_tokenizer().save_pretrained(str(root / "llm"))
    model, processor = assemble_geochat(write_tower(root / "tower"), root / "llm")
    save_geochat(model, processor, root / "model")
    (root / "imgs").mkdir()
    Image.new("RGB", (64, 48), (30, 90, 30)).save(root / "imgs" / "img0.png")
    record = {"id": "r0", "image": "img0.png", "conversations": [
        {"from": "human", "value": "<image>\ndescribe the image"}, {"from": "gpt", "value": "a green field"}]}
    (root / "data.json").write_text(json.dumps([record]))
    return root


def broken_copy(src: Path, dst: Path, name: str, how: str) -> Path:
    shutil.copytree(src, dst)
    data = (dst / name).read_bytes()
    (dst / name).write_bytes(b"" if how == "empty" else data[: len(data) // 2])
    return dst / name


@pytest.mark.parametrize("how", ["truncated", "empty"])
def test_broken_geochat_weights_are_one_line_in_every_tool(geochat_dir, tmp_path, capfd, monkeypatch, how):
    import transformers

    from launch import convert_geochat, eval_geochat, finetune_geochat, geochat_infer
    from vlm_finetune.geochat import GeoChatError, load_geochat

    model = tmp_path / "model"
    bad = broken_copy(geochat_dir / "model", model, "model.safetensors", how)
    with pytest.raises(GeoChatError) as exc:
        load_geochat(model)
    assert str(bad) in str(exc.value) and "\n" not in str(exc.value)
    # caught by the cheap header check: transformers never starts loading it
    monkeypatch.setattr(transformers.LlavaForConditionalGeneration, "from_pretrained",
                        classmethod(lambda *a, **k: pytest.fail("weights loaded before the check")))
    root = geochat_dir
    runs = {
        "eval_geochat": (eval_geochat.main, ["--model", model, "--task", "vqa", "--data", root / "data.json",
                                             "--images", root / "imgs", "--output", tmp_path / "ev"]),
        "geochat_infer": (geochat_infer.main, ["--model", model, "--image", root / "imgs" / "img0.png", "--prompt",
                                               "describe the image", "--output", tmp_path / "drawn.png"]),
        "convert_geochat": (convert_geochat.main, ["--llava-checkpoint", model, "--output", tmp_path / "conv"]),
        "finetune_geochat": (finetune_geochat.main, ["--model", model, "--data", root / "data.json", "--images",
                                                     root / "imgs", "--output", tmp_path / "ft"]),
    }
    for tool, (main, argv) in runs.items():
        assert main([str(a) for a in argv]) == 2, tool
        one_error_line(capfd.readouterr().err, bad)


def test_broken_tower_llm_projector_and_hf_weights(geochat_dir, tmp_path):
    from vlm_finetune.convert import ConversionError, load_state_dict_dir
    from vlm_finetune.export import ExportError, read_hf_weights
    from vlm_finetune.geochat import GeoChatError, assemble_geochat
    from vlm_finetune.parts import projector_state_dict

    tower_file = broken_copy(geochat_dir / "tower", tmp_path / "tower", "model.safetensors", "truncated")
    llm_file = broken_copy(geochat_dir / "llm", tmp_path / "llm", "model.safetensors", "empty")
    for call, path, error in (
            (lambda: assemble_geochat(tmp_path / "tower", geochat_dir / "llm"), tower_file, GeoChatError),
            (lambda: assemble_geochat(geochat_dir / "tower", tmp_path / "llm"), llm_file, GeoChatError),
            (lambda: read_hf_weights(tmp_path / "tower"), tower_file, ExportError),
            (lambda: load_state_dict_dir(tmp_path / "llm"), llm_file, ConversionError)):
        with pytest.raises(error) as exc:
            call()
        assert str(path) in str(exc.value) and "\n" not in str(exc.value)
    projector = tmp_path / "mm_projector.bin"
    torch.save({"model.mm_projector.0.weight": torch.zeros(64, 32)}, projector)
    projector.write_bytes(projector.read_bytes()[:-40])
    with pytest.raises(GeoChatError, match="mm_projector.bin: truncated or corrupt"):
        projector_state_dict(projector)
    index = tmp_path / "sharded"
    index.mkdir()
    (index / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "model-1.safetensors"}}))
    with pytest.raises(ConversionError, match="model-1.safetensors"):
        load_state_dict_dir(index)
    (index / "model.safetensors.index.json").write_text("[1, 2]")
    with pytest.raises(ExportError, match="not a weight index"):
        read_hf_weights(index)
