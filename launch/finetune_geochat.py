r"""LoRA fine-tuning of GeoChat (HF Llava) on LLaVA-format instruction data, with the HF Trainer.

    torchrun --nproc_per_node 4 launch/finetune_geochat.py --model runs/geochat_hf --data runs/instruct.json \
        --images data --output runs/geochat_ft [--config finetune.yaml] [--deepspeed zero2.json] [--resume last]
    # GeoChat's recipe (LoRA r 64, lr 2e-4, global batch 144, 1 epoch, ...) on 3 GPUs, ZeRO-2:
    torchrun --nproc_per_node 3 launch/finetune_geochat.py --config configs/geochat/lora.yaml \
        --deepspeed configs/deepspeed/zero2.json --model runs/geochat_hf --data GeoChat_Instruct.json \
        --images images --output runs/geochat_lora

--model: an HF Llava GeoChat dir with its LlavaProcessor (launch/convert_geochat.py output). --data: LLaVA json
(launch/build_instruct.py output); --images: the folder its "image" paths are relative to. LoRA r 64 / alpha 16 /
dropout 0.05 on every Linear of the language model (never lm_head), vision tower frozen, projector trained unless
--train-projector false. Writes OUTPUT/adapter, OUTPUT/merged (loads with vlm_finetune.geochat.load_geochat),
Trainer checkpoints and finetune.json. --report-to wandb logs offline unless WANDB_MODE says otherwise. A --config
file is copied verbatim to OUTPUT/recipe.yaml (its path and sha256 in finetune.json).

Before the model loads, the settings, paths, the json and every record's image are checked: records whose image is
missing or unreadable are dropped and counted by reason (finetune.json "dropped"); none left is an error. A second
run on an --output that a live run holds is refused. Errors are one "error: ..." line and exit status 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too

from rs_common.config import config_file_of, run_config_tool
from rs_common.guards import OutputBusyError
from vlm_finetune.geochat import GeoChatError
from vlm_finetune.instruct import InstructError
from vlm_finetune.train import FinetuneConfig, FinetuneError, train


def _run(cfg: FinetuneConfig, recipe: Path | None = None) -> dict:
    if cfg.report_to == "wandb":
        os.environ.setdefault("WANDB_MODE", "offline")
    return train(cfg, recipe=recipe)


def main(argv: list[str] | None = None) -> int:
    errors = (FinetuneError, GeoChatError, InstructError, OutputBusyError, OSError)
    recipe = config_file_of(argv)
    return run_config_tool(FinetuneConfig, lambda cfg: _run(cfg, recipe), argv, __doc__, errors,
                           show=lambda s: {k: v for k, v in s.items() if k not in ("config", "losses")})


if __name__ == "__main__":
    sys.exit(main())
