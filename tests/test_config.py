"""Typed configs: YAML < command line, and bad values rejected before any work, naming the key."""

import pytest

from shards.build_config import BuildConfig
from shards.cli import build_parser, main as build_main
from rs_common.config import ConfigError, load_config, overrides_from_args


def test_yaml_then_cli_overrides(tmp_path):
    yml = tmp_path / "c.yaml"
    yml.write_text("workers: 3\ndedup:\n  threshold: 1\nb2c:\n  many_above: 5\ncaptions:\n  train_splits: [train]\n")
    cfg = load_config(BuildConfig, yml, {"dedup.threshold": "2", "image.max_side": "1024"})
    assert cfg.workers == 3 and cfg.dedup.threshold == 2 and cfg.b2c.many_above == 5
    assert cfg.image.max_side == 1024 and cfg.captions.train_splits == ["train"]


def test_cli_flags_cover_every_config_key():
    args = build_parser().parse_args(["--input", "dota:/x", "--output", "/o", "--b2c.centre-fraction", "0.4", "--masks.classes", '{"2": "building"}'])
    over = overrides_from_args(args)
    cfg = load_config(BuildConfig, None, over)
    assert cfg.b2c.centre_fraction == 0.4 and cfg.masks.classes == {"2": "building"}


@pytest.mark.parametrize(
    "yaml_text, needle",
    [
        ("dedup:\n  threshold: -1\n", "dedup.threshold"),
        ("writer:\n  shard_size: 0\n", "writer.shard_size"),
        ("b2c:\n  centre_fraction: 2\n", "b2c.centre_fraction"),
        ("image:\n  jpeg_quality: 101\n", "image.jpeg_quality"),
        ("dedupe:\n  threshold: 2\n", "unknown key"),
        ("workers: lots\n", "workers"),
        ("folders:\n  templates: ['no placeholder']\n", "folders.templates"),
    ],
)
def test_bad_config_values_fail_early_with_the_key(tmp_path, yaml_text, needle):
    yml = tmp_path / "bad.yaml"
    yml.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(BuildConfig, yml)
    assert needle in str(info.value) and str(yml) in str(info.value)


def test_cli_rejects_bad_value_before_work(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    with pytest.raises(SystemExit) as info:
        build_main(["--input", f"dota:{tmp_path / 'in'}", "--output", str(tmp_path / "out"), "--dedup.threshold", "99"])
    assert info.value.code == 2
    assert "dedup.threshold" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_rejects_unknown_format_and_missing_path(tmp_path, capsys):
    with pytest.raises(SystemExit):
        build_main(["--input", f"kitti:{tmp_path}", "--output", str(tmp_path / "o")])
    assert "unknown format 'kitti'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_main(["--input", f"dota:{tmp_path / 'nope'}", "--output", str(tmp_path / "o")])
    assert "does not exist" in capsys.readouterr().err


def test_bare_bool_flags_and_multi_value_lists():
    """open_clip_train users write `--local-loss --gather-with-grad` and `--ks 1 5 10`; both forms parse."""
    import argparse

    from clip_pretrain.config import TrainConfig
    from rs_common.config import add_config_args, overrides_from_args

    parser = argparse.ArgumentParser()
    add_config_args(parser, TrainConfig)
    args = parser.parse_args(["--local-loss", "--gather-with-grad", "false", "--aug.rotations", "0", "180",
                              "--aug.crop-scale", "0.8,1.0"])
    over = overrides_from_args(args)
    assert over["local_loss"] == "true" and over["gather_with_grad"] == "false"
    with pytest.raises(ConfigError, match="together"):
        load_config(TrainConfig, overrides=over)
    over["gather_with_grad"] = "true"
    cfg = load_config(TrainConfig, overrides=over)
    assert cfg.local_loss and cfg.aug.rotations == [0, 180] and cfg.aug.crop_scale == [0.8, 1.0]
