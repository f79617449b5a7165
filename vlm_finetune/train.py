"""GeoChat LoRA fine-tuning on an HF Llava GeoChat directory with the HF Trainer.

GeoChat's recipe (REFERENCE.md): LoRA r 64, alpha 16, dropout 0.05 on every nn.Linear of the language model except
``lm_head``; vision tower and projector frozen as in the released script (``train_projector`` trains the projector: set it
when a swapped RS vision tower needs its projector trained); lr 2e-4, cosine, warmup 3 %, bf16, max length 2048.
GeoChat's/LLaVA's own flags (``--data_path``, ``--lora_enable``, every TrainingArguments field) are read by
:mod:`vlm_finetune.llava_flags`; the TrainingArguments are built by :mod:`vlm_finetune.train_args`.

``--tune`` picks what is trained (:mod:`vlm_finetune.tuning`): ``lora`` (the default, above), ``unfrozen-attn-norm``
or ``bias`` (EarthGPT's stages); ``--vision-layers`` feeds the projector several tower layers.

Outputs (``lora``): ``OUTPUT/adapter`` (peft adapter + processor), ``OUTPUT/merged`` (LoRA merged in, ``save_geochat``, loads with
``load_geochat``), ``OUTPUT/checkpoint-*`` (Trainer checkpoints, ``--resume``), ``OUTPUT/finetune.json`` (summary),
``OUTPUT/recipe.yaml`` (the ``--config`` file, verbatim; its path and sha256 in finetune.json's ``recipe``).

Cheap checks come before the model is loaded (:func:`check_inputs`): every setting, the paths, the instruction json
and each record's image (missing or unreadable images are dropped and counted by reason; none left is an error naming
the json and the first bad file), the model folder's config, processor files and weight headers. The main process
holds ``OUTPUT/.lock`` (:class:`rs_common.guards.RunLock`) for the whole run, so a second run on a folder that a live run
is writing is refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from rs_common.config import ConfigError, to_dict
from rs_common.recipes import global_batch_problem, record_recipe
from vlm_finetune.data import FinetuneError
from vlm_finetune.train_args import check_trainer_args, checkpointing_args, training_arguments  # noqa: F401
from vlm_finetune.tuning import TUNE_MODES

logger = logging.getLogger(__name__)


@dataclass
class FinetuneConfig:
    model: str | None = field(default=None, metadata={"help": "HF Llava GeoChat directory (convert_geochat output)", "metavar": "DIR"})
    data: str | None = field(default=None, metadata={"help": "LLaVA-format instruction json (build_instruct output)"})
    images: str | None = field(default=None, metadata={"help": "folder the records' 'image' paths are relative to"})
    output: str | None = field(default=None, metadata={"help": "output folder (adapter/, merged/, checkpoints)"})
    tune: str = field(default="lora", metadata={
        "help": "what is trained: lora (GeoChat), unfrozen-attn-norm (the LLM's q/k/v/o projections and RMSNorms, "
                "EarthGPT's cross-modal stage) or bias (a scale and shift per output channel of each LLM linear, "
                "EarthGPT's instruction stage)"})
    vision_layers: list[int] = field(default_factory=list, metadata={
        "help": "tower layers whose features are concatenated for the projector (EarthGPT: -2 -5 -8); a new, "
                "trained projector when the count differs from the model's; empty: as --model records"})
    lora_r: int = field(default=64, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    train_projector: bool = field(default=False, metadata={
        "help": "train the mlp2x_gelu projector too (modules_to_save); off = frozen, as GeoChat's released script"})
    freeze_vision_tower: bool = field(default=True, metadata={"help": "keep the CLIP vision tower frozen"})
    learning_rate: float = field(default=2e-4, metadata={"help": "peak learning rate"})
    epochs: float = field(default=1.0, metadata={"help": "training epochs"})
    max_steps: int = field(default=-1, metadata={"help": "stop after this many optimizer steps (-1: epochs decide)"})
    batch_size: int = field(default=4, metadata={"help": "per-device batch size"})
    grad_accum: int = field(default=1, metadata={"help": "gradient accumulation steps"})
    global_batch_size: int = field(default=0, metadata={
        "help": "check at the start: --batch-size x processes (WORLD_SIZE) x --grad-accum must equal this (0 = no check)"})
    warmup_ratio: float = field(default=0.03, metadata={
        "help": "linear warmup fraction of the optimizer steps (< 1): ceil(ratio x steps) warm-up steps"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warmup steps; > 0 wins over warmup_ratio"})
    lr_scheduler: str = field(default="cosine", metadata={"help": "HF scheduler name (cosine, linear, constant, ...)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    max_length: int = field(default=2048, metadata={"help": "max tokens per sample (image tokens included)"})
    pad_to_square: bool = field(default=True, metadata={"help": "GeoChat's image_aspect_ratio=pad"})
    high_res: str = field(default="", metadata={
        "help": "dual-perspective: INF-LLaVA's high-resolution input (2N^2+1 sub-images, a new trainable module, "
                "the same image tokens); none: plain GeoChat; empty: as --model records"})
    high_res_grid: int = field(default=3, metadata={"help": "N of --high-res dual-perspective (N x N crops per view)"})
    bf16: str = field(default="auto", metadata={"help": "auto (on a bf16 GPU), true or false"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations (less memory)"})
    deepspeed: str | None = field(default=None, metadata={"help": "DeepSpeed json config, passed to the Trainer"})
    fsdp: str = field(default="", metadata={"help": "Trainer fsdp option, e.g. 'full_shard auto_wrap'"})
    fsdp_config: str | None = field(default=None, metadata={"help": "FSDP json config, passed to the Trainer"})
    resume: str | None = field(default=None, metadata={
        "help": "resume from a checkpoint folder, or 'latest' for the newest OUTPUT/checkpoint-* (as stage 1; 'last' "
                "is the same)"})
    report_to: str = field(default="none", metadata={"help": "none or wandb (run offline: WANDB_MODE=offline)"})
    logging_steps: int = field(default=10, metadata={"help": "log every this many steps"})
    save_steps: int = field(default=500, metadata={"help": "checkpoint every this many steps"})
    save_total_limit: int = field(default=2, metadata={"help": "checkpoints kept (0 = keep all)"})
    num_workers: int = field(default=2, metadata={"help": "dataloader workers"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    merge: bool = field(default=True, metadata={"help": "also write OUTPUT/merged (LoRA merged into the weights)"})
    trainer_args: dict = field(default_factory=dict, metadata={
        "help": "more transformers TrainingArguments fields, passed to the Trainer as given (JSON, e.g. "
                "'{\"tf32\": true}'); not the ones the settings above set"})

    def validate(self) -> None:
        for key in ("model", "data", "images", "output"):
            if not getattr(self, key):
                raise ConfigError(f"--{key} is required")
        if self.tune not in TUNE_MODES:
            raise ConfigError(f"tune must be one of {', '.join(TUNE_MODES)}, got {self.tune!r}")
        if len(set(self.vision_layers)) != len(self.vision_layers):
            raise ConfigError(f"vision_layers must be distinct, got {self.vision_layers}")
        if self.lora_r < 1:
            raise ConfigError(f"lora_r must be >= 1, got {self.lora_r}")
        if self.lora_alpha <= 0:
            raise ConfigError(f"lora_alpha must be > 0, got {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.bf16 not in ("auto", "true", "false"):
            raise ConfigError(f"bf16 must be auto, true or false, got {self.bf16!r}")
        if self.report_to not in ("none", "wandb", "tensorboard"):
            raise ConfigError(f"report_to must be none, wandb or tensorboard, got {self.report_to!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        for key in ("max_length", "batch_size", "grad_accum", "logging_steps", "save_steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.epochs <= 0:
            raise ConfigError(f"epochs must be > 0, got {self.epochs}")
        if self.max_steps < -1 or self.max_steps == 0:
            raise ConfigError(f"max_steps must be >= 1, or -1 to let epochs decide, got {self.max_steps}")
        for key in ("save_total_limit", "num_workers", "seed", "global_batch_size", "warmup_steps"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.high_res not in ("", "none", "dual-perspective"):
            raise ConfigError(f"high_res must be dual-perspective or none, got {self.high_res!r}")
        if self.high_res_grid < 2:
            raise ConfigError(f"high_res_grid must be >= 2, got {self.high_res_grid}")


def lora_target_names(model) -> list[str]:
    """The distinct leaf names of every nn.Linear inside the language model (``q_proj``, ..., ``down_proj``);
    ``lm_head`` sits outside ``model.language_model`` and the vision tower/projector are not searched."""
    language = model.model.language_model
    return sorted({name.rsplit(".", 1)[-1] for name, m in language.named_modules() if isinstance(m, nn.Linear)})


def lora_target_regex(model) -> str:
    """A peft ``target_modules`` regex (full match on module names) for the language model's linears only: the
    CLIP tower also has ``q_proj``/``k_proj``/``v_proj``, which a plain name list would catch."""
    names = lora_target_names(model)
    if not names:
        raise FinetuneError("no nn.Linear found in model.model.language_model")
    return r"(?:.*\.)?language_model\.(?:.*\.)?(?:" + "|".join(map(re.escape, names)) + r")"


def use_bf16(cfg: FinetuneConfig) -> bool:
    if cfg.bf16 == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return cfg.bf16 == "true"


def modules_to_save(model, cfg: FinetuneConfig) -> list[str] | None:
    """Whole modules trained and saved with the adapter: the projector with ``train_projector``, and a
    dual-perspective model's ``dual_perspective`` module always (it is new)."""
    from vlm_finetune.dual_perspective import is_dual_perspective

    names = (["multi_modal_projector"] if cfg.train_projector else []) + (
        ["dual_perspective"] if is_dual_perspective(model.config) else [])
    return names or None


