"""Original LLaVA-1.5 / GeoChat checkpoints <-> transformers' HF Llava layout (transformers 5.x).

Original layout (``LlavaLlamaForCausalLM`` / ``GeoChatLlamaForCausalLM``, a LlamaForCausalLM with extras):

    model.embed_tokens.weight, model.layers.N.*, model.norm.weight, lm_head.weight
    model.mm_projector.0.{weight,bias}, model.mm_projector.2.{weight,bias}          (mlp2x_gelu; .1 is the GELU)
    model.vision_tower.vision_tower.vision_model.*                                    (when the tower was saved)

HF layout of ``LlavaForConditionalGeneration.state_dict()`` in transformers 5.x:

    model.language_model.embed_tokens.weight, model.language_model.layers.N.*, model.language_model.norm.weight
    lm_head.weight
    model.multi_modal_projector.linear_1.{weight,bias}, model.multi_modal_projector.linear_2.{weight,bias}
    model.vision_tower.*                      (CLIPVisionModel: embeddings.*, pre_layrnorm.*, encoder.layers.N.*,
                                               post_layernorm.*; no ``vision_model.`` level any more)

``save_pretrained`` writes the legacy on-disk names (``language_model.model.*``, ``language_model.lm_head.weight``,
``vision_tower.*``, ``multi_modal_projector.*``) and ``from_pretrained`` maps them back; ``hf_to_original`` takes
either form (and the 4.x ``vision_tower.vision_model.*`` form). Buffers that old checkpoints carry
(``rotary_emb.inv_freq``, the tower's ``embeddings.position_ids``) are recomputed by the model and dropped.

``convert_geochat(cfg)`` is the whole ``launch/convert_geochat.py`` tool.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rs_common.config import ConfigError
from rs_common.weights import read_json_object, read_weights
from vlm_finetune.geochat import GeoChat, build_llava_config, finish_tokens, load_geochat
from vlm_finetune.parts import (
    GEOCHAT_IMAGE_SIZE,
    VISION_FEATURE_SELECT_STRATEGY,
    GeoChatError,
    check_dir,
    check_model_dir,
    has_tokenizer_files,
    image_token_count,
    load_image_processor,
    load_tokenizer,
    load_vision_tower,
    make_processor,
    meta_tensors,
    parameters_on_meta,
)

logger = logging.getLogger(__name__)


class ConversionError(GeoChatError):
    """A checkpoint that cannot be converted (unknown keys, missing files, shape mismatch, ...)."""


# THE rename table: original key prefix -> HF key prefix; first match wins, so the longer prefixes come first. The
# other direction is its inverse (the first original spelling of each HF prefix).
_ORIGINAL_TO_HF = (
    ("model.vision_tower.vision_tower.vision_model.", "model.vision_tower."),
    ("model.vision_tower.vision_tower.", "model.vision_tower."),  # a tower saved by a transformers without vision_model.
    ("model.mm_projector.0.", "model.multi_modal_projector.linear_1."),
    ("model.mm_projector.2.", "model.multi_modal_projector.linear_2."),
    ("model.embed_tokens.", "model.language_model.embed_tokens."),
    ("model.layers.", "model.language_model.layers."),
    ("model.norm.", "model.language_model.norm."),
    ("lm_head.", "lm_head."),
)
_HF_TO_ORIGINAL = tuple((hf, original) for hf, original in {hf: o for o, hf in reversed(_ORIGINAL_TO_HF)}.items())
# not a direction but HF spellings: the on-disk names transformers 5 writes, and the 4.x in-memory names, -> the 5.x
# in-memory names
_HF_LEGACY = (
    ("language_model.model.", "model.language_model."),
    ("language_model.lm_head.", "lm_head."),
    ("model.vision_tower.vision_model.", "model.vision_tower."),
    ("vision_tower.vision_model.", "model.vision_tower."),
    ("vision_tower.", "model.vision_tower."),
    ("multi_modal_projector.", "model.multi_modal_projector."),
    ("language_model.", "model.language_model."),
)
_DROPPED = (re.compile(r"\.rotary_emb\.inv_freq$"), re.compile(r"embeddings\.position_ids$"))


def _is_dropped(key: str) -> bool:
    return any(p.search(key) for p in _DROPPED)


def _rename(key: str, table) -> str | None:
    for old, new in table:
        if key.startswith(old):
            return new + key[len(old):]
    return None


def _rename_all(state_dict: dict[str, torch.Tensor], table, dropped: list[str] | None
                ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``(renamed, unknown keys)``: every key through ``table``; recomputed buffers left out (named in ``dropped``)."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        if _is_dropped(key):
            if dropped is not None:
                dropped.append(key)
            continue
        new = _rename(key, table)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    return out, unknown


def _unknown(keys: list[str], what: str) -> ConversionError:
    shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
    return ConversionError(f"{what}: {shown}")


def original_to_hf(state_dict: dict[str, torch.Tensor], dropped: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Rename an original LLaVA-1.5/GeoChat state dict to the HF Llava (transformers 5.x) names.

    Recomputed buffers are dropped (their names appended to ``dropped`` when given); any other key this map does not
    know is an error that names it (e.g. a ``linear`` or ``mlp3x_gelu`` projector, which HF Llava cannot hold).
    """
    out, unknown = _rename_all(state_dict, _ORIGINAL_TO_HF, dropped)
    if unknown:
        projector = [k for k in unknown if k.startswith("model.mm_projector.")]
        if projector:
            raise _unknown(projector, "the checkpoint's projector is not mlp2x_gelu (HF Llava holds exactly "
                                      "Linear-GELU-Linear, keys model.mm_projector.0/.2); unsupported keys")
        raise _unknown(unknown, "keys that are not part of the original LLaVA-1.5/GeoChat layout")
    return out


