"""Export a stage-1 open_clip ViT as a transformers CLIP vision tower (for GeoChat / LLaVA), optionally at a new size.

    python launch/export_vision_tower.py --checkpoint runs/x/final.safetensors --model ViT-L-14-336 \
        --image-size 504 --output runs/x/vision_tower [--legacy-layout] [--interpolation bicubic] [--align-corners true]

Writes OUTPUT/config.json + model.safetensors (CLIPVisionModelWithProjection; CLIPVisionModel.from_pretrained
reads it too), preprocessor_config.json (CLIPImageProcessor at --image-size with the checkpoint's mean/std) and
export_info.json. At a new size the position embedding is interpolated GeoChat's way (CLS row kept, grid
bicubic with align_corners=True): ViT-L-14-336 at 504 px has 36x36+1 = 1297 positions, so GeoChat's own
interpolation becomes a no-op. --legacy-layout adds OUTPUT/legacy for transformers 4.31-4.36.
OpenAI's TorchScript .pt files are refused unless --allow-torchscript (torch.jit.load runs code stored in the
file: only for files from a source you trust). --config YAML gives any option as a key. Bad paths, sizes,
unreadable checkpoints, a --model that does not fit the checkpoint and non-ViT models exit with status 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too

from clip_pretrain.models import CheckpointError  # noqa: E402
from rs_common.config import run_config_tool  # noqa: E402
from vlm_finetune.export import ExportConfig, ExportError, run_export  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return run_config_tool(ExportConfig, run_export, argv, __doc__, (ExportError, CheckpointError, OSError),
                           show=lambda out: json.loads((out / "export_info.json").read_text()))


if __name__ == "__main__":
    sys.exit(main())
