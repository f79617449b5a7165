"""Training checkpoints: atomic writes, ``latest``, resume state, and the final safetensors export.

Layout under ``OUTPUT/checkpoints``: ``step_<N>.pt`` (N zero-padded to 8 digits) and ``latest``, a symlink to
the newest one (swapped atomically). A checkpoint is a dict of tensors and plain Python values only, so it
loads with ``torch.load(weights_only=True)``; the weights sit under ``state_dict`` with open_clip's keys,
which is the key open_clip's own ``load_checkpoint`` looks for. ``OUTPUT/final.safetensors`` holds the same
weights for ``open_clip.create_model(NAME, pretrained=PATH)``.
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from clip_pretrain.config import TrainConfig
from clip_pretrain.models import CheckpointError

log = logging.getLogger(__name__)

STEP_RE = re.compile(r"^step_(\d+)\.pt$")
# Settings that decide how a run continues (the schedule, the data order, what a step means). A resume with any
# of them changed is refused unless --resume-force; workers, output, intervals, device, reporting do not count.
# The schedule settings and the tower locks count too (a changed lock changes which parameters the optimizer state
# belongs to), accum_freq (how many loader batches a step is) and the optimizer (--opt).
RESUME_SETTINGS = ("batch_size", "lr", "seed", "train_num_samples", "model", "opt", "wd", "warmup", "epochs", "max_steps",
                   "accum_freq", "dataset_resampled", "lr_scheduler", "epochs_cooldown", "lr_cooldown_power",
                   "lr_cooldown_end", "lock_image", "lock_image_unlocked_groups", "lock_image_freeze_bn_stats",
                   "lock_text", "lock_text_unlocked_layers", "lock_text_freeze_layer_norm")
# Of those, the ones after whose change the saved data position means nothing (the next epoch starts afresh).
DATA_SETTINGS = ("batch_size", "seed", "train_num_samples", "train_shards", "accum_freq", "dataset_resampled")


class ResumeError(ValueError):
    """A --resume checkpoint that does not fit this run (other settings); the message names each difference."""


def checkpoint_dir(output: str | Path) -> Path:
    return Path(output) / "checkpoints"


def step_path(output: str | Path, step: int) -> Path:
    return checkpoint_dir(output) / f"step_{step:08d}.pt"


def _replace_symlink(link: Path, target: str) -> None:
    tmp = link.with_name(link.name + ".tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def atomic_torch_save(obj: dict, path: Path) -> None:
    """Write to ``path.tmp``, fsync, rename: a killed job never leaves a half-written checkpoint under the real name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_checkpoint(output: str | Path, step: int, state: dict, keep: int = 0) -> Path:
    """Save ``state`` as ``step_<N>.pt``, point ``latest`` at it, and keep only the newest ``keep`` (0 = all).

    Pruning deletes only ``step_<N>.pt`` files (this tool wrote those) and never the one ``latest`` points to,
    even when older-numbered than files left from a longer run that this one resumed from the middle of."""
    if keep < 0:
        raise ValueError(f"keep_checkpoints must be >= 0, got {keep}")
    path = step_path(output, step)
    atomic_torch_save(state, path)
    latest = checkpoint_dir(output) / "latest"
    _replace_symlink(latest, path.name)
    if keep:
        current = latest.resolve()
        for old in list_checkpoints(output)[:-keep]:
            if old.resolve() != current:
                old.unlink(missing_ok=True)
    return path


def list_checkpoints(output: str | Path) -> list[Path]:
    folder = checkpoint_dir(output)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def resolve_resume(resume: str, output: str | Path) -> Path | None:
    """``latest`` -> this run's newest checkpoint (None when there is none yet: a fresh start); else a path."""
    if not resume:
        return None
    if resume == "latest":  # the ``latest`` link (the last save), not the highest number: a run resumed from an
        link = checkpoint_dir(output) / "latest"  # older step may leave higher-numbered files of the old timeline
        if link.is_file():
            return link.resolve()
        found = list_checkpoints(output)
        return found[-1] if found else None
    path = Path(resume)
    if path.is_dir():
        path = path / "checkpoints" / "latest" if (path / "checkpoints").is_dir() else path / "latest"
    if not path.exists():
        raise FileNotFoundError(f"--resume {resume}: no checkpoint at {path}")
    return path.resolve()


