r"""Build GeoChat instruction data (LLaVA json) from stage-0 datasets, RSVQA and GeoChat-Bench files.

    python launch/build_instruct.py --input dota:data/dota folders:data/aid captions:data/ucm \
        --output runs/instruct.json [--image-root data] [--seed 0] [--tasks refer grounding identify] \
        [--turns single|multi|both] [--max-turns 3]
    python launch/build_instruct.py --input rsvqa:data/RSVQA_LR geochat-bench:bench/referring.jsonl \
        --bench-images bench/images --output runs/vqa.json --turns multi

Each record's "image" is relative to --image-root (default: the deepest folder holding every input, printed as
image_root); pass that folder as --images to launch/finetune_geochat.py. Tasks: refer, grounding, identify,
region_caption, count, presence (box datasets), scene (folders), caption (captions). rsvqa:DIR reads RSVQA-LR/HR's
*train_questions.json (+ _answers, _images; name a *_questions.json for another split); geochat-bench:FILE.jsonl
turns GeoChat-Bench questions and ground truths into training records. --turns multi puts the questions of an
image into conversations of up to --max-turns rounds (<image> in the first only); both writes single- and
multi-turn records. --config YAML gives any option.
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