def prepare_model(model, cfg: FinetuneConfig):
    """Freeze, wrap with LoRA, unfreeze the projector (and a dual-perspective module): returns the PeftModel."""
    from peft import LoraConfig, get_peft_model

    model.requires_grad_(False)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, bias="none",
                      target_modules=lora_target_regex(model), modules_to_save=modules_to_save(model, cfg))
    peft_model = get_peft_model(model, lora)
    if not cfg.freeze_vision_tower:
        for name, p in peft_model.named_parameters():
            if ".vision_tower." in name:
                p.requires_grad_(True)
    for p in peft_model.parameters():  # trainable weights in fp32 (frozen ones may be bf16)
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    if cfg.gradient_checkpointing:
        peft_model.enable_input_require_grads()
    return peft_model


RESUME_NEWEST = ("latest", "last")  # stage 1's word, and this stage's older one


def resume_checkpoint(cfg: FinetuneConfig):
    if not cfg.resume:
        return None
    if cfg.resume in RESUME_NEWEST:
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(cfg.output) if Path(cfg.output).is_dir() else None
        if last is None:
            raise FinetuneError(f"--resume {cfg.resume}: no checkpoint-* in {cfg.output}")
        return last
    if not Path(cfg.resume).is_dir():
        raise FinetuneError(f"--resume {cfg.resume}: not a checkpoint folder")
    return cfg.resume


