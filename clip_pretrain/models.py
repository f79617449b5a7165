"""The one place CLIP models are built: open_clip's factory, with weights only from local files.

``create_clip(name, pretrained=PATH)`` accepts every checkpoint form a user of this toolkit meets:

* open_clip / open_clip_train checkpoints (``.pt``/``.bin`` state dicts, optionally under ``state_dict``),
  and this project's own training checkpoints (``OUTPUT/checkpoints/step_<N>.pt``, same ``state_dict`` key);
* safetensors (``OUTPUT/final.safetensors`` holds open_clip state-dict keys);
* OpenAI's released TorchScript ``.pt`` archives (``ViT-B-32.pt``...), only when the caller opts in
  (``allow_torchscript``, the ``--allow-torchscript`` flag): ``torch.jit.load`` compiles and runs the code
  stored in the file, which ``torch.load(weights_only=True)`` exists to prevent, so a file holding
  ``code/`` or ``constants.pkl`` is refused by default with a message naming the flag.

The model name and activation come with the weights (``clip_pretrain/identity.py``: ``open_clip_config.json``
beside every checkpoint this toolkit writes, or a hub snapshot's), so ``name`` is optional when a checkpoint
records it; OpenAI weights in any form (TorchScript, or a state dict re-saved from one) get QuickGELU.

There is no network at run time: a pretrained *tag* (``openai``, ``laion2b_s34b_b79k``) is refused with a
message that says which file to pass instead.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import open_clip
import torch
from open_clip.model import resize_pos_embed, resize_text_pos_embed

from rs_common.errors import first_line

from clip_pretrain.identity import (  # noqa: F401 - is_torchscript is part of this module's interface
    OPENAI_EXTRA_KEYS,
    IdentityError,
    is_openai_state_dict,
    is_torchscript,
    read_identity,
    resolve_model,
)

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
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


def _strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DDP (``module.``) and torch.compile (``_orig_mod.``) wrappers leave prefixes; drop them."""
    out = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


TORCHSCRIPT_FLAG = "--allow-torchscript"
TORCHSCRIPT_HELP = ("load TorchScript checkpoints (OpenAI's released .pt files) with torch.jit.load, which EXECUTES CODE "
                    "stored in the file: only for files from a source you trust")


def refuse_torchscript(path: Path) -> None:
    """Raise the CheckpointError for a TorchScript file loaded without opt-in: ``torch.jit.load`` would compile and
    run the code stored in it, so it is never called on a file the user did not vouch for."""
    raise CheckpointError(
        f"{path}: a TorchScript archive (it holds code/ or constants.pkl); loading it runs code stored in the file, "
        f"so it is refused unless you pass {TORCHSCRIPT_FLAG} (only for a file from a source you trust, such as "
        "OpenAI's released ViT-B-32.pt)"
    )


def file_kind(path: Path) -> str:
    """What the first bytes say a weights file is: ``zip`` (torch.save, TorchScript), ``pickle`` (legacy torch.save),
    ``safetensors`` (an 8-byte header length, then a json header) or ``other``."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80":
        return "pickle"
    if len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < path.stat().st_size:
        return "safetensors"
    return "other"


def read_state_dict(path: str | Path, allow_torchscript: bool = False) -> dict[str, torch.Tensor]:
    """The model weights in any supported checkpoint file (see the module docstring), on CPU. A file that cannot be
    read (empty, truncated, not a checkpoint) is a one-line CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint; was it copied or saved completely?")
    kind = file_kind(path)
    if kind == "other":
        raise CheckpointError(f"{path}: not a checkpoint (neither a PyTorch zip/pickle nor a safetensors file)")
    if path.suffix == ".safetensors" or kind == "safetensors":
        from safetensors.torch import load_file

        try:
            return _strip_prefixes(load_file(str(path), device="cpu"))
        except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError...: a truncated or foreign file
            raise CheckpointError(f"{path}: not a readable safetensors file, truncated or corrupt? "
                                  f"({first_line(exc)})") from None
    if is_torchscript(path):
        if not allow_torchscript:
            refuse_torchscript(path)
        try:
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception as exc:  # noqa: BLE001 - a broken archive raises RuntimeError and others
            raise CheckpointError(f"{path}: not a readable TorchScript archive ({first_line(exc)})") from None
        return {k: v for k, v in state.items() if k not in OPENAI_EXTRA_KEYS}
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for a bad file
        reason = first_line(exc)
        if not reason.startswith("it holds"):
            reason = "truncated or corrupt? " + reason
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: holds no state dict of tensors (top-level keys: {list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__})")
    return _strip_prefixes(obj)