def normalize_hf_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF Llava keys in any of transformers' spellings (5.x in memory, 5.x on disk, 4.x) -> 5.x in-memory names."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        current = key.startswith(("model.language_model.", "model.multi_modal_projector.", "lm_head.")) or (
            key.startswith("model.vision_tower.") and not key.startswith("model.vision_tower.vision_model."))
        new = key if current else (_rename(key, _HF_LEGACY) or key)
        if new in out:
            raise ConversionError(f"two keys map to {new}; the state dict mixes HF layouts")
        out[new] = value
    return out


def hf_to_original(state_dict: dict[str, torch.Tensor], include_vision_tower: bool = True,
                   dropped: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Rename an HF Llava state dict (any transformers spelling) to the original LLaVA-1.5/GeoChat names.

    ``include_vision_tower=False`` leaves the tower out (LLaVA reloads it from ``mm_vision_tower``).
    """
    state = normalize_hf_keys(state_dict)
    if not include_vision_tower:
        state = {k: v for k, v in state.items() if not k.startswith("model.vision_tower.")}
    out, unknown = _rename_all(state, _HF_TO_ORIGINAL, dropped)
    if unknown:
        raise _unknown(unknown, "keys that are not part of an HF Llava (mlp2x_gelu, CLIP, LLaMA) model")
    return out


# ----------------------------------------------------------------------------------------------------------------
# checkpoint files
# ----------------------------------------------------------------------------------------------------------------

def load_state_dict_dir(checkpoint_dir) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint directory's weight files (one file or the shards an index names), on CPU and
    checked first (:func:`rs_common.weights.read_weights`); a problem is a one-line ConversionError naming the file."""
    return read_weights(checkpoint_dir, ConversionError)


def read_config(checkpoint_dir) -> dict[str, Any]:
    path = Path(checkpoint_dir) / "config.json"
    if not path.exists():
        raise ConversionError(f"{checkpoint_dir} has no config.json")
    return read_json_object(path, ConversionError, "config object")


def checkpoint_layout(checkpoint_dir) -> str:
    """``"hf"`` (LlavaForConditionalGeneration dir) or ``"original"`` (LLaVA-1.5/GeoChat dir with mm_* fields)."""
    root = Path(checkpoint_dir)
    if root.is_file():
        raise ConversionError(f"{root} is a file; --llava-checkpoint takes a checkpoint directory (config.json + weights)")
    if not root.is_dir():
        raise ConversionError(f"checkpoint directory not found: {root}")
    cfg = read_config(root)
    if "text_config" in cfg or "vision_config" in cfg:
        return "hf"
    if any(k.startswith("mm_") for k in cfg) or cfg.get("model_type") in ("geochat", "llava_llama"):
        return "original"
    raise ConversionError(f"{root}/config.json is neither an HF Llava config (text_config/vision_config) nor an "
                          "original LLaVA/GeoChat config (mm_vision_tower, mm_hidden_size, ...)")


# fields of an original config that belong to LLaVA/GeoChat, not to the LlamaConfig of its language model
_NON_TEXT_FIELDS = ("architectures", "model_type", "transformers_version", "freeze_mm_mlp_adapter",
                    "tune_mm_mlp_adapter", "use_mm_proj", "image_aspect_ratio", "image_grid_pinpoints",
                    "tokenizer_model_max_length", "tokenizer_padding_side", "mm_patch_merge_type", "_name_or_path")


def original_text_config(cfg: dict[str, Any]):
    """The LlamaConfig of an original LLaVA/GeoChat config (its mm_* and training fields removed)."""
    from transformers import LlamaConfig

    data = {k: v for k, v in cfg.items() if not k.startswith("mm_") and k not in _NON_TEXT_FIELDS}
    if "torch_dtype" in data and "dtype" not in data:
        data["dtype"] = data.pop("torch_dtype")
    data.pop("torch_dtype", None)
    if data.get("rope_scaling", 0) is None:  # LLaVA-1.5 writes rope_scaling: null; transformers 5 warns on the key
        data.pop("rope_scaling")
    try:
        return LlamaConfig(**data)
    except (TypeError, ValueError) as exc:
        raise ConversionError(f"the checkpoint's config.json is not a LLaMA config: {exc}") from exc


def _select_feature(cfg: dict[str, Any]) -> str:
    feature = cfg.get("mm_vision_select_feature", "patch")
    if feature not in ("patch", "cls_patch"):
        raise ConversionError(f"mm_vision_select_feature {feature!r} is not supported (patch or cls_patch)")
    return VISION_FEATURE_SELECT_STRATEGY if feature == "patch" else "full"


def _dtype(name: str | None):
    if name in (None, "", "auto"):
        return None
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if name not in table:
        raise ConversionError(f"dtype {name!r}: use auto, float32, float16 or bfloat16")
    return table[name]


def _is_geochat(cfg: dict[str, Any]) -> bool:
    names = [str(cfg.get("model_type", "")), str(cfg.get("_name_or_path", ""))] + list(cfg.get("architectures") or [])
    return any("geochat" in n.lower() for n in names)


def _image_size(ckpt_tower: dict[str, torch.Tensor], cfg: dict[str, Any], image_size: int | None):
    """``(image size or None, where it came from)``: the flag, else the checkpoint tower's position grid, else 504 px
    for a GeoChat config, else None (the tower's own size)."""
    if image_size is not None:
        return image_size, "--image-size"
    pos = ckpt_tower.get("embeddings.position_embedding.weight")
    patch_w = ckpt_tower.get("embeddings.patch_embedding.weight")
    if pos is not None and patch_w is not None:
        return math.isqrt(pos.shape[0] - 1) * int(patch_w.shape[-1]), "the checkpoint's tower positions"
    if _is_geochat(cfg):
        return GEOCHAT_IMAGE_SIZE, "GeoChat's 504 px"
    return None, "the vision tower's own size (pass --image-size 504 for GeoChat)"


def _check_projector(state, cfg: dict[str, Any], tower, root: Path, vision_tower_dir) -> None:
    linear_1 = state.get("model.multi_modal_projector.linear_1.weight")
    if linear_1 is None:
        raise ConversionError(f"{root} holds no projector weights (model.mm_projector.0.weight)")
    if linear_1.shape[1] != tower.config.hidden_size:
        raise ConversionError(
            f"the checkpoint's projector takes {linear_1.shape[1]} inputs (mm_hidden_size {cfg.get('mm_hidden_size')}) "
            f"but the vision tower {vision_tower_dir} has hidden size {tower.config.hidden_size}; give the tower the "
            "checkpoint was trained with, then --swap-vision-tower DIR (--reinit-projector for another width)")


def _load_checkpoint_tower(tower, ckpt_tower: dict[str, torch.Tensor], root: Path, vision_tower_dir) -> None:
    """``--tower-from-checkpoint``: the checkpoint's own tower weights into ``tower``, keys and shapes checked."""
    if not ckpt_tower:
        raise ConversionError(f"--tower-from-checkpoint: {root} holds no vision tower weights "
                              "(model.vision_tower.vision_tower.vision_model.*)")
    own = tower.state_dict()
    bad = sorted(set(own) ^ set(ckpt_tower))
    if bad:
        raise ConversionError(f"the checkpoint's vision tower does not match {vision_tower_dir}'s config: "
                              f"keys {bad[:6]}")
    for k, v in ckpt_tower.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ConversionError(
                f"the checkpoint's vision tower {k} has shape {tuple(v.shape)} but the tower at "
                f"{tower.config.image_size} px needs {tuple(own[k].shape)} (position count = "
                f"(image_size / patch)^2 + 1); pass --image-size to match it")
    tower.load_state_dict(ckpt_tower, strict=True)


def _filled_model(config, state: dict[str, torch.Tensor]):
    """A LlavaForConditionalGeneration of ``config`` holding exactly ``state`` (keys and shapes checked)."""
    from transformers import LlavaForConditionalGeneration

    with parameters_on_meta():
        model = LlavaForConditionalGeneration(config)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ConversionError(f"the converted checkpoint does not fit the HF Llava model: missing {missing[:6]}, "
                              f"unexpected {unexpected[:6]}")
    for key, param in model.state_dict().items():
        if tuple(param.shape) != tuple(state[key].shape):
            raise ConversionError(f"{key}: checkpoint shape {tuple(state[key].shape)} vs config shape "
                                  f"{tuple(param.shape)} (config.json and weights disagree)")
    model.load_state_dict(state, strict=True, assign=True)
    if config.text_config.tie_word_embeddings:
        model.tie_weights()
    leftover = meta_tensors(model)
    if leftover:
        raise ConversionError(f"internal: tensors not filled by the checkpoint: {leftover[:5]}")
    return model


def _llava_state(state: dict[str, torch.Tensor], tower, text_config, dtype) -> dict[str, torch.Tensor]:
    """The HF state dict with the tower's weights, in one dtype; ``text_config`` follows the embedding's rows."""
    ref_dtype = dtype or state["model.language_model.embed_tokens.weight"].dtype
    for key, value in tower.state_dict().items():
        state["model.vision_tower." + key] = value
    state = {k: v.to(ref_dtype) if v.is_floating_point() else v for k, v in state.items()}
    vocab = state["model.language_model.embed_tokens.weight"].shape[0]
    if vocab != text_config.vocab_size:
        logger.warning("config vocab_size %d but embed_tokens has %d rows; using %d", text_config.vocab_size, vocab, vocab)
        text_config.vocab_size = vocab
    if "lm_head.weight" not in state and text_config.tie_word_embeddings:
        state["lm_head.weight"] = state["model.language_model.embed_tokens.weight"]
    return state


def load_original_geochat(checkpoint_dir, vision_tower_dir, *, image_size: int | None = None,
                          tower_from_checkpoint: bool = False, tokenizer=None, dtype: torch.dtype | None = None,
                          pad_to_multiple_of: int | None = None) -> tuple[GeoChat, dict[str, Any]]:
    """Load an original LLaVA-1.5/GeoChat checkpoint directory as an HF ``LlavaForConditionalGeneration``.

    The tower comes from ``vision_tower_dir`` (config, weights, image processor), as GeoChat itself does: it reloads
    ``mm_vision_tower`` and interpolates it, so a tower copy inside the checkpoint is not used unless
    ``tower_from_checkpoint``. ``image_size``: None = the checkpoint tower's position grid when the checkpoint has
    one, else 504 for a GeoChat config (``model_type`` geochat), else the tower's own size.
    Returns ``(chat, info)``: the :class:`~vlm_finetune.geochat.GeoChat` handle and what the conversion did.
    """
    root = Path(checkpoint_dir)
    cfg = read_config(root)
    projector_type = cfg.get("mm_projector_type", "mlp2x_gelu")
    if projector_type != "mlp2x_gelu":
        raise ConversionError(f"mm_projector_type {projector_type!r} is not supported: HF Llava's projector is "
                              "mlp2x_gelu (Linear, GELU, Linear)")
    dropped: list[str] = []
    state = original_to_hf(load_state_dict_dir(root), dropped)
    ckpt_tower = {k[len("model.vision_tower."):]: state.pop(k) for k in list(state) if k.startswith("model.vision_tower.")}
    image_size, source = _image_size(ckpt_tower, cfg, image_size)
    tower = load_vision_tower(vision_tower_dir, image_size=image_size)
    image_processor = load_image_processor(vision_tower_dir, tower.config.image_size)
    logger.info("image size %d px (%s): %d image tokens", tower.config.image_size, source,
                image_token_count(tower.config))
    _check_projector(state, cfg, tower, root, vision_tower_dir)
    if tower_from_checkpoint:
        _load_checkpoint_tower(tower, ckpt_tower, root, vision_tower_dir)
    elif ckpt_tower:
        logger.info("the checkpoint's own copy of the vision tower (%d tensors) is not used: the tower comes from %s, "
                    "as in GeoChat (pass --tower-from-checkpoint to use it)", len(ckpt_tower), vision_tower_dir)
    text_config = original_text_config(cfg)
    state = _llava_state(state, tower, text_config, dtype)
    config = build_llava_config(
        tower.config, text_config, image_token_index=text_config.vocab_size,
        vision_feature_layer=int(cfg.get("mm_vision_select_layer", -2)),
        vision_feature_select_strategy=_select_feature(cfg))
    model = _filled_model(config, state)
    if tokenizer is None and has_tokenizer_files(root):
        tokenizer = root
    if isinstance(tokenizer, (str, Path)):
        tokenizer = load_tokenizer(tokenizer)
    image_id = finish_tokens(model, tokenizer, pad_to_multiple_of=pad_to_multiple_of)
    model.eval()
    chat = GeoChat(model, make_processor(image_processor, tokenizer, tower.config) if tokenizer is not None else None,
                   image_processor=image_processor)
    info = {"dropped_keys": dropped, "image_size_from": source, "image_token_index": image_id,
            "checkpoint_tower_tensors": len(ckpt_tower), "tower_from_checkpoint": bool(tower_from_checkpoint)}
    return chat, info


def original_config(model, vision_tower_path: str | None, model_type: str = "geochat") -> dict[str, Any]:
    """An original LLaVA/GeoChat config.json for an HF Llava model: its LlamaConfig plus the mm_* fields."""
    cfg = model.config
    text = cfg.text_config.to_dict()
    for k in ("architectures", "model_type", "transformers_version", "_name_or_path", "dtype", "torch_dtype",
              "id2label", "label2id", "problem_type", "chunk_size_feed_forward", "return_dict", "is_encoder_decoder",
              "output_hidden_states", "output_attentions"):
        text.pop(k, None)
    rope = text.get("rope_parameters") or {}
    if "rope_theta" in rope:  # the LLaVA/GeoChat code (transformers 4.3x) reads rope_theta / rope_scaling
        text.setdefault("rope_theta", rope["rope_theta"])
        text.setdefault("rope_scaling", None if rope.get("rope_type", "default") == "default" else dict(rope))
    arch = "GeoChatLlamaForCausalLM" if model_type == "geochat" else "LlavaLlamaForCausalLM"
    layer = cfg.vision_feature_layer
    if not isinstance(layer, int):
        raise ConversionError(f"vision_feature_layer {layer} (several layers) has no original LLaVA equivalent")
    dtype = next(model.parameters()).dtype
    return {
        **text,
        "architectures": [arch],
        "model_type": model_type,
        "torch_dtype": str(dtype).replace("torch.", ""),
        "mm_vision_tower": vision_tower_path,
        "mm_hidden_size": cfg.vision_config.hidden_size,
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": layer,
        "mm_vision_select_feature": "patch" if cfg.vision_feature_select_strategy == "default" else "cls_patch",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "image_aspect_ratio": "pad",
        "use_mm_proj": True,
        "tune_mm_mlp_adapter": False,
        "freeze_mm_mlp_adapter": False,
    }


def save_original_geochat(chat: GeoChat, output_dir, *, model_type: str = "geochat",
                          include_vision_tower: bool = True, max_shard_size: str | int = "5GB") -> Path:
    """Write an HF Llava GeoChat (its :class:`~vlm_finetune.geochat.GeoChat` handle) in the original layout:
    config.json (LLaMA + mm_*), safetensors weights (sharded with an index past ``max_shard_size``), the tokenizer
    when known, and the tower as an HF CLIP vision dir in ``vision_tower/`` (keys with the ``vision_model.`` prefix older transformers expect; already at the model's
    image size, so GeoChat's 504 px interpolation is a no-op) that ``mm_vision_tower`` points at."""
    from huggingface_hub import save_torch_state_dict
    from safetensors.torch import save_file

    model = chat.model
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tower_dir = out / "vision_tower"
    tower = model.model.vision_tower
    tower.config.save_pretrained(str(tower_dir))
    save_file({"vision_model." + k: v.detach().contiguous() for k, v in tower.state_dict().items()},
              str(tower_dir / "model.safetensors"), metadata={"format": "pt"})
    if chat.image_processor is not None:
        chat.image_processor.save_pretrained(str(tower_dir))

    state = hf_to_original(model.state_dict(), include_vision_tower=include_vision_tower)
    seen: dict[int, str] = {}
    for key in list(state):  # tied lm_head/embed_tokens: original checkpoints store both, as separate tensors
        ptr = state[key].untyped_storage().data_ptr()
        if ptr in seen:
            state[key] = state[key].clone()
        seen.setdefault(ptr, key)
    state = {k: v.detach().contiguous() for k, v in state.items()}
    save_torch_state_dict(state, str(out), max_shard_size=max_shard_size, safe_serialization=True)
    (out / "config.json").write_text(json.dumps(original_config(model, str(tower_dir.resolve()), model_type), indent=2))
    if chat.tokenizer is not None:
        chat.tokenizer.save_pretrained(str(out))
    return out


# ----------------------------------------------------------------------------------------------------------------
# the convert_geochat tool
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ConvertGeoChatConfig:
    llava_checkpoint: str | None = field(default=None, metadata={
        "help": "input: an original LLaVA-1.5/GeoChat checkpoint dir (config.json with mm_* fields + weights) or an "
                "HF Llava dir (this tool's output)"})
    vision_tower: str | None = field(default=None, metadata={
        "help": "HF CLIP vision dir the original checkpoint was trained with (its mm_vision_tower); required for an "
                "original-layout input"})
    output: str | None = field(default=None, metadata={"help": "output directory (must be empty or new)"})
    swap_vision_tower: str | None = field(default=None, metadata={
        "help": "HF CLIP vision dir to put in place of the tower (swapping the vision tower in GeoChat fine-tuning)"})
    reinit_projector: bool = field(default=False, metadata={
        "help": "with --swap-vision-tower: re-initialise the projector (needed when the new tower's width differs)"})
    to_original: bool = field(default=False, metadata={
        "help": "write the original LLaVA/GeoChat layout instead of the HF Llava layout"})
    image_size: int | None = field(default=None, metadata={
        "help": "image size in px (position grid interpolated); default: the checkpoint tower's grid, 504 for a "
                "GeoChat config (model_type/architectures/name say geochat), else the tower's own; a swap keeps the "
                "model's size"})
    tower_from_checkpoint: bool = field(default=False, metadata={
        "help": "use the vision tower weights stored in the original checkpoint instead of --vision-tower's"})
    tokenizer: str | None = field(default=None, metadata={
        "help": "tokenizer dir; default: the checkpoint dir's tokenizer files when present"})
    dtype: str = field(default="auto", metadata={"help": "auto (the checkpoint's), float32, float16 or bfloat16"})
    pad_to_multiple_of: int | None = field(default=None, metadata={
        "help": "pad the vocabulary to a multiple of this after adding <image> (llava-hf uses 64)"})
    original_model_type: str = field(default="geochat", metadata={
        "help": "model_type written with --to-original: geochat (GeoChatLlamaForCausalLM) or llava"})
    max_shard_size: str = field(default="5GB", metadata={"help": "largest weight file written"})
    seed: int = field(default=0, metadata={"help": "random seed of --reinit-projector"})

    def validate(self) -> None:
        if not self.llava_checkpoint:
            raise ConfigError("llava_checkpoint is required (--llava-checkpoint DIR)")
        if not self.output:
            raise ConfigError("output is required (--output DIR)")
        if self.reinit_projector and not self.swap_vision_tower:
            raise ConfigError("--reinit-projector only applies with --swap-vision-tower DIR")
        if self.image_size is not None and self.image_size < 1:
            raise ConfigError(f"image_size must be >= 1, got {self.image_size}")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ConfigError(f"pad_to_multiple_of must be >= 1, got {self.pad_to_multiple_of}")
        if self.dtype not in ("auto", "float32", "fp32", "float16", "fp16", "bfloat16", "bf16"):
            raise ConfigError(f"dtype {self.dtype!r}: use auto, float32, float16 or bfloat16")
        if self.original_model_type not in ("geochat", "llava", "llava_llama"):
            raise ConfigError(f"original_model_type {self.original_model_type!r}: use geochat, llava or llava_llama")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        size = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*[KMGT]B\s*", self.max_shard_size, flags=re.IGNORECASE)
        if size is None or float(size.group(1)) <= 0:  # huggingface_hub's parse_size_to_int takes exactly these
            raise ConfigError(f"max_shard_size {self.max_shard_size!r}: a positive size in KB, MB, GB or TB, e.g. 5GB")


def _check_inputs(cfg: ConvertGeoChatConfig) -> None:
    """The folders the conversion will read, checked before the (large) checkpoint is loaded: a typo in
    --swap-vision-tower or --tokenizer should not cost a full load first."""
    for flag, path in (("--vision-tower", cfg.vision_tower), ("--swap-vision-tower", cfg.swap_vision_tower)):
        if path:
            check_model_dir(path, f"{flag} (HF CLIP vision directory)")
    if cfg.tokenizer:
        check_dir(cfg.tokenizer, "--tokenizer directory")


def convert_geochat(cfg: ConvertGeoChatConfig) -> dict[str, Any]:
    """Read ``cfg.llava_checkpoint`` (original or HF layout), optionally swap the tower, write ``cfg.output`` in the
    HF Llava layout (or the original one with ``to_original``); returns a summary dict (also ``conversion.json``)."""
    cfg.validate()
    src, out = Path(cfg.llava_checkpoint), Path(cfg.output)
    layout = checkpoint_layout(src)
    if out.exists() and not out.is_dir():
        raise ConversionError(f"output {out} exists and is a file (expected a new or empty folder)")
    if out.is_dir() and any(out.iterdir()):
        raise ConversionError(f"output {out} exists and is not empty")
    if out.resolve() == src.resolve():
        raise ConversionError("output must differ from the input checkpoint")
    _check_inputs(cfg)
    dtype = _dtype(cfg.dtype)
    info: dict[str, Any] = {}
    if layout == "original":
        if not cfg.vision_tower:
            raise ConversionError("an original-layout checkpoint needs --vision-tower DIR (the HF CLIP vision tower "
                                  "it was trained with; GeoChat reloads it from mm_vision_tower too)")
        chat, info = load_original_geochat(
            src, cfg.vision_tower, image_size=cfg.image_size, tower_from_checkpoint=cfg.tower_from_checkpoint,
            tokenizer=cfg.tokenizer, dtype=dtype, pad_to_multiple_of=cfg.pad_to_multiple_of)
    else:
        if cfg.vision_tower:
            raise ConversionError(f"{src} is already an HF Llava checkpoint: --vision-tower only applies to an original "
                                  "checkpoint; use --swap-vision-tower DIR to replace its tower")
        if cfg.tower_from_checkpoint:
            raise ConversionError("--tower-from-checkpoint only applies to an original-layout checkpoint")
        chat = load_geochat(src, dtype=dtype)
        if cfg.tokenizer:
            if chat.image_processor is None:
                raise ConversionError(f"{src} has no image processor (preprocessor_config.json) to pair with --tokenizer")
            chat.set_tokenizer(load_tokenizer(cfg.tokenizer), pad_to_multiple_of=cfg.pad_to_multiple_of)
        if cfg.image_size is not None and cfg.image_size != chat.model.config.vision_config.image_size \
                and not cfg.swap_vision_tower:
            raise ConversionError("--image-size on an HF checkpoint needs --swap-vision-tower (the tower is reloaded "
                                  "at the new size)")
    if cfg.swap_vision_tower:
        chat.swap_vision_tower(cfg.swap_vision_tower, reinit_projector=cfg.reinit_projector,
                               image_size=cfg.image_size, seed=cfg.seed)
    if cfg.to_original:
        save_original_geochat(chat, out, model_type=cfg.original_model_type, max_shard_size=cfg.max_shard_size)
    else:
        chat.save(out, max_shard_size=cfg.max_shard_size)
    model = chat.model
    vc, tc = model.config.vision_config, model.config.text_config
    summary = {
        "input": str(src), "input_layout": layout, "output": str(out),
        "output_layout": "original" if cfg.to_original else "hf",
        "image_size": int(vc.image_size), "patch_size": int(vc.patch_size), "image_tokens": image_token_count(vc),
        "vision_hidden_size": int(vc.hidden_size), "text_hidden_size": int(tc.hidden_size),
        "vocab_size": int(model.get_input_embeddings().weight.shape[0]),
        "image_token_index": int(model.config.image_token_index),
        "processor": type(chat.main_processor).__name__ if chat.main_processor is not None else None,
        "swapped_vision_tower": cfg.swap_vision_tower, "projector_reinitialised": bool(cfg.reinit_projector),
        "dropped_keys": len(info.get("dropped_keys", [])),
    }
    (out / "conversion.json").write_text(json.dumps(summary, indent=2))
    return summary
