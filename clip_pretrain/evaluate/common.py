"""What both evaluation drivers (retrieval, zero-shot) share: their error type, the model they score (name, checkpoint,
checks, loading) and the output folder check."""

from __future__ import annotations

from pathlib import Path

import torch

from rs_common.files import check_output_folder


class EvalError(ValueError):
    """A bad evaluation input (path, split, embeddings); the message names it and says what to do."""


MODEL_HELP = ("open_clip model name (rs-tiny, ViT-B-32, ...); optional with a --checkpoint whose open_clip_config.json "
              "(written beside every checkpoint of a training run) records it")


def load_bundle(model: str, checkpoint: str | None, device: torch.device, init_seed: int = 0,
                allow_torchscript: bool = False):
    """``create_clip`` with a local checkpoint, or a random init drawn with ``init_seed`` (so a chance baseline
    is the same on every run; the caller's RNG state is left untouched). A TorchScript checkpoint is refused
    unless ``allow_torchscript`` (loading it runs code from the file)."""
    from clip_pretrain.models import create_clip

    if checkpoint is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            return create_clip(model, pretrained=None, device=device)
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise EvalError(f"{checkpoint}: checkpoint file not found")
    # a folder (run dir, hub snapshot) is resolved there
    return create_clip(model, pretrained=str(path), device=device, allow_torchscript=allow_torchscript)


def check_output_dir(output: str | Path) -> Path:
    """The output folder as a Path; an existing file there is an EvalError (before any model is loaded)."""
    return check_output_folder(output, EvalError)


def check_model_inputs(model: str, checkpoint: str | None) -> str:
    """Cheap checks of the model name and checkpoint path, before any eval set is embedded or model built.
    Returns the model to build: ``model``, or when it is empty the name recorded with the checkpoint
    (``open_clip_config.json`` beside it, see ``clip_pretrain.identity``); a ``model`` contradicting the record
    is an EvalError."""
    from clip_pretrain.identity import IdentityError, read_identity, resolve_model
    from clip_pretrain.models import check_model_name

    if checkpoint is not None and not Path(checkpoint).expanduser().exists():
        raise EvalError(f"{checkpoint}: checkpoint file not found")
    try:
        name = resolve_model(model or None, read_identity(checkpoint) if checkpoint else None, checkpoint or "")
    except IdentityError as exc:
        raise EvalError(str(exc)) from None
    check_model_name(name)
    return name
