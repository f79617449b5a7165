"""GeoChat's / LLaVA's training flags on ``launch/finetune_geochat.py``: a copied ``scripts/finetune_lora.sh`` command runs.

GeoChat's ``geochat/train/train.py`` (LLaVA-1.5's) reads its flags with transformers' ``HfArgumentParser`` into three
dataclasses: ``ModelArguments``, ``DataArguments`` and a ``TrainingArguments`` subclass with LoRA and quantisation
fields. The dataclasses below mirror the first two and the subclass's own fields (names and GeoChat's defaults, for
``--help``); transformers' ``TrainingArguments`` gives the rest. A command is LLaVA-style when it names any of their
fields that is not also one of this tool's own flags (``--data_path``, ``--output_dir``, ``--lora_enable``, ``--tf32``,
the ``--local_rank`` deepspeed's launcher adds, ...); such a command may mix in this tool's own flags and ``--config``.

:data:`LLAVA_FLAGS` is the one table of what each flag does here: a setting of :class:`vlm_finetune.train.FinetuneConfig`
(the value goes there), a check (a value with no meaning here is a one-line error, one that matches the model or
this tool is accepted; never ignored in silence), or no effect (said in the table and logged). A TrainingArguments
field not in the table goes to the Trainer as given (``FinetuneConfig.trainer_args``). Only the flags a command
gives count: a setting it leaves out keeps this tool's default (GeoChat's recipe: 1 epoch, lr 2e-4, warm-up 3 %,
cosine, LoRA 64/16/0.05, length 2048), not TrainingArguments' (3 epochs, 5e-5, no warm-up, linear). The table is
printed by ``--help`` and, as Markdown for the README, by ``python -m vlm_finetune.llava_flags``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rs_common.config import ConfigError
from rs_common.flag_tables import markdown_flag_table

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    """GeoChat's ModelArguments (field names and defaults)."""

    model_name_or_path: str | None = field(default=None, metadata={"help": "-> --model (an HF Llava GeoChat folder)"})
    version: str = field(default="v0", metadata={"help": "conversation template: v1 (vicuna_v1) only"})
    freeze_backbone: bool = False
    tune_mm_mlp_adapter: bool = False
    vision_tower: str | None = None
    mm_vision_select_layer: int = -1
    pretrain_mm_mlp_adapter: str | None = None
    mm_projector_type: str = "linear"
    mm_use_im_start_end: bool = False
    mm_use_im_patch_token: bool = True
    mm_vision_select_feature: str = "patch"


@dataclass
class DataArguments:
    """GeoChat's DataArguments."""

    data_path: str | None = field(default=None, metadata={"help": "-> --data"})
    lazy_preprocess: bool = False
    is_multimodal: bool = False
    image_folder: str | None = field(default=None, metadata={"help": "-> --images"})
    image_aspect_ratio: str = "square"
    image_grid_pinpoints: str | None = None


@dataclass
class GeoChatTrainingFields:
    """The fields GeoChat's TrainingArguments subclass adds to transformers' (its ``optim`` and
    ``remove_unused_columns`` are transformers' own)."""

    cache_dir: str | None = None
    freeze_mm_mlp_adapter: bool = False
    mpt_attn_impl: str | None = "triton"
    model_max_length: int = 512
    double_quant: bool = True
    quant_type: str = "nf4"
    bits: int = 16
    lora_enable: bool = False
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_weight_path: str = ""
    lora_bias: str = "none"
    group_by_modality_length: bool = False


# TrainingArguments fields of transformers 4.x that GeoChat's script uses and 5.x dropped: parsed here when the
# installed transformers lacks them, so the same command works on every version the project allows.
LEGACY_TRAINING_FIELDS: tuple[tuple[str, type, Any], ...] = (
    ("warmup_ratio", float, 0.0), ("evaluation_strategy", str, "no"))


def _identity(value):
    return value


def _plain(value):
    """Enum members (SchedulerType.COSINE) as their value."""
    return getattr(value, "value", value)


def _bool_word(value) -> str:
    return "true" if value else "false"


def _whole_steps(value) -> int:
    if float(value) < 1 or float(value) != int(value):
        raise ValueError("a fraction of the training steps is not supported here: give a number of steps")
    return int(value)


def _aspect(value) -> bool:
    if value not in ("pad", "square"):
        raise ValueError("pad or square only (anyres and other layouts have no HF Llava GeoChat equivalent)")
    return value == "pad"


def _report_to(value) -> str:
    names = [v for part in ([value] if isinstance(value, str) else list(value or [])) for v in str(part).split(",")]
    names = [n.strip() for n in names if n.strip() and n.strip() != "none"]
    if len(names) > 1 or (names and names[0] not in ("wandb", "tensorboard")):
        raise ValueError("none, wandb or tensorboard (one)")
    return names[0] if names else "none"


