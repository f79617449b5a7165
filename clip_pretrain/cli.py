"""``launch/pretrain_clip.py``: parse flags (open_clip_train's names) + YAML, then ``train.train``.

A copied open_clip_train command runs: most of its flags are our settings' own names, and the others are mapped
by :data:`OPEN_CLIP_FLAGS` (the one table of open_clip_train flag -> our setting and how the meaning differs), which
adds them to the parser and is printed at the end of ``--help``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from clip_pretrain.config import TrainConfig
from rs_common.config import ConfigError, add_config_args, load_config, overrides_from_args, setup_logging
from rs_common.flag_tables import markdown_flag_table

EXAMPLES = """examples:
  # a few hundred CPU steps of the tiny model on the demo shards
  python launch/pretrain_clip.py --train-data runs/demo/shards --model rs-tiny --batch-size 32 --epochs 20 --device cpu
  # RemoteCLIP's ViT-B-32 recipe (configs/remoteclip/: lr, global batch, steps, Adam, augmentations) on 8 GPUs;
  # the recipe file is copied to OUTPUT/recipe.yaml
  torchrun --nproc_per_node 8 launch/pretrain_clip.py --config configs/remoteclip/vit-b-32.yaml \\
      --train-data 'shards/shard-{000000..000165}.tar' --pretrained ~/weights/ViT-B-32-openai.bin \\
      --output runs/remoteclip-vitb32 --resume latest
  # continual pretraining of OpenAI ViT-B-32 on 8 GPUs (RemoteCLIP's settings), resumable
  torchrun --nproc_per_node 8 launch/pretrain_clip.py --train-data 'shards/shard-{000000..000165}.tar' \\
      --model ViT-B-32 --pretrained ~/weights/ViT-B-32.pt --batch-size 256 --lr 4e-5 --warmup 1000 \\
      --epochs 10 --precision amp --output runs/rs-vitb32 --resume latest --report-to wandb
  # an open_clip_train command, as copied (run dir logs/rs-b32; val loss + recall on held-out shards every epoch)
  torchrun --nproc_per_node 4 launch/pretrain_clip.py --train-data 'shards/shard-{000000..000165}.tar' \\
      --dataset-type webdataset --dataset-resampled --train-num-samples 400000 --batch-size 256 --accum-freq 2 \\
      --model ViT-B-32 --pretrained ~/weights/ViT-B-32.pt --lr 4e-5 --warmup 1000 --epochs 10 \\
      --val-data 'val/shard-{000000..000003}.tar' --save-frequency 1 --logs logs --name rs-b32 \\
      --report-to wandb,tensorboard --log-every-n-steps 20 --local-loss --gather-with-grad