def _check_paths(cfg: FinetuneConfig) -> None:
    """The folders and files the run reads or writes, and the scheduler name: one-line errors naming them."""
    from transformers.trainer_utils import SchedulerType

    images = Path(cfg.images)
    if not images.is_dir():
        what = "a file, not a folder" if images.exists() else "no such folder"
        raise FinetuneError(f"--images {images}: {what} (the folder the records' image paths are relative to)")
    out = Path(cfg.output)
    if out.exists() and not out.is_dir():
        raise FinetuneError(f"--output {out}: exists and is not a folder")
    for flag, value in (("--deepspeed", cfg.deepspeed), ("--fsdp-config", cfg.fsdp_config)):
        if value and not Path(value).is_file():
            raise FinetuneError(f"{flag} {value}: no such json file")
    schedulers = [s.value for s in SchedulerType]
    if cfg.lr_scheduler not in schedulers:
        raise FinetuneError(f"--lr-scheduler {cfg.lr_scheduler!r} is not one of {', '.join(schedulers)}")
    check_trainer_args(cfg.trainer_args)


def check_inputs(cfg: FinetuneConfig):
    """Everything that can be checked before the (large) model is loaded, cheapest first: paths, the model folder
    (config, processor files, weight headers), the instruction json, each record's image (stat + header). Returns
    the records with usable images (:class:`vlm_finetune.data.ScreenedRecords`)."""
    from vlm_finetune.data import screen_images
    from vlm_finetune.geochat import check_geochat_dir, has_llava_processor_files
    from vlm_finetune.instruct import read_instruct_json

    _check_paths(cfg)
    check_geochat_dir(cfg.model)
    if not has_llava_processor_files(cfg.model):
        raise FinetuneError(f"{cfg.model} has no LlavaProcessor (processor_config.json, or preprocessor_config.json + "
                            "tokenizer files); convert_geochat writes one")
    records = read_instruct_json(cfg.data)
    if not records:
        raise FinetuneError(f"{cfg.data}: holds no records")
    screened = screen_images(records, cfg.images, str(cfg.data))
    if not screened.records:
        raise FinetuneError(f"{cfg.data}: none of its {len(records)} records has a usable image under {cfg.images} "
                            f"({screened.describe_drops()})")
    return screened


def is_main_process() -> bool:
    """World process zero (``RANK`` unset or 0): the one process that holds the output lock and writes summaries."""
    return int(os.environ.get("RANK", "0")) == 0


def output_lock(output: str | Path):
    """``RunLock`` on ``output`` in the main process (a second run on a folder a live run holds is refused with
    OutputBusyError); nothing in the other ranks."""
    from rs_common.guards import RunLock

    return RunLock(output, what="fine-tuning run") if is_main_process() else contextlib.nullcontext()


def check_global_batch(cfg: FinetuneConfig) -> None:
    """``--global-batch-size``: per-device batch x processes (torchrun's/deepspeed's WORLD_SIZE) x accumulation."""
    problem = global_batch_problem(cfg.global_batch_size, cfg.batch_size, int(os.environ.get("WORLD_SIZE", "1")),
                                   cfg.grad_accum, accum_flag="--grad-accum")
    if problem:
        raise FinetuneError(problem)


