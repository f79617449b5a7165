"""What a training run writes about itself as it goes: OUTPUT/config.yaml, log.jsonl (trimmed to the resume step when a
run continues), and the same rows to wandb / TensorBoard when ``--report-to`` asks."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import yaml

from clip_pretrain.config import TrainConfig, report_targets
from clip_pretrain.distributed import DistInfo
from rs_common.config import to_dict
from rs_common.files import atomic_write_text

WANDB_ID_FILE = "wandb_run_id"


def write_config(cfg: TrainConfig, output: Path, recipe: dict | None = None) -> Path:
    """OUTPUT/config.yaml: the resolved settings (defaults < YAML < flags, open_clip_train's names mapped), which
    ``--config OUTPUT/config.yaml`` loads back into the same TrainConfig. ``recipe`` (the ``--config`` file's record,
    ``rs_common.recipes.record_recipe``) goes into a comment at the top: where the settings started from."""
    path = output / "config.yaml"
    header = ""
    if recipe is not None:
        header = (f"# resolved settings of this run; started from the recipe {recipe['source'] or 'of an earlier invocation'}"
                  f"\n# sha256 {recipe['sha256']}, copied verbatim to {recipe['copy']}\n")
    atomic_write_text(path, header + yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


def wandb_run_id(output: Path, resuming: bool) -> str:
    """The wandb run of this run directory: a resumed run continues the id kept in OUTPUT/wandb_run_id (one wandb
    run, not two); a fresh start gets a new id, kept there."""
    path = output / WANDB_ID_FILE
    if resuming and path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)  # wandb's id alphabet; its generate_id helper moved between wandb versions
    atomic_write_text(path, run_id + "\n")
    return run_id


class RunLog:
    """log.jsonl on rank 0, plus wandb and/or TensorBoard when --report-to asks (wandb offline unless WANDB_MODE says
    otherwise). ``start_step``: the step this invocation continues from; TensorBoard hides the events a killed
    run had logged after it (they are logged again), and a resumed run logs into the same wandb run."""

    def __init__(self, cfg: TrainConfig, info: DistInfo, output: Path, start_step: int = 0, resuming: bool = False):
        self.enabled = info.is_main
        self.path = output / "log.jsonl"
        self.wandb = self.tensorboard = None
        targets = report_targets(cfg.report_to) if self.enabled else set()
        if "wandb" in targets:
            import wandb

            self.wandb = wandb.init(project=cfg.wandb_project, dir=str(output), config=to_dict(cfg), name=output.name,
                                    id=wandb_run_id(output, resuming), resume="allow",
                                    mode=os.environ.get("WANDB_MODE", "offline"))
        if "tensorboard" in targets:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(output / "tensorboard"), purge_step=start_step + 1)

    def write(self, row: dict) -> None:
        """One row (a training step's, or an evaluation's with ``"kind": "eval"``) to every target, at its step."""
        if not self.enabled:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        numbers = {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
        if self.wandb is not None:
            self.wandb.log(numbers, step=row.get("step"))
        if self.tensorboard is not None:
            for key, value in numbers.items():
                self.tensorboard.add_scalar(key, value, row.get("step"))
            self.tensorboard.flush()

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()
        if self.tensorboard is not None:
            self.tensorboard.close()


def trim_log(path: Path, step: int) -> None:
    """Keep the rows of ``path`` (log.jsonl) up to ``step``, atomically: a run resumed from step N repeats the
    steps after N, whose rows a killed run had already logged. A half-written last line is dropped too."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))
