"""What the tools print: --help that renders with real metavars, repeated flags that keep every value, and no
noise (open_clip's INFO lines and "No pretrained weights" warning, transformers' load report of our own towers)."""

from __future__ import annotations

import importlib
import logging
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = sorted(p.stem for p in (ROOT / "launch").glob("*.py") if p.stem not in ("__init__", "demo"))


@pytest.mark.parametrize("tool", TOOLS)
def test_help_renders_with_real_metavars(tool, capsys):
    main = importlib.import_module(f"launch.{tool}").main
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "usage:" in out
    assert "'option_strings'" not in out, "a literal % in a help text broke argparse's formatting"
    for vague in (" A [A ...]", " VALUE", " STR "):
        assert vague not in out, (vague, [line for line in out.splitlines() if vague in line][:3])


def test_percent_in_help_is_shown_literally(capsys):
    from launch.pretrain_clip import main

    with pytest.raises(SystemExit):
        main(["--help"])
    assert "~30% slower" in " ".join(capsys.readouterr().out.split())


def test_a_repeated_list_flag_keeps_every_value():
    from rs_common.config import config_parser, parse_config
    from vlm_finetune.instruct import InstructConfig

    parser = config_parser(InstructConfig, "x")
    cfg = parse_config(parser, InstructConfig, ["--input", "dota:/a", "--input", "folders:/b", "--output", "o.json"])
    assert cfg.input == ["dota:/a", "folders:/b"]
    cfg = parse_config(parser, InstructConfig, ["--input", "dota:/a", "folders:/b", "--output", "o.json"])
    assert cfg.input == ["dota:/a", "folders:/b"]


def test_build_instruct_with_two_input_flags_reads_both(tmp_path):
    from launch.build_instruct import main
    from tests.hostile import files as f

    f.scene_folders(tmp_path / "aid", classes=("farmland", "harbor"))
    f.dota(tmp_path / "dota", {"P0": "10 10 30 10 30 20 10 20 plane 0\n"})
    out = tmp_path / "instruct.json"
    assert main(["--input", f"folders:{tmp_path / 'aid'}", "--input", f"dota:{tmp_path / 'dota'}", "--output", str(out),
                 "--image-root", str(tmp_path)]) == 0
    import json

    images = {r["image"].split("/", 1)[0] for r in json.loads(out.read_text())}
    assert images == {"aid", "dota"}


def test_loading_a_checkpoint_says_nothing_about_random_weights(tmp_path, caplog):
    import torch

    from clip_pretrain.checkpoint import save_safetensors
    from clip_pretrain.models import create_clip

    path = tmp_path / "final.safetensors"
    save_safetensors(create_clip("rs-tiny").model.state_dict(), path)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        bundle = create_clip("rs-tiny", path)
    assert isinstance(bundle.model, torch.nn.Module)
    assert "No pretrained weights loaded" not in caplog.text


def test_our_exported_tower_loads_without_a_load_report(tmp_path, capfd, caplog):
    import clip_pretrain  # noqa: F401 - registers rs-tiny
    from vlm_finetune.export import export_vision_tower
    from vlm_finetune.parts import load_vision_tower

    tower = export_vision_tower(None, "rs-tiny", 32, tmp_path / "tower")
    capfd.readouterr()
    with caplog.at_level(logging.WARNING):
        model = load_vision_tower(tower)
    printed = capfd.readouterr()
    assert "LOAD REPORT" not in printed.out + printed.err + caplog.text
    assert not [n for n, p in model.named_parameters() if p.device.type == "meta"]


def test_cli_shows_our_progress_lines_but_not_open_clips(tmp_path):
    """A command-line run: open_clip's INFO lines (root logger) are off, ours are on; RS_LOG_LEVEL=INFO shows all."""
    code = ("import logging, sys; from rs_common.config import setup_logging; setup_logging(); "
            "logging.getLogger().info('OPEN_CLIP_INFO'); logging.getLogger('clip_pretrain.train').info('OUR_INFO')")
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "OUR_INFO" in quiet.stderr and "OPEN_CLIP_INFO" not in quiet.stderr
    loud = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={"RS_LOG_LEVEL": "INFO", "PATH": "/usr/bin:/bin"})
    assert "OUR_INFO" in loud.stderr and "OPEN_CLIP_INFO" in loud.stderr
