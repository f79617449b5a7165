"""Contrastive (continual) pretraining of an open_clip model on stage-0 shards. See --help.

    torchrun --nproc_per_node 8 launch/pretrain_clip.py --train-data DIR --model ViT-B-32 --pretrained FILE ...
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too

from clip_pretrain.cli import parse_train_command, run_train_command  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return run_train_command(*parse_train_command(argv))  # --config FILE is kept as OUTPUT/recipe.yaml


if __name__ == "__main__":
    sys.exit(main())
