"""Training checkpoints: atomic writes, ``latest``, resume state, and the final safetensors export.

Layout under ``OUTPUT/checkpoints``: ``step_<N>.pt`` (N zero-padded to 8 digits) and ``latest``, a symlink to
the newest one (swapped atomically). A checkpoint is a dict of tensors and plain Python values only, so it
loads with ``torch.load(weights_only=True)``; the weights sit under ``state_dict`` with open_clip's keys,
which is the key open_clip's own ``load_checkpoint`` looks for. ``OUTPUT/final.safetensors`` holds the same
weights for ``open_clip.create_model(NAME, pretrained=PATH)``.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import torch

STEP_RE = re.compile(r"^step_(\d+)\.pt$")


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
    """Save ``state`` as ``step_<N>.pt``, point ``latest`` at it, and keep only the newest ``keep`` (0 = all)."""
    path = step_path(output, step)
    atomic_torch_save(state, path)
    _replace_symlink(checkpoint_dir(output) / "latest", path.name)
    if keep:
        for old in list_checkpoints(output)[:-keep]:
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
    if resume == "latest":
        found = list_checkpoints(output)
        return found[-1] if found else None
    path = Path(resume)
    if path.is_dir():
        path = path / "checkpoints" / "latest" if (path / "checkpoints").is_dir() else path / "latest"
    if not path.exists():
        raise FileNotFoundError(f"--resume {resume}: no checkpoint at {path}")
    return path.resolve()


def load_checkpoint(path: str | Path) -> dict:
    return torch.load(Path(path), map_location="cpu", weights_only=True)


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