def _fsdp(value) -> str:
    if value is True:
        raise ValueError("give the FSDP options, e.g. 'full_shard auto_wrap'")
    return " ".join(value) if isinstance(value, (list, tuple)) else str(value or "")


@dataclass(frozen=True)
class LlavaFlag:
    """One row: GeoChat's flag, what it is here (``ours``: our flag, or ``(checked)`` / ``(no effect)``), how the
    meaning differs, and what it does: ``key`` (the FinetuneConfig key its value goes to, through ``convert``),
    ``allowed`` (the only values accepted, for a checked flag), ``model`` (checked against --model's files by
    :mod:`vlm_finetune.llava_model_checks`)."""

    flag: str
    ours: str
    differs: str = ""
    key: str = ""
    convert: Callable[[Any], Any] = _identity
    allowed: tuple = ()
    model: bool = False


def _row(flag, ours, differs="", **kw) -> LlavaFlag:
    return LlavaFlag(flag, ours, differs, **kw)


SAME = "same meaning"
LLAVA_FLAGS: tuple[LlavaFlag, ...] = (
    # settings of ours
    _row("model_name_or_path", "--model", "an HF Llava GeoChat folder (launch/convert_geochat.py converts LLaVA-1.5 "
         "and GeoChat checkpoints), not an original-layout one", key="model"),
    _row("data_path", "--data", SAME, key="data"),
    _row("image_folder", "--images", SAME, key="images"),
    _row("output_dir", "--output", "adapter/, merged/, checkpoint-*/ and finetune.json in it", key="output"),
    _row("lora_r", "--lora-r", SAME, key="lora_r"),
    _row("lora_alpha", "--lora-alpha", SAME, key="lora_alpha"),
    _row("lora_dropout", "--lora-dropout", SAME, key="lora_dropout"),
    _row("tune_mm_mlp_adapter", "--train-projector", "trains the projector beside LoRA (in GeoChat it trains the "
         "projector only, LoRA frozen)", key="train_projector"),
    _row("freeze_mm_mlp_adapter", "--train-projector false", "True = projector frozen (the default here); False "
         "changes nothing, as in GeoChat", key="train_projector", convert=lambda v: False if v else None),
    _row("model_max_length", "--max-length", "tokens per sample, the image tokens included", key="max_length"),
    _row("image_aspect_ratio", "--pad-to-square", "pad -> true, square -> false; other layouts are an error",
         key="pad_to_square", convert=_aspect),
    _row("per_device_train_batch_size", "--batch-size", SAME, key="batch_size"),
    _row("gradient_accumulation_steps", "--grad-accum", SAME, key="grad_accum"),
    _row("num_train_epochs", "--epochs", SAME, key="epochs"),
    _row("max_steps", "--max-steps", SAME, key="max_steps"),
    _row("learning_rate", "--learning-rate", SAME, key="learning_rate"),
    _row("weight_decay", "--weight-decay", SAME, key="weight_decay"),
    _row("warmup_ratio", "--warmup-ratio", "warm-up steps = ceil(ratio x optimizer steps), computed here on every "
         "transformers version", key="warmup_ratio"),
    _row("warmup_steps", "--warmup-steps", "a value below 1 is a ratio (--warmup-ratio), as in transformers 5.x",
         key="warmup_steps"),
    _row("lr_scheduler_type", "--lr-scheduler", SAME, key="lr_scheduler", convert=_plain),
    _row("bf16", "--bf16", "True -> true, False -> false (our default auto: bf16 on a bf16 GPU)", key="bf16",
         convert=_bool_word),
    _row("gradient_checkpointing", "--gradient-checkpointing", "non-reentrant checkpointing",
         key="gradient_checkpointing"),
    _row("deepspeed", "--deepspeed", SAME, key="deepspeed"),
    _row("fsdp", "--fsdp", SAME, key="fsdp", convert=_fsdp),
    _row("fsdp_config", "--fsdp-config", SAME, key="fsdp_config"),
    _row("resume_from_checkpoint", "--resume", "a checkpoint folder, or latest (GeoChat resumes whenever output_dir "
         "holds a checkpoint-*; here only when asked)", key="resume"),
    _row("report_to", "--report-to", "none, wandb (offline unless WANDB_MODE says otherwise) or tensorboard",
         key="report_to", convert=_report_to),
    _row("logging_steps", "--logging-steps", "whole steps only", key="logging_steps", convert=_whole_steps),
    _row("save_steps", "--save-steps", "whole steps only", key="save_steps", convert=_whole_steps),
    _row("save_total_limit", "--save-total-limit", SAME, key="save_total_limit", convert=lambda v: v or 0),
    _row("dataloader_num_workers", "--num-workers", SAME, key="num_workers"),
    _row("seed", "--seed", "also the data order's seed (data_seed)", key="seed"),
    # checked: accepted when the value is what the model or this tool does, a one-line error otherwise
    _row("lora_enable", "(checked)", "True only: LoRA is the only fine-tuning here", allowed=(True,)),
    _row("lora_bias", "(checked)", "none only", allowed=("none",)),
    _row("lora_weight_path", "(checked)", "empty only (no LoRA weights are loaded at the start)", allowed=("",)),
    _row("bits", "(checked)", "16 only (no 4/8-bit QLoRA)", allowed=(16,)),
    _row("version", "(checked)", "v1 (vicuna_v1, the template used here) only", allowed=("v1", "vicuna_v1")),
    _row("vision_tower", "(checked)", "the tower is part of --model: accepted when its config (a local folder, or "
         "openai/clip-vit-large-patch14[-336]) has the model's tower shape", model=True),
    _row("pretrain_mm_mlp_adapter", "(checked)", "the projector is part of --model: accepted when the file's "
         "mm_projector weights equal the model's projector", model=True),
    _row("mm_projector_type", "(checked)", "mlp2x_gelu only (HF Llava's projector)", allowed=("mlp2x_gelu",)),
    _row("mm_vision_select_layer", "(checked)", "must equal the model's vision_feature_layer (-2 for GeoChat)",
         model=True),
    _row("mm_vision_select_feature", "(checked)", "must match the model's vision_feature_select_strategy (patch = "
         "default, cls_patch = full)", model=True),
    _row("mm_use_im_start_end", "(checked)", "False only (HF Llava has no image start/end tokens)", allowed=(False,)),
    _row("mm_use_im_patch_token", "(checked)", "False only (HF Llava has no patch token)", allowed=(False,)),
    _row("image_grid_pinpoints", "(checked)", "not supported (anyres)", allowed=(None,)),
    _row("remove_unused_columns", "(checked)", "False only (the collator needs every column)", allowed=(False,)),
    _row("evaluation_strategy", "(checked)", "no only: there is no evaluation set during training "
         "(launch/eval_geochat.py scores a run); eval_strategy the same", allowed=("no",), convert=_plain),
    _row("eval_strategy", "(checked)", "as evaluation_strategy", allowed=("no",), convert=_plain),
    # accepted, no effect here
    _row("lazy_preprocess", "(no effect)", "samples are always built lazily, one at a time"),
    _row("is_multimodal", "(no effect)", "set by GeoChat itself; every sample here has an image"),
    _row("freeze_backbone", "(no effect)", "the language model's weights are frozen under LoRA either way"),
    _row("group_by_modality_length", "(no effect)", "every sample has an image: one modality"),
    _row("mpt_attn_impl", "(no effect)", "MPT models only"),
    _row("double_quant", "(no effect)", "4/8-bit only (bits 16 here)"),
    _row("quant_type", "(no effect)", "4/8-bit only (bits 16 here)"),
    _row("cache_dir", "(no effect)", "models are local folders; nothing is downloaded"),
    _row("local_rank", "(Trainer)", "set by deepspeed's launcher; passed on"),
    _row("tf32", "(Trainer)", "passed on; dropped with a warning where no GPU does TF32 (a GPU command on CPU)"),
    _row("every other TrainingArguments field", "(Trainer)", "passed to the Trainer as given (--trainer-args)"),
)
ROWS = {row.flag: row for row in LLAVA_FLAGS}