def _fit_to(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state_dict`` adjusted the way open_clip loads it: ``logit_scale`` reshaped, position embeddings resized to
    the model's grid / context. A resize that cannot apply (a foreign shape) is left to the shape report."""
    state_dict = dict(state_dict)
    scale = state_dict.get("logit_scale")
    own_scale = getattr(model, "logit_scale", None)
    if isinstance(scale, torch.Tensor) and isinstance(own_scale, torch.Tensor) and scale.ndim != own_scale.ndim \
            and scale.numel() == own_scale.numel():
        state_dict["logit_scale"] = scale.reshape(own_scale.shape)
    for resize, key, own in ((resize_pos_embed, "visual.positional_embedding", "visual.positional_embedding"),
                             (resize_text_pos_embed, "positional_embedding", "positional_embedding")):
        ours = _get_tensor(model, own)
        theirs = state_dict.get(key)
        if ours is None or not isinstance(theirs, torch.Tensor) or theirs.shape[-1:] != ours.shape[-1:]:
            continue  # another width: not a resize, the shape report names it
        try:
            resize(state_dict, model)
        except (RuntimeError, ValueError, TypeError, AttributeError):
            pass
    return state_dict


def _get_tensor(model: torch.nn.Module, dotted: str) -> torch.Tensor | None:
    obj: Any = model
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, torch.Tensor) else None


# weights whose shapes tell the architecture (width, patch, grid): shown first when their shapes differ
TELLING_KEYS = ("visual.conv1.weight", "visual.positional_embedding", "token_embedding.weight")


def _shape(t) -> tuple[int, ...]:
    return tuple(int(x) for x in t.shape)