def train(cfg: FinetuneConfig, callbacks=None, recipe: str | Path | None = None) -> dict:
    """Fine-tune; returns a summary (losses, steps, output folders, trainable parameter counts, dropped records).
    Inputs are checked before the model is loaded; the output folder is locked for the run (see the module doc).
    ``recipe``: the ``--config`` file ``cfg`` was read from, copied verbatim to OUTPUT/recipe.yaml by the main
    process (``rs_common.recipes``)."""
    check_global_batch(cfg)
    screened = check_inputs(cfg)
    resume = resume_checkpoint(cfg)
    with output_lock(cfg.output):
        record = record_recipe(recipe, cfg.output, resuming=resume is not None) if is_main_process() else None
        return _train(cfg, screened, resume, callbacks, record)


def _train(cfg: FinetuneConfig, screened, resume, callbacks, recipe: dict | None = None) -> dict:
    from transformers import Trainer

    from vlm_finetune.data import GeoChatCollator, GeoChatDataset
    from vlm_finetune.dual_perspective import apply_high_res, write_adapter_settings
    from vlm_finetune.geochat import load_geochat, save_geochat
    from vlm_finetune.image_prep import model_high_res_grid, record_image_aspect_ratio
    from vlm_finetune.tuning import apply_vision_layers, merge_scale_shift, prepare_tuning, save_full_tuning

    bf16 = use_bf16(cfg)
    chat = load_geochat(cfg.model, dtype=torch.bfloat16 if bf16 else torch.float32)
    model, processor = chat.model, chat.require_processor(cfg.model, FinetuneError, "; convert_geochat writes one")
    model = apply_high_res(model, cfg.high_res, cfg.high_res_grid, seed=cfg.seed)  # INF-LLaVA's input path, if asked
    dataset = GeoChatDataset(screened, cfg.images, processor, max_length=cfg.max_length,
                             image_seq_length=model.config.image_seq_length, pad_to_square=cfg.pad_to_square,
                             high_res_grid=model_high_res_grid(model))
    if len(dataset) == 0:
        raise FinetuneError(f"no usable samples in {cfg.data} (dropped: {dataset.screened.describe_drops()}; "
                            f"max_length {cfg.max_length})")
    record_image_aspect_ratio(model, dataset.image_aspect_ratio)  # saved with the model: inference prepares alike
    model.config.use_cache = False
    cfg = apply_vision_layers(model, cfg)
    targets = lora_target_names(model) if cfg.tune == "lora" else []  # before peft wraps each linear
    peft_model = prepare_model(model, cfg) if cfg.tune == "lora" else prepare_tuning(model, cfg)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    logger.info("trainable parameters: %d of %d (%.2f %%)", trainable, total, 100 * trainable / total)
    out = Path(cfg.output)
    args = training_arguments(cfg, bf16, len(dataset))
    trainer = Trainer(model=peft_model, args=args, train_dataset=dataset, callbacks=callbacks,
                      data_collator=GeoChatCollator(processor.tokenizer.pad_token_id))
    result = trainer.train(resume_from_checkpoint=resume)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    summary = {"steps": trainer.state.global_step, "train_loss": result.training_loss,
               "train_runtime": result.metrics.get("train_runtime"), "losses": losses,
               "samples": len(dataset), "dropped": {k: len(v) for k, v in dataset.dropped.items()},
               "dropped_examples": {k: v[:20] for k, v in dataset.dropped.items() if v},
               "dropped_first": dataset.screened.first, "truncated": dataset.truncated,
               "trainable_params": trainable, "total_params": total, "bf16": bf16,
               "tune": cfg.tune, "lora_targets": targets, "high_res_grid": dataset.high_res_grid, "config": to_dict(cfg),
               "recipe": recipe}
    if trainer.is_world_process_zero():
        if cfg.tune == "lora":
            adapter = out / "adapter"
            peft_model.save_pretrained(str(adapter))
            processor.save_pretrained(str(adapter))
            write_adapter_settings(model, adapter)  # a plain --model is rebuilt dual-perspective to take the adapter
            summary["adapter"] = str(adapter)
        else:
            summary.update(save_full_tuning(model, cfg))
        if cfg.merge or cfg.tune == "unfrozen-attn-norm":
            merged = peft_model.merge_and_unload() if cfg.tune == "lora" else merge_scale_shift(model)
            merged.config.use_cache = True
            if bf16:
                merged = merged.to(torch.bfloat16)
            summary["merged"] = str(save_geochat(merged, processor, out / "merged"))
        (out / "finetune.json").write_text(json.dumps(
            {k: v for k, v in summary.items() if not (isinstance(v, float) and math.isnan(v))}, indent=1, default=str))
    return summary
