"""``launch/pretrain_clip.py``: parse flags (open_clip_train's names) + YAML, then ``train.train``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from clip_pretrain.config import TrainConfig
from shards.config import ConfigError, add_config_args, load_config, overrides_from_args

EXAMPLES = """examples:
  # a few hundred CPU steps of the tiny model on the demo shards
  python launch/pretrain_clip.py --train-data runs/demo/shards --model rs-tiny --batch-size 32 --epochs 20 --device cpu
  # continual pretraining of OpenAI ViT-B-32 on 8 GPUs (RemoteCLIP's settings), resumable
  torchrun --nproc_per_node 8 launch/pretrain_clip.py --train-data 'shards/shard-{000000..000165}.tar' \\
      --model ViT-B-32 --pretrained ~/weights/ViT-B-32.pt --batch-size 256 --lr 4e-5 --warmup 1000 \\
      --epochs 10 --precision amp --output runs/rs-vitb32 --resume latest --report-to wandb
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pretrain_clip.py", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="YAML config; every key below is also a flag")
    parser.add_argument("--run-steps", type=int, default=0,
                        help="stop THIS invocation after N steps with a checkpoint (schedule unchanged; for time-limited jobs)")
    add_config_args(parser, TrainConfig)
    return parser


def expected_errors() -> tuple[type[BaseException], ...]:
    """What bad input or a stopped run raises: each becomes one ``error:`` line and exit status 2, no traceback."""
    from clip_pretrain.checkpoint import ResumeError
    from clip_pretrain.data import DataError
    from clip_pretrain.models import CheckpointError
    from clip_pretrain.train import TrainingDiverged
    from shards.guards import OutputBusyError

    return (ConfigError, DataError, TrainingDiverged, CheckpointError, ResumeError, OutputBusyError, FileNotFoundError,
            ValueError)


def one_line(exc: BaseException) -> str:
    """The error's message on one line (some messages carry newlines; some exceptions have none at all)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(TrainConfig, args.config, overrides_from_args(args))
    except ConfigError as exc:
        parser.error(str(exc))
    if args.run_steps < 0:
        parser.error(f"--run-steps must be >= 0, got {args.run_steps}")
    if not cfg.train_data:
        parser.error("--train-data is required (stage-0 shards: a folder, a brace pattern or a '::' list)")
    from clip_pretrain.train import train  # heavy imports after argument checks

    try:
        summary = train(cfg, run_steps=args.run_steps)
    except expected_errors() as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary))
    return 0
