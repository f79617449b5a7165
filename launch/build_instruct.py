r"""Build GeoChat instruction data (LLaVA json) from stage-0 datasets.

    python launch/build_instruct.py --input dota:data/dota folders:data/aid captions:data/ucm \
        --output runs/instruct.json [--image-root data] [--seed 0] [--tasks refer grounding identify]

Each record's "image" is relative to --image-root (default: the deepest folder holding every input, printed as
image_root); pass that folder as --images to launch/finetune_geochat.py. Tasks: refer, grounding, identify,
region_caption, count, presence (box datasets), scene (folders), caption (captions). --config YAML gives any option.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too

from rs_common.config import run_config_tool
from vlm_finetune.instruct import InstructConfig, InstructError, run_build_instruct


def main(argv: list[str] | None = None) -> int:
    return run_config_tool(InstructConfig, run_build_instruct, argv, __doc__, (InstructError, OSError))


if __name__ == "__main__":
    sys.exit(main())
