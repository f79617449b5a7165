r"""Convert a LLaVA-1.5 / GeoChat checkpoint to transformers' HF Llava layout (and back); swap its vision tower.

    python launch/convert_geochat.py --llava-checkpoint geochat-7B --vision-tower clip-vit-large-patch14-336 \
        --output runs/geochat_hf
    python launch/convert_geochat.py --llava-checkpoint runs/geochat_hf --output runs/geochat_rs \
        --swap-vision-tower runs/rsclip/hf_vision_tower [--reinit-projector]
    python launch/convert_geochat.py --llava-checkpoint runs/geochat_hf --output runs/geochat_orig --to-original

--llava-checkpoint: an original checkpoint dir (config.json with mm_* fields; model.safetensors or
pytorch_model*.bin, sharded with an index json or not; tokenizer files when present) or an HF Llava dir.
--vision-tower: the HF CLIP vision dir an original checkpoint was trained with (GeoChat reloads it from
mm_vision_tower and interpolates it to 504 px; so does this tool). --swap-vision-tower DIR replaces the tower
(swapping the vision tower in GeoChat fine-tuning); its hidden size must match the projector's input unless
--reinit-projector. Writes save_pretrained weights + config, the LlavaProcessor when a tokenizer is known
(one <image> token per image feature: (image_size / patch)^2, 1296 at 504/14) and conversion.json.
--to-original writes the original layout instead. --config YAML gives any option as a key.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too

from rs_common.config import run_config_tool  # noqa: E402
from vlm_finetune.convert import ConvertGeoChatConfig, convert_geochat  # noqa: E402
from vlm_finetune.geochat import GeoChatError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return run_config_tool(ConvertGeoChatConfig, convert_geochat, argv, __doc__, (GeoChatError, OSError),
                           show=lambda summary: summary)


if __name__ == "__main__":
    sys.exit(main())