def legacy_fields() -> type:
    """A dataclass of the 4.x-only TrainingArguments fields this transformers lacks (may be empty)."""
    from vlm_finetune.train_args import training_fields

    have = training_fields()
    return dataclasses.make_dataclass("LegacyTrainingFields", [
        (name, tp, field(default=default)) for name, tp, default in LEGACY_TRAINING_FIELDS if name not in have])


def llava_dataclasses() -> tuple[type, ...]:
    from transformers import TrainingArguments

    return ModelArguments, DataArguments, GeoChatTrainingFields, legacy_fields(), TrainingArguments


def llava_parser():
    """transformers' HfArgumentParser over :func:`llava_dataclasses`; every default suppressed (only the flags a
    command gives come back), nothing required, no abbreviations, errors raised as ConfigError."""
    from transformers import HfArgumentParser

    class Parser(HfArgumentParser):
        def error(self, message):
            raise ConfigError(f"GeoChat/LLaVA flags: {message}")

    parser = Parser(llava_dataclasses(), allow_abbrev=False, add_help=False)
    for action in parser._actions:  # noqa: SLF001 - argparse's list of options
        action.default, action.required = argparse.SUPPRESS, False
    return parser


def llava_option_names() -> set[str]:
    """``--field`` and ``--no_field`` of every field (the underscore spellings: HfArgumentParser also adds dashed
    ones, which are this tool's own flags)."""
    names = {f.name for cls in llava_dataclasses() for f in dataclasses.fields(cls) if f.init}
    return {f"--{n}" for n in names} | {f"--no_{n}" for n in names}


