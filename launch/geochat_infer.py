"""Ask a GeoChat about one image; prints the answer, then one JSON line with the parsed boxes and the drawn image.
With --chat, a conversation: one question per line on stdin (an empty line or EOF ends), or --question (repeated) /
--questions FILE; each answer is printed as it comes, each question sees the earlier turns, and --transcript saves
the conversation as a LLaVA record. The image is padded to a square as in training (config.image_aspect_ratio).

    python launch/geochat_infer.py --model runs/geochat_ft/merged --image scene.png --prompt "[refer] the ship at the pier"
    python launch/geochat_infer.py --model runs/geochat_hf --adapter runs/geochat_ft/adapter --image scene.png \\
        --prompt "[grounding] Describe the image in detail" --output scene_boxes.png
    python launch/geochat_infer.py --model runs/geochat_ft/merged --image scene.png --chat --transcript chat.json
    python launch/geochat_infer.py --model runs/geochat_ft/merged --image scene.png --question "How many planes?" \\
        --question "[refer] the largest one" --transcript chat.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too

from rs_common.config import run_config_tool  # noqa: E402
from vlm_finetune.evaluate import EvalError  # noqa: E402
from vlm_finetune.geochat import GeoChatError  # noqa: E402
from vlm_finetune.infer import InferConfig, run_infer  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return run_config_tool(InferConfig, run_infer, argv, __doc__, (EvalError, GeoChatError, OSError))


if __name__ == "__main__":
    sys.exit(main())
