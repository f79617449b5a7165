"""A model's identity travels with its weights: ``open_clip_config.json`` beside every checkpoint we write.

The file has the layout of open_clip's hub snapshots, ``{"model_cfg": {...}, "preprocess_cfg": {...}}`` (so
``open_clip.create_model_and_transforms("local-dir:RUN")`` and anyone reading a snapshot understand it), plus
``"model_name"``. ``model_cfg["quick_gelu"]`` is the activation the weights were trained with: continual
pretraining from OpenAI weights must keep QuickGELU, and a tool that rebuilt such a model with GELU (or exported
its tower as ``hidden_act: gelu``) would quietly score and hand over a different network.

:func:`read_identity` finds the identity of a weights file or folder, in this order: ``open_clip_config.json`` in
the folder given or beside the file (ours, or a downloaded hub snapshot's: its ``model_cfg`` is matched to a
registered model name); the ``model_name`` / ``quick_gelu`` a stage-1 training checkpoint (``step_N.pt``) stores
itself. OpenAI weights are recognised from the weights themselves (:func:`is_openai_state_dict`, and TorchScript
archives, in ``clip_pretrain.models``).
"""

from __future__ import annotations

import copy
import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from rs_common.files import atomic_write_text

log = logging.getLogger(__name__)

CONFIG_NAME = "open_clip_config.json"
# buffers OpenAI's released models carry in their state dict (TorchScript or re-saved); no open_clip model has them
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


class IdentityError(ValueError):
    """A model name that contradicts the one recorded with the weights, or no way to know which model they are."""


@dataclass(frozen=True)
class ModelIdentity:
    """What a checkpoint says it is: a registered open_clip ``name`` (None when nothing names it) and whether it was
    trained with QuickGELU; ``source`` is the file that says so, for messages."""

    name: str | None
    quick_gelu: bool
    source: str


def same_architecture(a: str, b: str) -> bool:
    """``ViT-B-32`` and ``ViT-B-32-quickgelu`` are one architecture (the suffix only picks the activation)."""
    return a.removesuffix("-quickgelu") == b.removesuffix("-quickgelu")


def write_identity(folder: str | Path, name: str, model: torch.nn.Module, quick_gelu: bool) -> Path:
    """``folder/open_clip_config.json`` for ``model`` (built as ``name``), written atomically; returns its path."""
    import open_clip

    cfg = copy.deepcopy(open_clip.get_model_config(name)) or {}
    cfg["quick_gelu"] = bool(quick_gelu)
    preprocess = {k: (list(v) if isinstance(v, tuple) else v) for k, v in open_clip.get_model_preprocess_cfg(model).items()}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CONFIG_NAME
    atomic_write_text(path, json.dumps({"model_name": name, "model_cfg": cfg, "preprocess_cfg": preprocess}, indent=2) + "\n")
    return path


def registered_name(model_cfg: dict) -> str | None:
    """The registered open_clip model whose config is ``model_cfg`` (activation aside), preferring names without
    ``-quickgelu``; None when none is."""
    import open_clip

    want = {k: v for k, v in model_cfg.items() if k != "quick_gelu"}
    found = [n for n in open_clip.list_models()
             if {k: v for k, v in (open_clip.get_model_config(n) or {}).items() if k != "quick_gelu"} == want]
    found.sort(key=lambda n: (n.endswith("-quickgelu"), n))
    return found[0] if found else None


def identity_from_config(path: Path) -> ModelIdentity | None:
    """The identity an ``open_clip_config.json`` gives; None when the file is unreadable or has no model_cfg."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("%s: not readable JSON; the model's identity is not taken from it", path)
        return None
    model_cfg = data.get("model_cfg") if isinstance(data, dict) else None
    if not isinstance(model_cfg, dict):
        return None
    name = data.get("model_name") if isinstance(data.get("model_name"), str) else registered_name(model_cfg)
    return ModelIdentity(name, bool(model_cfg.get("quick_gelu", False)), str(path))


def is_torchscript(path: Path) -> bool:
    """OpenAI's released ``.pt`` files are TorchScript archives (a zip holding ``code/`` and ``constants.pkl``).

    Any zip entry under a ``code`` folder or named ``constants.pkl`` counts, wherever it sits, so a crafted archive
    cannot slip past by its layout. A file that is not a readable zip is not TorchScript (the loader reports it)."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    return any(n.rsplit("/", 1)[-1] == "constants.pkl" or "code" in n.split("/")[:-1] for n in names)


def identity_from_training_checkpoint(path: Path) -> ModelIdentity | None:
    """``model_name`` and the activation a stage-1 ``step_N.pt`` records (memory-mapped: the optimizer state in it
    is not read); None for other files. A TorchScript archive or an empty file is never opened here."""
    if path.stat().st_size == 0 or is_torchscript(path):
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not a zip checkpoint: the weights loader reports real problems
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("model_name"), str):
        return None
    config = obj.get("config") if isinstance(obj.get("config"), dict) else {}
    quick = obj.get("quick_gelu", config.get("force_quick_gelu", False))
    return ModelIdentity(obj["model_name"], bool(quick), str(path))


def read_identity(path: str | Path) -> ModelIdentity | None:
    """The identity of a weights file or checkpoint folder (see the module docstring); None when nothing records it."""
    path = Path(path).expanduser()
    folder = path if path.is_dir() else path.parent
    beside = folder / CONFIG_NAME
    if beside.is_file():
        found = identity_from_config(beside)
        if found is not None:
            return found
    if path.is_file() and (path.suffix in (".pt", ".pth", ".bin") or path.name == "latest"):
        return identity_from_training_checkpoint(path)
    return None


def resolve_model(name: str | None, identity: ModelIdentity | None, source: str) -> str:
    """The model name to build: ``name`` when given (it must not contradict ``identity``), else the recorded one."""
    if name and identity is not None and identity.name and not same_architecture(name, identity.name):
        raise IdentityError(f"{identity.source} records the weights as {identity.name!r}, but --model {name!r} was "
                            f"given: drop --model (it is read from there) or pass --model {identity.name}")
    if name:
        return name
    if identity is not None and identity.name:
        return identity.name
    where = f"{source} records no model name (no {CONFIG_NAME} beside it)" if source else "no checkpoint was given"
    raise IdentityError(f"--model is required: {where}")


def is_openai_state_dict(state_dict: dict) -> bool:
    """OpenAI's released CLIP weights, TorchScript or re-saved as a plain state dict, carry buffers no open_clip model
    has; they were trained with QuickGELU."""
    return any(k in state_dict for k in OPENAI_EXTRA_KEYS)