"""


@dataclass(frozen=True)
class OpenClipFlag:
    """One row of the table: an open_clip_train flag, the setting of ours it sets, and how the meaning differs.

    ``ours``: our flag or what happens instead. ``key``: the TrainConfig key the flag's value goes to; '' when the
    flag is handled by name (``--logs``, ``--name``, ``--dataset-type``...) or is our own flag of the same name,
    listed for a difference only (``alias=False``). ``const``: the value a bare switch sets. ``metavar``: what a
    flag with a value takes."""

    flag: str
    ours: str
    differs: str = ""
    key: str = ""
    metavar: str = ""
    const: str | None = None
    alias: bool = True


OPEN_CLIP_FLAGS: tuple[OpenClipFlag, ...] = (
    # flags of another name here
    OpenClipFlag("--logs", "--output", "run dir = LOGS/NAME as in open_clip_train (LOGS defaults to ./logs); without "
                 "--name, NAME = model_<model>-lr_<lr>-b_<batch>-j_<workers>-p_<precision>, open_clip_train's name "
                 "without its leading start time, so every torchrun rank and a later --resume latest find the same "
                 "folder (a second fresh run there is refused: give --name)", metavar="DIR"),
    OpenClipFlag("--name", "--output", "see --logs", metavar="NAME"),
    OpenClipFlag("--save-frequency", "--save-every-epochs", "every N epochs, as open_clip_train; checkpoints also come "
                 "every --save-every-steps steps (default 500) and on SIGTERM, all as checkpoints/step_<N>.pt (not "
                 "epoch_<N>.pt) with checkpoints/latest, pruned to --keep-checkpoints", key="save_every_epochs",
                 metavar="N"),
    OpenClipFlag("--log-every-n-steps", "--log-every-steps", "same meaning (log.jsonl, wandb, TensorBoard)",
                 key="log_every_steps", metavar="N"),
    OpenClipFlag("--torchcompile", "--torch-compile", "same meaning", key="torch_compile", const="true"),
    OpenClipFlag("--wandb-project-name", "--wandb-project", "same meaning (default rs-clip, theirs open-clip)",
                 key="wandb_project", metavar="NAME"),
    OpenClipFlag("--dataset-type", "(checked)", "webdataset or auto only: --train-data is webdataset shards; csv and "
                 "synthetic are refused with an error", metavar="TYPE"),
    OpenClipFlag("--delete-previous-checkpoint", "--keep-checkpoints 1", "keeps the newest step checkpoint only",
                 key="keep_checkpoints", const="1"),
    OpenClipFlag("--save-most-recent", "(always)", "checkpoints/latest always points at the newest checkpoint",
                 const=""),
    OpenClipFlag("--imagenet-val", "(refused)", "ImageNet zero-shot needs ImageNet's class names; give a "
                 "<class>/<image> folder set whose folder names are the classes as --zeroshot-data DIR", metavar="DIR"),
    OpenClipFlag("--imagenet-v2", "(refused)", "as --imagenet-val", metavar="DIR"),
    # our own flags of the same name whose meaning or default differs
    OpenClipFlag("--accum-freq", "", "open_clip_train's method (cached features of the K batches); "
                 "logit_scale's gradient is counted once here, K times there, so the gradient equals the K-times "
                 "bigger batch's exactly; the batches left at an epoch's end that cannot fill a step are dropped",
                 alias=False),
    OpenClipFlag("--dataset-resampled", "", "shards drawn with replacement per epoch and loader "
                 "slot from --seed (a slot's last draw is a random contiguous part of a shard), so mid-epoch resume "
                 "stays exact; an epoch is --train-num-samples samples (default: all)", alias=False),
    OpenClipFlag("--val-data", "", "stage-0 shards; val loss as open_clip_train's clip_val_loss (batches of "
                 "--batch-size, first caption per image) plus retrieval R@1/5/10 with all captions; --val-frequency, "
                 "--eval-every-steps", alias=False),
    OpenClipFlag("--zeroshot-frequency", "", "zero-shot on --zeroshot-data (a class-folder set), "
                 "not ImageNet; --eval-every-steps N evaluates every N steps too", alias=False),
    OpenClipFlag("--lock-text-freeze-layer-norm", "", "without it the text tower's "
                 "LayerNorms stay trainable (open_clip 3.3's lock_text_tower asserts on that; open_clip_train fails)",
                 alias=False),
    OpenClipFlag("--precision", "", "open_clip's meanings (fp16/bf16: half-precision weights except "
                 "LayerNorms, pure_*: all weights, no GradScaler); amp is fp32 on CPU; fp16 runs on CPU, slowly",
                 alias=False),
    OpenClipFlag("--report-to", "", "wandb is offline unless WANDB_MODE says otherwise; a resumed run "
                 "continues the same wandb run; TensorBoard under OUTPUT/tensorboard", alias=False),
    OpenClipFlag("--local-loss --gather-with-grad", "", "on by default here (off there)", alias=False),
    OpenClipFlag("--grad-clip-norm", "", "0 = off (there: unset)", alias=False),
    OpenClipFlag("--warmup --epochs --workers", "", "defaults 100, 1, 2 (there 10000, 32, 4)", alias=False),
    OpenClipFlag("--opt", "", "adamw (the default, as there) or adam: torch.optim.Adam, --wd then an L2 term on the "
                 "same parameter groups (RemoteCLIP's optimizer; there the nearest is timm/adam); timm/* optimizers "
                 "are refused", alias=False),
)
DATASET_TYPES = ("webdataset", "auto")


def dest_of(row: OpenClipFlag) -> str:
    """argparse dest of a table flag: straight into the config overrides when it maps onto one key."""
    return f"cfg__{row.key}" if row.key else "oct__" + row.flag.lstrip("-").replace("-", "_")


def add_open_clip_flags(parser: argparse.ArgumentParser) -> None:
    """The table's flags of another name, as options of ``parser``."""
    group = parser.add_argument_group("open_clip_train's flags (mapped: see the table at the end)")
    for row in OPEN_CLIP_FLAGS:
        if not row.alias:
            continue
        help_text = f"-> {row.ours}" + (f": {row.differs}" if row.differs else "")
        if row.const is not None:
            group.add_argument(row.flag, dest=dest_of(row), action="store_const", const=row.const,
                               default=argparse.SUPPRESS, help=help_text)
        else:
            group.add_argument(row.flag, dest=dest_of(row), metavar=row.metavar, default=argparse.SUPPRESS,
                               help=help_text)


def flag_table(width: int = 118) -> str:
    """The table as --help's epilog."""
    lines = []
    for title, alias in (("open_clip_train flags of another name here -> our setting (how the meaning differs):", True),
                         ("open_clip_train flags of the same name whose meaning or default differs:", False)):
        lines.append(title)
        for row in (r for r in OPEN_CLIP_FLAGS if r.alias == alias):
            lines.append(f"  {row.flag}{' ' + row.metavar if row.metavar else ''}{' -> ' + row.ours if alias else ''}")
            lines.extend("      " + part for part in textwrap.wrap(row.differs, width=width - 6))
    return "\n".join(lines)


FLAG_TABLE_START = "<!-- open_clip_train flag table: generated by `python -m clip_pretrain.cli --flag-table` -->"
FLAG_TABLE_END = "<!-- end of open_clip_train flag table -->"