def weight_mismatch(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> str | None:
    """None when ``state_dict`` loads strictly into ``model``; else one line: the counts of missing keys, unexpected
    keys and shape mismatches, with the first example of each (shapes as checkpoint vs model)."""
    own = {k: _shape(v) for k, v in model.state_dict().items()}
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [(k, _shape(state_dict[k]), own[k]) for k in own if k in state_dict and _shape(state_dict[k]) != own[k]]
    # the example that says most about the architecture first
    shapes.sort(key=lambda m: TELLING_KEYS.index(m[0]) if m[0] in TELLING_KEYS else len(TELLING_KEYS))
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) (first: {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) (first: {unexpected[0]})")
    if shapes:
        key, got, want = shapes[0]
        parts.append(f"{len(shapes)} shape mismatch(es) (first: {key} checkpoint {got} vs model {want})")
    return ", ".join(parts) or None


def _resblock_count(state_dict: dict[str, torch.Tensor], prefix: str) -> int | None:
    found = {int(m.group(1)) for k in state_dict if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(found) + 1 if found else None


def checkpoint_signature(state_dict: dict[str, torch.Tensor]) -> dict[str, int]:
    """The architecture numbers a CLIP state dict shows (ViT towers only): vision width/layers/patch/image size,
    text width/layers/context/vocabulary, embedding size. Keys it cannot tell are left out."""
    sig: dict[str, int] = {}
    conv1 = state_dict.get("visual.conv1.weight")
    if isinstance(conv1, torch.Tensor) and conv1.ndim == 4:
        sig["vision_width"], sig["patch_size"] = int(conv1.shape[0]), int(conv1.shape[-1])
        pos = state_dict.get("visual.positional_embedding")
        if isinstance(pos, torch.Tensor) and pos.ndim == 2:
            grid = math.isqrt(int(pos.shape[0]) - 1)
            if grid * grid == pos.shape[0] - 1:
                sig["image_size"] = grid * sig["patch_size"]
    if (n := _resblock_count(state_dict, "visual.transformer.resblocks.")) is not None:
        sig["vision_layers"] = n
    tok = state_dict.get("token_embedding.weight")
    if isinstance(tok, torch.Tensor) and tok.ndim == 2:
        sig["vocab_size"], sig["text_width"] = int(tok.shape[0]), int(tok.shape[1])
    pos = state_dict.get("positional_embedding")
    if isinstance(pos, torch.Tensor) and pos.ndim == 2:
        sig["context_length"] = int(pos.shape[0])
    if (n := _resblock_count(state_dict, "transformer.resblocks.")) is not None:
        sig["text_layers"] = n
    proj = state_dict.get("text_projection", state_dict.get("visual.proj"))
    if isinstance(proj, torch.Tensor) and proj.ndim == 2:
        sig["embed_dim"] = int(proj.shape[1])
    return sig


def config_signature(name: str) -> dict[str, int] | None:
    """The same numbers from a registered open_clip config, read from its JSON without building it; None for
    towers other than an open_clip ViT (timm, Hugging Face, ResNet)."""
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    cfg = open_clip.get_model_config(name) or {}
    try:
        v, t = CLIPVisionCfg(**cfg.get("vision_cfg", {})), CLIPTextCfg(**cfg.get("text_cfg", {}))
    except TypeError:
        return None
    if v.timm_model_name or isinstance(v.layers, (list, tuple)) or t.hf_model_name or not isinstance(v.image_size, int):
        return None
    return {"vision_width": v.width, "patch_size": v.patch_size, "image_size": v.image_size, "vision_layers": v.layers,
            "vocab_size": t.vocab_size, "text_width": t.width, "context_length": t.context_length,
            "text_layers": t.layers, "embed_dim": cfg.get("embed_dim")}


def matching_models(state_dict: dict[str, torch.Tensor], exclude: str = "") -> list[str]:
    """Registered model names whose config has the checkpoint's shapes (image size may differ: the position grid is
    resized on load; exact sizes first)."""
    sig = checkpoint_signature(state_dict)
    if "vision_width" not in sig:
        return []
    exact, resized = [], []
    for name in open_clip.list_models():
        other = config_signature(name) if name != exclude else None
        if other is None or any(other.get(k) != v for k, v in sig.items() if k != "image_size"):
            continue
        (exact if other["image_size"] == sig.get("image_size") else resized).append(name)
    return exact + resized


def mismatch_error(source: str, model_name: str, problem: str, state_dict: dict[str, torch.Tensor]) -> CheckpointError:
    """The one-line error for weights that do not fit ``model_name``, with the registered models that would fit."""
    matches = matching_models(state_dict, exclude=model_name)
    hint = (f"its shapes match {', '.join(matches[:4])}" if matches else
            f"no registered model config matches its shapes {checkpoint_signature(state_dict) or '(not a CLIP ViT)'}")
    return CheckpointError(f"{source}: weights do not fit model {model_name!r}: {problem}; pass the --model the "
                           f"checkpoint was trained as ({hint})")


class _DropMessage(logging.Filter):
    """Drops log records whose message contains ``text``."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def check_fits(name: str, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Refuse weights that do not fit ``name`` before the model is really built: the model is built on the meta
    device (no memory, no initialisation) and only its shapes are compared. Skipped if that build fails."""
    quiet = _DropMessage("No pretrained weights loaded")  # open_clip says so for the shell too; once is enough
    logging.getLogger().addFilter(quiet)
    try:
        with torch.device("meta"):
            shell = open_clip.create_model(name, pretrained=None, device="meta")
    except Exception as exc:  # noqa: BLE001 - the real build below reports real problems
        log.debug("meta build of %s failed (%s): shape check left to the load", name, exc)
        return
    finally:
        logging.getLogger().removeFilter(quiet)
    problem = weight_mismatch(shell, _fit_to(shell, state_dict))
    if problem:
        raise mismatch_error(source, name, problem, state_dict)


def load_weights(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str = "checkpoint",
                 model_name: str = "") -> None:
    """Load open_clip state-dict keys strictly, resizing position embeddings the way open_clip does. Weights that do
    not fit are a one-line CheckpointError (counts and first examples; see :func:`weight_mismatch`)."""
    state_dict = _fit_to(model, state_dict)
    problem = weight_mismatch(model, state_dict)
    if problem:
        raise mismatch_error(source, model_name or type(model).__name__, problem, state_dict)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{source}: weights do not fit the model: {first_line(exc)}") from None


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
        raise CheckpointError(f"{path}: checkpoint folder holds none of {', '.join(CHECKPOINT_NAMES)}")
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained in tags:
        raise CheckpointError(
            f"--pretrained {pretrained!r} is an open_clip hub tag for {name}, and weights are never downloaded at "
            f"run time: download the checkpoint once (e.g. open_clip.create_model('{name}', pretrained='{pretrained}') "
            "on a machine with network, or OpenAI's .pt) and pass its file path"
        )
    raise CheckpointError(f"--pretrained {pretrained!r}: no such file (known hub tags for {name}: {tags or 'none'})")


def create_clip(
    name: str | None,
    pretrained: str | Path | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    force_quick_gelu: bool = False,
    aug_cfg: dict[str, Any] | None = None,
    allow_torchscript: bool = False,
) -> ClipBundle:
    """Build a model with open_clip's factory and load ``pretrained`` (a local file or checkpoint folder) into it.

    The model and its activation come from the checkpoint when it records them (``clip_pretrain.identity``):
    ``name`` may then be None, and a ``name`` that contradicts the record is an error. QuickGELU is used when
    asked for, when the name says so, when the record says so, and for OpenAI weights in any form. A TorchScript
    file is refused unless ``allow_torchscript`` (it runs code from the file); the weights are read and their
    shapes checked before the model is built, so a wrong file or model name fails fast with a one-line error."""
    identity = read_identity(pretrained) if pretrained else None
    try:
        name = resolve_model(name, identity, str(pretrained or ""))
    except IdentityError as exc:
        raise CheckpointError(str(exc)) from None
    check_model_name(name)
    path = check_pretrained(name, str(pretrained) if pretrained else None)
    state_dict, why_quick = None, ""
    if path is not None:  # read and check the weights before the (possibly large) model is built
        state_dict = read_state_dict(path, allow_torchscript=allow_torchscript)
        if is_openai_state_dict(state_dict) or is_torchscript(path):
            state_dict = {k: v for k, v in state_dict.items() if k not in OPENAI_EXTRA_KEYS}
            why_quick = "OpenAI weights"
        check_fits(name, state_dict, source=str(path))
    if identity is not None and identity.quick_gelu:
        why_quick = f"recorded in {identity.source}"
    quick_gelu = force_quick_gelu or name.endswith("-quickgelu") or bool(why_quick)
    if why_quick and not force_quick_gelu:
        log.info("%s: QuickGELU (%s)", path, why_quick)
    model, preprocess_train, preprocess_val = quiet_factory(
        name, precision=precision, force_quick_gelu=quick_gelu, aug_cfg=aug_cfg or {})
    if state_dict is not None:
        load_weights(model, state_dict, source=str(path), model_name=name)
        log.info("loaded %s weights from %s", name, path)
    model.to(device)
    return ClipBundle(name, model, preprocess_train, preprocess_val, open_clip.get_tokenizer(name), quick_gelu)


def quiet_factory(name: str, **kwargs):
    """``open_clip.create_model_and_transforms(name, pretrained=None, ...)`` without its "No pretrained weights
    loaded ... initialized randomly" warning: this toolkit loads the weights itself right after (or says in its
    own output that a model is random-init), so the warning would be wrong every time it was shown."""
    quiet = _DropMessage("No pretrained weights loaded")
    logging.getLogger().addFilter(quiet)
    try:
        return open_clip.create_model_and_transforms(name, pretrained=None, device="cpu", output_dict=True, **kwargs)
    finally:
        logging.getLogger().removeFilter(quiet)
