"""``launch/finetune_geochat.py``'s command line: this tool's flags (FinetuneConfig, rs_common.config) and, beside
them, GeoChat's/LLaVA's (``scripts/finetune_lora.sh`` as copied: :mod:`vlm_finetune.llava_flags`)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from rs_common.config import (
    ConfigError,
    config_file_of,
    config_parser,
    load_config,
    overrides_from_args,
    run_config_tool,
    setup_logging,
)
from rs_common.guards import OutputBusyError
from vlm_finetune.geochat import GeoChatError
from vlm_finetune.instruct import InstructError
from vlm_finetune.llava_flags import flag_table
from vlm_finetune.train import FinetuneConfig, FinetuneError, train

ERRORS = (ConfigError, FinetuneError, GeoChatError, InstructError, OutputBusyError, OSError)


def run(cfg: FinetuneConfig, recipe: Path | None = None) -> dict:
    if cfg.report_to == "wandb":
        os.environ.setdefault("WANDB_MODE", "offline")
    return train(cfg, recipe=recipe)


def shown(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in ("config", "losses")}


def parse_llava_command(ours: list[str], theirs: list[str], description: str = "") -> FinetuneConfig:
    """The FinetuneConfig of a LLaVA-style command: defaults < --config < this tool's flags and GeoChat's flags (the
    same setting given both ways with two values is an error); the TrainingArguments flags of neither kind go to
    ``trainer_args``; flags naming parts of the model are checked against --model's files."""
    from vlm_finetune.geochat import check_geochat_dir
    from vlm_finetune.llava_flags import map_llava_flags, model_flags, parse_llava_flags
    from vlm_finetune.llava_model_checks import check_model_flags

    args = config_parser(FinetuneConfig, description).parse_args(ours)
    own = overrides_from_args(args)
    given = parse_llava_flags(theirs)
    mapped, trainer = map_llava_flags(given)
    for key in mapped.keys() & own.keys():
        if str(mapped[key]).lower() != str(own[key]).lower():
            raise ConfigError(f"'{key}' given twice: {own[key]!r} (--{key.replace('_', '-')}) and {mapped[key]!r} "
                              "(a GeoChat flag)")
    extra = {**trainer, **json.loads(own.pop("trainer_args", "{}"))} if trainer or "trainer_args" in own else None
    cfg = load_config(FinetuneConfig, args.config, {**mapped, **own, **({"trainer_args": extra} if extra else {})})
    if model_flags(given):
        check_model_flags(model_flags(given), check_geochat_dir(cfg.model))
    return cfg


def main(argv: list[str] | None = None, description: str = "") -> int:
    """Parse (either kind of flags), train, print the summary as one JSON line; expected errors are one ``error:``
    line and exit status 2."""
    from vlm_finetune.llava_flags import split_command

    argv = list(sys.argv[1:] if argv is None else argv)
    recipe = config_file_of(argv)
    description = f"{description}\n\n{flag_table()}"
    split = split_command(argv)
    if split is None:
        return run_config_tool(FinetuneConfig, lambda cfg: run(cfg, recipe), argv, description, ERRORS[1:], show=shown)
    setup_logging()
    try:
        summary = run(parse_llava_command(*split, description), recipe)
    except ERRORS as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(json.dumps(shown(summary)))
    return 0
