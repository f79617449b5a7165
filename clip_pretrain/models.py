"""The one place CLIP models are built: open_clip's factory, with weights only from local files.

``create_clip(name, pretrained=PATH)`` accepts every checkpoint form a user of this toolkit meets:

* open_clip / open_clip_train checkpoints (``.pt``/``.bin`` state dicts, optionally under ``state_dict``),
  and this project's own training checkpoints (``OUTPUT/checkpoints/step_<N>.pt``, same ``state_dict`` key);
* safetensors (``OUTPUT/final.safetensors`` holds open_clip state-dict keys);
* OpenAI's released TorchScript ``.pt`` archives (``ViT-B-32.pt``...). ``torch.load(weights_only=True)``
  cannot read those and open_clip's ``load_checkpoint`` only catches ``TypeError`` from it, so they are
  read with ``torch.jit.load`` here; their models use QuickGELU, which is switched on for them.

There is no network at run time: a pretrained *tag* (``openai``, ``laion2b_s34b_b79k``) is refused with a
message that says which file to pass instead.
"""

from __future__ import annotations

import difflib
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import open_clip
import torch
from open_clip.model import resize_pos_embed, resize_text_pos_embed

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
# what a checkpoint folder may hold, in the order tried (open_clip's hub snapshots, then ours)
CHECKPOINT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
                    "final.safetensors", "model.safetensors", "pytorch_model.bin", "checkpoints/latest")


class CheckpointError(ValueError):
    """A checkpoint or model name that cannot be used; the message says what to do instead."""


def register_model_configs() -> None:
    """Add the shipped configs (``rs-tiny``...) to open_clip's registry; safe to call more than once."""
    names = {p.stem for p in CONFIG_DIR.glob("*.json")}
    if not names.issubset(open_clip.list_models()):
        open_clip.add_model_config(CONFIG_DIR)


@dataclass
class ClipBundle:
    """A model with its train/eval transforms and tokenizer, as open_clip's factory returns them."""

    name: str
    model: torch.nn.Module
    preprocess_train: Callable
    preprocess_val: Callable
    tokenizer: Callable
    quick_gelu: bool


def is_torchscript(path: Path) -> bool:
    """OpenAI's released ``.pt`` files are TorchScript archives (a zip holding ``code/`` and ``constants.pkl``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())


def _strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DDP (``module.``) and torch.compile (``_orig_mod.``) wrappers leave prefixes; drop them."""
    out = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The model weights in any supported checkpoint file (see the module docstring), on CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return _strip_prefixes(load_file(str(path), device="cpu"))
    if is_torchscript(path):
        state = torch.jit.load(str(path), map_location="cpu").state_dict()
        return {k: v for k, v in state.items() if k not in OPENAI_EXTRA_KEYS}
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for a bad file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: holds no state dict of tensors (top-level keys: {list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__})")
    return _strip_prefixes(obj)


def load_weights(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load open_clip state-dict keys strictly, resizing position embeddings the way open_clip does."""
    state_dict = dict(state_dict)
    if "logit_scale" in state_dict and state_dict["logit_scale"].ndim != model.logit_scale.ndim:
        state_dict["logit_scale"] = state_dict["logit_scale"].reshape(model.logit_scale.shape)
    resize_pos_embed(state_dict, model)
    resize_text_pos_embed(state_dict, model)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{source}: weights do not fit the model: {str(exc)[:1500]}") from exc


def check_model_name(name: str) -> None:
    if open_clip.get_model_config(name) is None:
        close = difflib.get_close_matches(name, open_clip.list_models(), n=5, cutoff=0.5)
        raise CheckpointError(f"unknown model {name!r}; close names: {close or 'none'} (all: open_clip.list_models())")


def check_pretrained(name: str, pretrained: str | None) -> Path | None:
    """A local file, or a clear error: pretrained tags need the hub, which this toolkit never contacts."""
    if not pretrained:
        return None
    path = Path(pretrained).expanduser()
    if path.is_file():
        return path
    if path.is_dir():  # a downloaded hub snapshot or checkpoint folder
        for name in CHECKPOINT_NAMES:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"--pretrained {path}: folder holds none of {', '.join(CHECKPOINT_NAMES)}")
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained in tags:
        raise CheckpointError(
            f"--pretrained {pretrained!r} is an open_clip hub tag for {name}, and weights are never downloaded at "
            f"run time: download the checkpoint once (e.g. open_clip.create_model('{name}', pretrained='{pretrained}') "
            "on a machine with network, or OpenAI's .pt) and pass its file path"
        )
    raise CheckpointError(f"--pretrained {pretrained!r}: no such file (known hub tags for {name}: {tags or 'none'})")


def create_clip(
    name: str,
    pretrained: str | Path | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    force_quick_gelu: bool = False,
    aug_cfg: dict[str, Any] | None = None,
) -> ClipBundle:
    """Build ``name`` with open_clip's factory and load ``pretrained`` (a local file) into it."""
    check_model_name(name)
    path = check_pretrained(name, str(pretrained) if pretrained else None)
    quick_gelu = force_quick_gelu or name.endswith("-quickgelu")
    if path is not None and is_torchscript(path) and not quick_gelu:
        log.info("%s is an OpenAI TorchScript archive: using QuickGELU as those weights were trained with", path)
        quick_gelu = True
    model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
        name, pretrained=None, precision=precision, device="cpu", force_quick_gelu=quick_gelu, aug_cfg=aug_cfg or {},
        output_dict=True,
    )
    if path is not None:
        load_weights(model, read_state_dict(path), source=str(path))
        log.info("loaded %s weights from %s", name, path)
    model.to(device)
    return ClipBundle(name, model, preprocess_train, preprocess_val, open_clip.get_tokenizer(name), quick_gelu)
