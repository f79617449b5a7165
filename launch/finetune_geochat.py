r"""LoRA fine-tuning of GeoChat (HF Llava) on LLaVA-format instruction data, with the HF Trainer.

    torchrun --nproc_per_node 4 launch/finetune_geochat.py --model runs/geochat_hf --data runs/instruct.json \
        --images data --output runs/geochat_ft [--config finetune.yaml] [--deepspeed zero2.json] [--resume latest]
    # GeoChat's recipe (LoRA r 64, lr 2e-4, global batch 144, 1 epoch, ...) on 3 GPUs, ZeRO-2:
    torchrun --nproc_per_node 3 launch/finetune_geochat.py --config configs/geochat/lora.yaml \
        --deepspeed configs/deepspeed/zero2.json --model runs/geochat_hf --data GeoChat_Instruct.json \
        --images images --output runs/geochat_lora
    # GeoChat's scripts/finetune_lora.sh flags as they are (deepspeed or torchrun), on a converted model:
    deepspeed launch/finetune_geochat.py --deepspeed configs/deepspeed/zero2.json --lora_enable True \
        --model_name_or_path runs/geochat_hf --version v1 --data_path GeoChat_Instruct.json --image_folder images \
        --vision_tower openai/clip-vit-large-patch14-336 --mm_projector_type mlp2x_gelu --mm_vision_select_layer -2 \
        --image_aspect_ratio pad --bf16 True --output_dir runs/geochat_lora --num_train_epochs 1 \
        --per_device_train_batch_size 32 --gradient_accumulation_steps 1 --learning_rate 2e-4 --warmup_ratio 0.03 \
        --lr_scheduler_type cosine --model_max_length 2048 --gradient_checkpointing True --report_to wandb

--model: an HF Llava GeoChat dir with its LlavaProcessor (launch/convert_geochat.py output). --data: LLaVA json
(launch/build_instruct.py output); --images: the folder its "image" paths are relative to. LoRA r 64 / alpha 16 /
dropout 0.05 on every Linear of the language model (never lm_head), vision tower and projector frozen (as GeoChat's
released script; --train-projector true trains the projector, e.g. after a vision-tower swap). Writes OUTPUT/adapter,
OUTPUT/merged (loads with vlm_finetune.geochat.load_geochat), Trainer checkpoints and finetune.json. --report-to wandb logs offline unless WANDB_MODE says otherwise. A --config
file is copied verbatim to OUTPUT/recipe.yaml (its path and sha256 in finetune.json).

GeoChat's/LLaVA's flags (--data_path, --lora_enable, every TrainingArguments field; the table below) may stand
beside this tool's: flags with no meaning here (--vision_tower, --pretrain_mm_mlp_adapter, --mm_projector_type, ...)
are checked against --model and are an error when they do not match it. --resume latest (or last) continues from
the newest OUTPUT/checkpoint-*. Warm-up: ceil(warmup_ratio x optimizer steps) steps on every transformers version.

Before the model loads, the settings, paths, the json and every record's image are checked: records whose image is
missing or unreadable are dropped and counted by reason (finetune.json "dropped"); none left is an error. A second
run on an --output that a live run holds is refused. Errors are one "error: ..." line and exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too

from vlm_finetune import finetune_cli


def main(argv: list[str] | None = None) -> int:
    return finetune_cli.main(argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())
