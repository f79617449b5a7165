"""Ask a GeoChat about one image; prints the answer, then one JSON line with the parsed boxes and the drawn image.

    python launch/geochat_infer.py --model runs/geochat_ft/merged --image scene.png --prompt "[refer] the ship at the pier"
    python launch/geochat_infer.py --model runs/geochat_hf --adapter runs/geochat_ft/adapter --image scene.png \\
        --prompt "[grounding] Describe the image in detail" --output scene_boxes.png
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
