"""GeoChat/LLaVA flags that name parts the HF Llava GeoChat folder (``--model``) already holds, checked against it.

GeoChat builds its model at the start from ``--vision_tower``, ``--pretrain_mm_mlp_adapter``, ``--mm_projector_type``,
``--mm_vision_select_layer`` and ``--mm_vision_select_feature``; here all of them are part of ``--model`` (converted by
launch/convert_geochat.py). A copied command keeps them: each is accepted when it describes the model it runs on, and
a one-line ConfigError naming the flag, the value and the model's own otherwise (never ignored in silence). Only the
model's ``config.json`` and its projector tensors are read, before the model is loaded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from rs_common.config import ConfigError
from rs_common.weights import read_json_object, read_weight_file, weight_files

logger = logging.getLogger(__name__)

# Hub names GeoChat's and LLaVA-1.5's scripts give as --vision_tower (nothing is downloaded: their shape is known)
KNOWN_TOWERS = {
    "openai/clip-vit-large-patch14-336": {"hidden_size": 1024, "num_hidden_layers": 24, "patch_size": 14,
                                          "intermediate_size": 4096},
    "openai/clip-vit-large-patch14": {"hidden_size": 1024, "num_hidden_layers": 24, "patch_size": 14,
                                      "intermediate_size": 4096},
}
TOWER_KEYS = ("hidden_size", "num_hidden_layers", "patch_size", "intermediate_size")  # not image_size: interpolated
SELECT_FEATURE = {"patch": "default", "cls_patch": "full"}  # LLaVA's mm_vision_select_feature -> HF Llava's strategy
PROJECTOR_KEYS = {"mm_projector.0.weight": "linear_1.weight", "mm_projector.0.bias": "linear_1.bias",
                  "mm_projector.2.weight": "linear_2.weight", "mm_projector.2.bias": "linear_2.bias"}


def model_config(model_dir) -> dict[str, Any]:
    return read_json_object(Path(model_dir) / "config.json", ConfigError, "config object")


def _tower_shape(value: str) -> dict[str, Any]:
    if value in KNOWN_TOWERS:
        return KNOWN_TOWERS[value]
    path = Path(value).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(f"--vision_tower {value}: neither a folder with a config.json nor one of "
                          f"{', '.join(KNOWN_TOWERS)} (the tower is part of --model here; leave the flag out)")
    cfg = read_json_object(path / "config.json", ConfigError, "config object")
    return cfg.get("vision_config") or cfg


def check_vision_tower(value: str, config: dict) -> None:
    tower = _tower_shape(value)
    ours = config.get("vision_config") or {}
    differ = [f"{k} {tower.get(k)} vs {ours.get(k)}" for k in TOWER_KEYS if tower.get(k) != ours.get(k)]
    if differ:
        raise ConfigError(f"--vision_tower {value}: not the tower of --model ({'; '.join(differ)}); the tower is part "
                          "of --model here: swap it with launch/convert_geochat.py --swap-vision-tower")


def model_projector(model_dir) -> dict[str, torch.Tensor]:
    """The projector tensors of the model folder (``linear_1.weight`` ...), read without loading the rest (safetensors
    slices; a ``.bin`` is read whole)."""
    from safetensors import safe_open

    out: dict[str, torch.Tensor] = {}
    for path in weight_files(model_dir, ConfigError):
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    if "multi_modal_projector." in key:
                        out[key.split("multi_modal_projector.", 1)[1]] = f.get_tensor(key)
        else:
            out.update({k.split("multi_modal_projector.", 1)[1]: v for k, v in read_weight_file(path, ConfigError)
                        .items() if "multi_modal_projector." in k})
    return out


def check_projector_weights(value: str, model_dir) -> None:
    """``--pretrain_mm_mlp_adapter FILE`` (LLaVA's mm_projector.bin): its four tensors must equal the model's
    projector (bf16 rounding allowed)."""
    theirs = {}
    for key, tensor in read_weight_file(value, ConfigError).items():
        short = next((v for k, v in PROJECTOR_KEYS.items() if key.endswith(k)), None)
        if short:
            theirs[short] = tensor
    if len(theirs) != len(PROJECTOR_KEYS):
        raise ConfigError(f"--pretrain_mm_mlp_adapter {value}: not an mlp2x_gelu mm_projector file "
                          f"(keys ...mm_projector.0/.2.weight/bias)")
    ours = model_projector(model_dir)
    for key, tensor in theirs.items():
        mine = ours.get(key)
        if mine is None or mine.shape != tensor.shape or not torch.allclose(
                mine.float(), tensor.float(), rtol=1e-2, atol=1e-3):
            raise ConfigError(f"--pretrain_mm_mlp_adapter {value}: its {key} is not the projector of --model "
                              f"{model_dir} (the projector is part of --model here: leave the flag out, or convert "
                              "the checkpoint it belongs to with launch/convert_geochat.py)")


def check_model_flags(flags: dict[str, Any], model_dir) -> None:
    """Each of ``flags`` (GeoChat flag name -> value, as given) against the model in ``model_dir``."""
    if not flags:
        return
    config = model_config(model_dir)
    for name, value in flags.items():
        if name == "vision_tower" and value is not None:
            check_vision_tower(str(value), config)
        elif name == "pretrain_mm_mlp_adapter" and value:
            check_projector_weights(str(value), model_dir)
        elif name == "mm_vision_select_layer" and value != config.get("vision_feature_layer"):
            raise ConfigError(f"--mm_vision_select_layer {value}: the model's vision_feature_layer is "
                              f"{config.get('vision_feature_layer')} (GeoChat's is -2)")
        elif name == "mm_vision_select_feature" and SELECT_FEATURE.get(value) != config.get(
                "vision_feature_select_strategy", "default"):
            raise ConfigError(f"--mm_vision_select_feature {value}: the model's vision_feature_select_strategy is "
                              f"{config.get('vision_feature_select_strategy')} (patch = default, cls_patch = full)")
    logger.info("checked against %s: %s", model_dir, ", ".join(f"--{k}" for k in flags))
