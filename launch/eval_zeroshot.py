"""Zero-shot scene classification of a CLIP checkpoint on <class>/<image> folders (AID, RESISC45, ...).

    python launch/eval_zeroshot.py --model ViT-B-32 --checkpoint runs/x/final.safetensors --data data/AID \
        --output runs/x/eval_aid [--templates "a satellite photo of {}." "an aerial image of {}."]

Prompts: RemoteCLIP's "a satellite photo of {}." by default, with the folder name normalised
(BareLand -> "bare land"); several --templates are ensembled. Writes OUTPUT/metrics.json (top1, top5,
per_class, counts), confusion_matrix.png/.csv and predictions.csv. --config YAML gives any option as a key.
OpenAI's TorchScript .pt checkpoints need --allow-torchscript (loading one runs code stored in the file).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too

from clip_pretrain.evaluate.common import EvalError  # noqa: E402
from clip_pretrain.evaluate.zeroshot import ZeroShotConfig, evaluate_zeroshot  # noqa: E402
from clip_pretrain.models import CheckpointError  # noqa: E402
from rs_common.config import run_config_tool  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return run_config_tool(ZeroShotConfig, evaluate_zeroshot, argv, __doc__, (EvalError, CheckpointError, OSError),
                           show=lambda m: {k: m[k] for k in ("top1", "top5", "mean_per_class", "n_images", "n_classes", "n_skipped_images")})


if __name__ == "__main__":
    sys.exit(main())
