"""The HF ``TrainingArguments`` of a fine-tuning run, built from its :class:`vlm_finetune.train.FinetuneConfig`.

Warm-up is computed here, not by transformers: ``warmup_steps = ceil(warmup_ratio x optimizer steps)`` (or the
config's ``warmup_steps`` when > 0), passed as an integer. transformers 4.x reads a float ``warmup_steps`` < 1 as about
zero steps and 5.x has no ``warmup_ratio`` any more; an integer means the same on every version the project allows.
The optimizer steps are counted as the Trainer counts them: ``max_steps`` when > 0, else ``ceil(epochs x steps per
epoch)`` with steps per epoch from the samples, the per-device batch, the processes (WORLD_SIZE) and the gradient
accumulation.

``FinetuneConfig.trainer_args`` (``--trainer-args JSON``, and the TrainingArguments flags of a LLaVA-style command:
:mod:`vlm_finetune.llava_flags`) adds TrainingArguments fields the config does not set itself, passed as given.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math

import torch

from vlm_finetune.data import FinetuneError

logger = logging.getLogger(__name__)

# TrainingArguments fields that training_arguments() sets from the config's own settings (or must keep as they are):
# a trainer_args key among them is refused, naming the setting to use instead.
OWN_FIELDS = {
    "output_dir": "--output", "per_device_train_batch_size": "--batch-size", "gradient_accumulation_steps":
    "--grad-accum", "learning_rate": "--learning-rate", "num_train_epochs": "--epochs", "max_steps": "--max-steps",
    "warmup_steps": "--warmup-steps / --warmup-ratio", "warmup_ratio": "--warmup-ratio", "lr_scheduler_type":
    "--lr-scheduler", "weight_decay": "--weight-decay", "bf16": "--bf16", "gradient_checkpointing":
    "--gradient-checkpointing", "gradient_checkpointing_kwargs": "--gradient-checkpointing",
    "activation_checkpointing": "--gradient-checkpointing", "activation_checkpointing_kwargs":
    "--gradient-checkpointing", "deepspeed": "--deepspeed", "fsdp": "--fsdp", "fsdp_config": "--fsdp-config",
    "report_to": "--report-to", "logging_steps": "--logging-steps", "save_steps": "--save-steps", "save_total_limit":
    "--save-total-limit", "dataloader_num_workers": "--num-workers", "seed": "--seed", "resume_from_checkpoint":
    "--resume", "remove_unused_columns": "(always false: the collator needs every column)",
}


def training_fields() -> set[str]:
    """The init fields of this transformers' TrainingArguments."""
    from transformers import TrainingArguments

    return {f.name for f in dataclasses.fields(TrainingArguments) if f.init}


def check_trainer_args(extra: dict) -> None:
    """``trainer_args`` keys: TrainingArguments fields of this transformers that the config does not set itself."""
    fields = training_fields()
    for key in extra:
        if key in OWN_FIELDS:
            raise FinetuneError(f"trainer_args {key!r}: set by this tool's own setting {OWN_FIELDS[key]}; use that")
        if key not in fields:
            raise FinetuneError(f"trainer_args {key!r} is not a TrainingArguments field of this transformers")


def checkpointing_args(enabled: bool) -> dict:
    """TrainingArguments' activation-checkpointing settings under the name this transformers has: 5.x renamed
    ``gradient_checkpointing`` to ``activation_checkpointing`` and warns on every run given the old name."""
    from transformers import TrainingArguments

    name = ("activation_checkpointing" if "activation_checkpointing" in inspect.signature(TrainingArguments).parameters
            else "gradient_checkpointing")
    return {name: enabled, f"{name}_kwargs": {"use_reentrant": False} if enabled else None}


def steps_per_epoch(samples: int, batch_size: int, world_size: int = 1, grad_accum: int = 1,
                    drop_last: bool = False, ceil_accum: bool = True) -> int:
    """Optimizer steps in one epoch as the Trainer counts them: each process gets ``ceil(batches / world_size)``
    batches of ``batch_size`` (accelerate's even sharding), ``grad_accum`` of them make a step; a last, partial group
    makes one more in transformers 5.x (``ceil_accum``), none in 4.x."""
    batches = samples // batch_size if drop_last else math.ceil(samples / batch_size)
    per_process = math.ceil(batches / world_size)
    steps = math.ceil(per_process / grad_accum) if ceil_accum else per_process // grad_accum
    return max(steps, 1)


def total_optimizer_steps(max_steps: int, epochs: float, per_epoch: int) -> int:
    """``max_steps`` when > 0, else ``ceil(epochs x steps per epoch)`` (the Trainer's rule)."""
    return max_steps if max_steps > 0 else math.ceil(epochs * per_epoch)


def warmup_steps_for(ratio: float, steps: int, total: int) -> int:
    """``steps`` when > 0, else ``ceil(ratio x total)``: GeoChat's ``--warmup_ratio 0.03`` of 2209 steps is 67."""
    return int(steps) if steps > 0 else math.ceil(ratio * total)


def _ceil_accum() -> bool:
    import transformers

    return int(transformers.__version__.split(".")[0]) >= 5


def _tf32_usable(extra: dict) -> dict:
    """``tf32: true`` where no GPU can do TF32 (a copied GPU command run on CPU): dropped with a warning instead of
    TrainingArguments' error, since it changes only the speed of float32 matmuls."""
    from transformers.utils import is_torch_tf32_available

    if extra.get("tf32") and not is_torch_tf32_available():
        logger.warning("tf32 true: no Ampere-or-newer CUDA GPU here, so float32 matmuls run as they are")
        return {k: v for k, v in extra.items() if k != "tf32"}
    return extra


def training_arguments(cfg, bf16: bool, samples: int):
    """The TrainingArguments of ``cfg`` (a FinetuneConfig) for a dataset of ``samples`` samples, with the warm-up as
    an integer number of steps (see the module doc) and ``cfg.trainer_args`` passed through."""
    from transformers import TrainingArguments

    check_trainer_args(cfg.trainer_args)
    args = TrainingArguments(
        output_dir=str(cfg.output), per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps, warmup_steps=0,
        lr_scheduler_type=cfg.lr_scheduler, weight_decay=cfg.weight_decay,
        bf16=bf16, **checkpointing_args(cfg.gradient_checkpointing),
        deepspeed=cfg.deepspeed, fsdp=cfg.fsdp, fsdp_config=cfg.fsdp_config,
        report_to=[] if cfg.report_to == "none" else [cfg.report_to], logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit or None,  # 0 = keep every checkpoint
        dataloader_num_workers=cfg.num_workers, remove_unused_columns=False,
        **{"seed": cfg.seed, "data_seed": cfg.seed, "use_cpu": not torch.cuda.is_available(), "disable_tqdm": True,
           **_tf32_usable(cfg.trainer_args)})
    per_epoch = steps_per_epoch(samples, args.train_batch_size, args.world_size, args.gradient_accumulation_steps,
                                args.dataloader_drop_last, _ceil_accum())
    total = total_optimizer_steps(args.max_steps, args.num_train_epochs, per_epoch)
    args.warmup_steps = warmup_steps_for(cfg.warmup_ratio, cfg.warmup_steps, total)
    logger.info("%d optimizer steps, %d of them linear warm-up", total, args.warmup_steps)
    return args