def load_checkpoint(path: str | Path) -> dict:
    """A training checkpoint (tensors and plain values only: ``weights_only=True``); an unreadable file (zero bytes,
    truncated copy, not a checkpoint) is a CheckpointError naming it, never a bare torch/zip traceback."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises EOFError, RuntimeError, UnpicklingError... for bad bytes
        size = path.stat().st_size if path.exists() else 0
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({size} bytes; truncated or corrupt? {detail[:200]})") from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise CheckpointError(f"{path}: not a training checkpoint of this tool (no 'state_dict' entry)")
    return state


def resume_settings(config: dict, shards: list[list] | None) -> dict:
    """The settings of a run that its continuation depends on (see RESUME_SETTINGS), plus the expanded shard list
    with per-shard sample counts when known (``[[path, samples], ...]``)."""
    out = {k: config[k] for k in RESUME_SETTINGS if k in config}
    if shards is not None:
        out["train_shards"] = [[str(u), int(n)] for u, n in shards]
    return out


def changed_settings(old: dict, new: dict) -> list[str]:
    """``"name old -> new"`` for each setting both sides know and that differs (an older checkpoint lacking one is
    not a difference)."""
    changes = []
    for key in (*RESUME_SETTINGS, "train_shards"):
        if key not in old or key not in new or old[key] == new[key]:
            continue
        if key == "train_shards":
            changes.append(f"train_shards {describe_shard_change(old[key], new[key])}")
        else:
            changes.append(f"{key} {old[key]!r} -> {new[key]!r}")
    return changes


def describe_shard_change(old: list[list], new: list[list]) -> str:
    """A short account of how two ``[[path, samples], ...]`` lists differ: counts, then the first difference."""
    head = f"{len(old)} shard(s)/{sum(n for _, n in old)} samples -> {len(new)} shard(s)/{sum(n for _, n in new)} samples"
    for a, b in zip(old, new):
        if list(a) != list(b):
            return f"{head}, first difference {a[0]} ({a[1]}) -> {b[0]} ({b[1]})"
    return head


def rng_state() -> dict:
    """Every RNG the loop touches, as tensors and plain values (weights_only-loadable)."""
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate((3, tuple(state["python"]), None))
    np.random.set_state(("MT19937", state["numpy"]["keys"].numpy().astype(np.uint32), state["numpy"]["pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_safetensors(state_dict: dict[str, torch.Tensor], path: Path) -> None:
    """open_clip state-dict keys in safetensors, written atomically (tensors made contiguous, shared ones copied)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", "keys": "open_clip"})
    os.replace(tmp, path)


# ---------------------------------------------------------------- resuming a run


REQUIRED_KEYS = ("state_dict", "optimizer", "step", "epoch", "step_in_epoch", "data", "rng", "world_size", "workers")


def shard_list(urls: list[str], sizes: list[int]) -> list[list]:
    """``[[absolute path, samples], ...]``: what the checkpoint records of the data, so a resume can tell."""
    return [[u if "://" in u else os.path.abspath(u), n] for u, n in zip(urls, sizes)]


def read_resume(cfg: TrainConfig, output: Path, settings: dict) -> tuple[Path | None, dict | None, bool]:
    """The --resume checkpoint (path, contents) checked against this run, and whether its data position still
    means anything. Refuses (ResumeError) a checkpoint whose run had other settings that change how training
    continues, unless --resume-force, which warns and names them. Older checkpoints lacking a recorded setting
    are not held to it."""
    path = resolve_resume(cfg.resume, output)
    if path is None:
        return None, None, True
    ckpt = load_checkpoint(path)
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: lacks {', '.join(missing)}: not a training checkpoint of this tool "
                              "(to start from weights alone use --pretrained)")
    old = ckpt.get("run_settings") or resume_settings(ckpt.get("config") or {}, None)
    changes = changed_settings(old, settings)
    if changes and not cfg.resume_force:
        raise ResumeError(f"--resume {path}: the checkpoint's run had other settings: {'; '.join(changes)}: rerun with "
                          "the checkpoint's settings, or pass --resume-force to continue with the new ones")
    if changes:
        log.warning("--resume-force: continuing %s with changed settings: %s", path, "; ".join(changes))
    data_kept = not any(c.split(" ", 1)[0] in DATA_SETTINGS for c in changes)
    return path, ckpt, data_kept


def check_fresh_output(output: Path) -> None:
    """A run without --resume must not write over another run's checkpoints and weights (open_clip_train refuses
    an existing experiment too): continue it with --resume latest, or start in a new folder."""
    done = [p for p in (output / "final.safetensors",) if p.exists()] + list_checkpoints(output)
    if done:
        raise ResumeError(f"--output {output} already holds a training run ({done[-1].name}); pass --resume latest to "
                          "continue it, or choose a new --output")