def flag_table_markdown() -> str:
    """The table as the README shows it (a test keeps the two equal)."""
    return markdown_flag_table("open_clip_train", ((f"`{row.flag}{' ' + row.metavar if row.metavar else ''}`", row.ours,
                                                    row.differs) for row in OPEN_CLIP_FLAGS))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pretrain_clip.py", description=__doc__,
                                     epilog=EXAMPLES.replace("%", "%%") + "\n" + flag_table().replace("%", "%%"),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="YAML config; every key below is also a flag "
                        "(a run's OUTPUT/config.yaml holds its resolved settings)")
    parser.add_argument("--run-steps", type=int, default=0,
                        help="stop THIS invocation after N steps with a checkpoint (schedule unchanged; for time-limited jobs)")
    add_config_args(parser, TrainConfig)
    add_open_clip_flags(parser)
    return parser


def default_run_name(cfg: TrainConfig) -> str:
    """open_clip_train's experiment name without its leading date (see the --logs row)."""
    return (f"model_{cfg.model.replace('/', '-')}-lr_{cfg.lr}-b_{cfg.batch_size}-j_{cfg.workers}-"
            f"p_{cfg.precision}")


def check_open_clip_flags(args: argparse.Namespace) -> None:
    """The table's checked and refused flags: a one-line ConfigError for what this tool cannot do."""
    dataset_type = getattr(args, "oct__dataset_type", None)
    if dataset_type is not None and dataset_type not in DATASET_TYPES:
        raise ConfigError(f"--dataset-type {dataset_type}: only webdataset shards are read here (--dataset-type "
                          "webdataset or auto); convert the data to shards first (launch/build_shards.py)")
    for flag in ("--imagenet-val", "--imagenet-v2"):
        if getattr(args, "oct__" + flag.lstrip("-").replace("-", "_"), None) is not None:
            raise ConfigError(f"{flag} is not supported: ImageNet zero-shot needs ImageNet's class names; pass a "
                              "<class>/<image> folder set whose folder names are the classes as --zeroshot-data DIR")


def apply_run_dir(cfg: TrainConfig, args: argparse.Namespace, overrides: dict) -> TrainConfig:
    """open_clip_train's ``--logs DIR --name NAME`` -> ``cfg.output = DIR/NAME``."""
    logs, name = getattr(args, "oct__logs", None), getattr(args, "oct__name", None)
    if logs is None and name is None:
        return cfg
    if "output" in overrides:
        raise ConfigError("give --output or open_clip_train's --logs/--name, not both")
    cfg.output = str(Path(logs or "./logs") / (name or default_run_name(cfg)))
    return cfg


class TrainCommand(NamedTuple):
    """A parsed command line: the settings, --run-steps, and the --config file they were read from (None without)."""

    cfg: TrainConfig
    run_steps: int = 0
    recipe: Path | None = None


def parse_train_config(argv: list[str] | None = None) -> tuple[TrainConfig, int]:
    """(TrainConfig, --run-steps) from the command line (see :func:`parse_train_command`)."""
    command = parse_train_command(argv)
    return command.cfg, command.run_steps


def parse_train_command(argv: list[str] | None = None) -> TrainCommand:
    """(TrainConfig, --run-steps, --config file) from the command line: defaults < --config YAML < flags,
    open_clip_train's flags mapped by the table; a bad value exits with status 2 and a one-line message, before any
    work."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_open_clip_flags(args)
        overrides = overrides_from_args(args)
        cfg = apply_run_dir(load_config(TrainConfig, args.config, overrides), args, overrides)
    except ConfigError as exc:
        parser.error(str(exc))
    if args.run_steps < 0:
        parser.error(f"--run-steps must be >= 0, got {args.run_steps}")
    if not cfg.train_data:
        parser.error("--train-data is required (stage-0 shards: a folder, a brace pattern or a '::' list)")
    return TrainCommand(cfg, args.run_steps, args.config)


def expected_errors() -> tuple[type[BaseException], ...]:
    """What bad input or a stopped run raises: each becomes one ``error:`` line and exit status 2, no traceback."""
    from clip_pretrain.checkpoint import ResumeError
    from clip_pretrain.data import DataError
    from clip_pretrain.models import CheckpointError
    from clip_pretrain.train import TrainingDiverged
    from rs_common.guards import OutputBusyError

    return (ConfigError, DataError, TrainingDiverged, CheckpointError, ResumeError, OutputBusyError, FileNotFoundError,
            ValueError)


def one_line(exc: BaseException) -> str:
    """The error's message on one line (some messages carry newlines; some exceptions have none at all)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    return run_train_command(*parse_train_command(argv))


def run_train_command(cfg: TrainConfig, run_steps: int = 0, recipe: Path | None = None) -> int:
    """Train per ``cfg`` (``recipe``: the --config file, copied to OUTPUT/recipe.yaml); expected errors become one
    ``error:`` line and exit status 2; rank 0 prints the summary as one JSON line. Returns the exit status."""
    setup_logging()
    from clip_pretrain.train import train  # heavy imports after argument checks

    try:
        summary = train(cfg, run_steps=run_steps, recipe=recipe)
    except expected_errors() as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--flag-table"]:  # the README's table of open_clip_train's flags
        print(flag_table_markdown())
    else:
        sys.exit(main())