def own_option_names() -> set[str]:
    from vlm_finetune.train import FinetuneConfig

    return {"--" + f.name.replace("_", "-") for f in dataclasses.fields(FinetuneConfig)} | {"--config", "-h", "--help"}


def flag_groups(argv: list[str]) -> list[list[str]]:
    """``argv`` cut into [flag, its values...] groups (a value never starts with ``--``; ``-2`` is a value)."""
    groups: list[list[str]] = []
    for token in argv:
        if token.startswith("--") or token in ("-h",) or not groups:
            groups.append([token])
        else:
            groups[-1].append(token)
    return groups


def split_command(argv: list[str]) -> tuple[list[str], list[str]] | None:
    """(this tool's tokens, GeoChat/LLaVA tokens) of a LLaVA-style command; None for a command of our flags only."""
    llava, own = llava_option_names(), own_option_names()
    groups = flag_groups(argv)
    names = [g[0].split("=", 1)[0] for g in groups]
    if not any(n in llava and n not in own for n in names):
        return None
    ours, theirs = [], []
    for name, group in zip(names, groups):
        (theirs if name in llava else ours).extend(group)
    return ours, theirs


def parse_llava_flags(tokens: list[str]) -> dict[str, Any]:
    """The flags given, by field name, with HfArgumentParser's types (bools from True/False, enums, numbers)."""
    return vars(llava_parser().parse_args(tokens))


def _apply(row: LlavaFlag, value):
    try:
        value = row.convert(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--{row.flag} {value}: {exc}") from None
    if row.allowed and value not in row.allowed:
        raise ConfigError(f"--{row.flag} {value}: {row.differs}")
    return value


def map_llava_flags(given: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(FinetuneConfig overrides, TrainingArguments fields for the Trainer) from the given flags, each checked per
    :data:`LLAVA_FLAGS`; flags checked against the model are left to :func:`model_flags`. Logs the flags that have
    no effect."""
    from vlm_finetune.train_args import training_fields

    overrides: dict[str, Any] = {}
    trainer: dict[str, Any] = {}
    quiet = []
    for name, value in given.items():
        row = ROWS.get(name)
        if row is None or row.ours == "(Trainer)":
            if name in training_fields():
                trainer[name] = _plain(value)
            continue
        value = _apply(row, value)
        if row.key and value is None:
            continue
        if row.key == "warmup_steps" and 0 < value < 1:
            overrides["warmup_ratio"] = value
        elif row.key:
            if row.key in overrides and overrides[row.key] != value:
                raise ConfigError(f"--{name} {given[name]}: contradicts another flag setting {row.key}")
            overrides[row.key] = int(value) if row.key == "warmup_steps" else value
        elif row.ours == "(no effect)":
            quiet.append(f"--{name} ({row.differs})")
    if quiet:
        logger.info("flags with no effect here: %s", "; ".join(quiet))
    return overrides, trainer


def model_flags(given: dict[str, Any]) -> dict[str, Any]:
    """The given flags that are checked against --model's files."""
    return {k: v for k, v in given.items() if k in ROWS and ROWS[k].model}


def flag_table(width: int = 118) -> str:
    """The table as --help's epilog."""
    import textwrap

    lines = ["GeoChat / LLaVA training flags (scripts/finetune_lora.sh) -> this tool (how the meaning differs):"]
    for row in LLAVA_FLAGS:
        lines.append(f"  --{row.flag} -> {row.ours}" if not row.flag.startswith("every") else f"  {row.flag} -> {row.ours}")
        lines.extend("      " + part for part in textwrap.wrap(row.differs, width=width - 6))
    return "\n".join(lines)


FLAG_TABLE_START = "<!-- GeoChat/LLaVA flag table: generated by `python -m vlm_finetune.llava_flags`; do not edit -->"
FLAG_TABLE_END = "<!-- end of GeoChat/LLaVA flag table -->"


def flag_table_markdown() -> str:
    """The table as the README shows it."""
    return markdown_flag_table("GeoChat / LLaVA", ((row.flag if row.flag.startswith("every") else f"`--{row.flag}`",
                                                    row.ours, row.differs) for row in LLAVA_FLAGS))


if __name__ == "__main__":
    print(flag_table_markdown())
