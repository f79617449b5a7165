"""Weights and json files of model folders, read safely and checked cheaply, with one-line errors that name the file.

Every stage-two tool (and, later, stage one) reads transformers folders (a GeoChat, a CLIP vision tower, a language model, a LoRA adapter)
whose files may be empty, truncated by a failed copy, or not what their name says. transformers and safetensors then
raise long multi-line errors (or an IndexError) from deep inside their loaders. The helpers here check the files
first, cheaply (a safetensors header and size, a zip's central directory; no tensor is read), and turn any problem
into the caller's own error type (``GeoChatError``, ``ConversionError``, ``ExportError``...) with one line naming
the file. Tensors are only ever read with safetensors or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import torch

from rs_common.errors import first_line  # one rule for every loader's one-line errors

# the weights of a transformers folder, in the order transformers tries them
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def read_json(path: str | Path, error: type[Exception]) -> Any:
    """A json file's content; a missing, unreadable or invalid file is ``error`` naming it."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{path}: a folder, not a json file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({first_line(exc)})") from None


def read_json_object(path: str | Path, error: type[Exception], what: str = "json object") -> dict:
    """``read_json`` that must give a json object (a config file)."""
    data = read_json(path, error)
    if not isinstance(data, dict):
        raise error(f"{path}: expected a {what}, got a json {type(data).__name__}")
    return data


def weight_files(folder: str | Path, error: type[Exception], required: bool = True) -> list[Path]:
    """The weight files of a transformers folder: the shards a ``*.index.json`` names, else ``model.safetensors``,
    else ``pytorch_model.bin``. A malformed index, a missing shard, or (``required``) no weights at all is
    ``error`` naming the file or folder."""
    folder = Path(folder)
    for name in WEIGHT_INDEXES:
        index = folder / name
        if index.is_file():
            data = read_json(index, error)
            weight_map = data.get("weight_map") if isinstance(data, dict) else None
            if not isinstance(weight_map, dict) or not weight_map:
                raise error(f"{index}: not a weight index (a json object with a non-empty weight_map)")
            files = [folder / str(f) for f in dict.fromkeys(weight_map.values())]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise error(f"{index} names {len(missing)} shard file(s) that are missing (first: {missing[0]})")
            return files
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return [folder / name]
    if required:
        raise error(f"{folder}: no weights ({', '.join(WEIGHT_FILES)} or a sharded index "
                    f"{' / '.join(WEIGHT_INDEXES)})")
    return []


def check_weight_file(path: str | Path, error: type[Exception]) -> None:
    """Cheap integrity check of one weights file, without reading its tensors: not empty; a safetensors header that
    parses and a size that covers every tensor; a ``.bin``/``.pt`` zip whose central directory (written last, so
    lost when the copy was cut short) is there. Problems are ``error`` naming the file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: weights file not found")
    if path.stat().st_size == 0:
        raise error(f"{path}: empty weights file (0 bytes); was it saved or copied completely?")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except Exception as exc:  # noqa: BLE001 - SafetensorError and OSError: a truncated or foreign file
            raise error(f"{path}: not a readable safetensors file, truncated or corrupt? ({first_line(exc)})") from None
        return
    with open(path, "rb") as fh:
        zip_magic = fh.read(4) == b"PK\x03\x04"
    if zip_magic:  # torch.save's format; the legacy (pre-1.6) pickle format is left to torch.load
        try:
            with zipfile.ZipFile(path):
                pass
        except (zipfile.BadZipFile, OSError) as exc:
            raise error(f"{path}: truncated or corrupt weights file ({first_line(exc)})") from None


def check_weight_folder(folder: str | Path, error: type[Exception]) -> list[Path]:
    """``weight_files`` of ``folder``, each passed through :func:`check_weight_file`; returns them."""
    files = weight_files(folder, error)
    for f in files:
        check_weight_file(f, error)
    return files


def read_weight_file(path: str | Path, error: type[Exception]) -> dict[str, torch.Tensor]:
    """The tensors of one ``.safetensors`` / ``.bin`` / ``.pt`` file (safetensors or ``torch.load(weights_only=True)``,
    so no code in the file runs); any problem is ``error`` naming the file."""
    from safetensors.torch import load_file

    path = Path(path)
    check_weight_file(path, error)
    try:
        state = load_file(str(path), device="cpu") if path.suffix == ".safetensors" else \
            torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - SafetensorError, RuntimeError, UnpicklingError...: a bad file
        reason = first_line(exc)
        raise error(f"{path}: not a readable weights file "
                    f"({reason if reason.startswith('it holds') else 'truncated or corrupt? ' + reason})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise error(f"{path}: holds no flat dict of tensors")
    return state


def read_weights(path: str | Path, error: type[Exception]) -> dict[str, torch.Tensor]:
    """Every tensor of a transformers model folder (``model.safetensors``, ``pytorch_model.bin`` or the shards of
    an index of either) or of one weights file, on CPU, each file checked first (:func:`read_weight_file`). A
    missing path, a folder without weights or an unreadable file is ``error`` naming it."""
    path = Path(path).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = weight_files(path, error, required=False)
        if not files:
            raise error(f"{path}: no weights ({', '.join(WEIGHT_FILES)} or a sharded index "
                        f"{' / '.join(WEIGHT_INDEXES)}); is it a transformers model folder?")
    else:
        raise error(f"{path}: no such transformers model folder or weights file")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(read_weight_file(f, error))
    return state
