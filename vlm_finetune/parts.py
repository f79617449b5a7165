"""The parts of GeoChat (:mod:`vlm_finetune.geochat` assembles them): the CLIP vision tower and its image processor,
the mlp2x_gelu projector, the tokenizer with ``<image>`` and the LlavaProcessor, cheap folder checks, one-line errors.

The vision tower is any Hugging Face CLIP vision directory (``config.json`` + weights +
``preprocessor_config.json``), e.g. the RS CLIP tower that ``vlm_finetune.export`` writes. Its position grid
is resized like GeoChat's ``clip_interpolate_embeddings``: the CLS row kept, the grid bicubic-interpolated with
``align_corners=True``; sizes follow :func:`vlm_finetune.interpolate.resolve_image_size`.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from rs_common.errors import first_line
from rs_common.formats.conversation import IMAGE_TOKEN
from rs_common.weights import check_weight_folder, read_json, read_json_object, read_weight_file
from vlm_finetune.interpolate import interpolate_pos_embed, resolve_image_size

logger = logging.getLogger(__name__)

GEOCHAT_IMAGE_SIZE = 504  # GeoChat interpolates its 336 px ViT-L/14 to 504 px: 36 x 36 = 1296 image tokens
VISION_FEATURE_LAYER = -2
VISION_FEATURE_SELECT_STRATEGY = "default"  # drop CLS, like GeoChat's mm_vision_select_feature="patch"
PROJECTOR_ACT = "gelu"  # mlp2x_gelu uses nn.GELU(), the exact (erf) GELU, which is ACT2FN["gelu"]
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")


class GeoChatError(ValueError):
    """A GeoChat assembly / conversion problem the user can fix (bad path, size mismatch, ...)."""


# ----------------------------------------------------------------------------------------------------------------
# vision tower
# ----------------------------------------------------------------------------------------------------------------


def image_token_count(config_or_model) -> int:
    """Image tokens per image for a CLIP vision config (or a Llava model/config): ``(image_size // patch) ** 2``."""
    cfg = getattr(config_or_model, "config", config_or_model)
    cfg = getattr(cfg, "vision_config", cfg)
    return (int(cfg.image_size) // int(cfg.patch_size)) ** 2


def interpolate_position_embeddings(weight: torch.Tensor, grid: int) -> torch.Tensor:
    """Resize CLIP position embeddings ``(1 + g*g, D)`` to ``(1 + grid*grid, D)`` with GeoChat's rule (CLS row
    kept, grid bicubic with ``align_corners=True``): :func:`vlm_finetune.interpolate.interpolate_pos_embed`."""
    if weight.ndim != 2:
        raise GeoChatError(f"position embeddings must be 2-D (positions, width), got shape {tuple(weight.shape)}")
    try:
        return interpolate_pos_embed(weight, grid, mode="bicubic", align_corners=True)
    except ValueError as exc:
        raise GeoChatError(str(exc)) from None


def check_dir(path, what: str) -> Path:
    p = Path(path)
    if p.is_file():
        raise GeoChatError(f"{what} {p} is a file (expected a directory)")
    if not p.is_dir():
        raise GeoChatError(f"{what} not found: {p} (expected a directory)")
    return p


def check_model_dir(path, what: str) -> Path:
    """A transformers model folder checked cheaply before anything is loaded: a ``config.json`` holding a json
    object, and weight files that are present, not empty and not truncated (headers only; see
    :mod:`rs_common.weights`). Problems are one-line GeoChatErrors naming the file."""
    p = check_dir(path, what)
    if not (p / "config.json").is_file():
        raise GeoChatError(f"{p} has no config.json: not a transformers model folder ({what})")
    read_json_object(p / "config.json", GeoChatError, "config object")
    check_weight_folder(p, GeoChatError)
    return p


def loading_error(what: str, path, exc: BaseException) -> GeoChatError:
    """A loader's (often multi-line) exception as one GeoChatError line naming the folder."""
    return GeoChatError(f"cannot load {what} from {path}: {first_line(exc)}")


def resize_vision_tower(tower, image_size: int):
    """A CLIPVisionModel like ``tower`` for ``image_size`` px, position embeddings interpolated (same object if
    the size already matches)."""
    from transformers import CLIPVisionModel

    cfg = tower.config
    patch = int(cfg.patch_size)
    try:
        image_size = resolve_image_size(image_size, int(cfg.image_size), patch)
    except ValueError as exc:
        raise GeoChatError(str(exc)) from None
    if image_size == int(cfg.image_size):
        return tower
    grid = image_size // patch
    new_cfg = cfg.__class__.from_dict(cfg.to_dict())
    new_cfg.image_size = image_size
    state = tower.state_dict()
    key = "embeddings.position_embedding.weight"
    state[key] = interpolate_position_embeddings(state[key], grid)
    with parameters_on_meta():
        new = CLIPVisionModel(new_cfg)
    new.load_state_dict(state, strict=True, assign=True)
    ref = next(tower.parameters())
    new.to(device=ref.device, dtype=ref.dtype)
    new.requires_grad_(any(p.requires_grad for p in tower.parameters()))
    new.train(tower.training)
    logger.info("vision tower resized from %d px (%d positions) to %d px (%d positions)",
                cfg.image_size, (int(cfg.image_size) // patch) ** 2 + 1, image_size, grid * grid + 1)
    return new


def load_vision_tower(vision_dir, image_size: int | None = None, dtype: torch.dtype | None = None):
    """``CLIPVisionModel.from_pretrained(vision_dir)`` resized to ``image_size`` px (None = the tower's own).

    A tower this toolkit exported is a ``CLIPVisionModelWithProjection`` folder: it is loaded as what it is and its
    ``vision_model`` taken, so transformers has no reason to print a load report about the one weight a plain
    CLIPVisionModel does not use (``visual_projection.weight``) on every load."""
    from transformers import CLIPVisionModel, CLIPVisionModelWithProjection

    vision_dir = check_model_dir(vision_dir, "vision tower directory")
    with_projection = "CLIPVisionModelWithProjection" in (read_json_object(vision_dir / "config.json", GeoChatError)
                                                          .get("architectures") or [])
    try:
        if with_projection:
            full = CLIPVisionModelWithProjection.from_pretrained(str(vision_dir))
            with parameters_on_meta():
                tower = CLIPVisionModel(full.config)
            tower.load_state_dict(full.vision_model.state_dict(), strict=True, assign=True)
        else:
            tower = CLIPVisionModel.from_pretrained(str(vision_dir))
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for a bad folder
        raise loading_error("a CLIP vision tower", vision_dir, exc) from None
    if image_size is not None:
        tower = resize_vision_tower(tower, image_size)
    if dtype is not None:
        tower = tower.to(dtype)
    return tower


def sized_image_processor(image_processor, image_size: int):
    """A copy of a CLIPImageProcessor that resizes the short side to ``image_size`` and centre-crops a square
    (GeoChat passes ``size={'shortest_edge': 504}, crop_size={'height': 504, 'width': 504}``)."""
    data = image_processor.to_dict()
    data.pop("image_processor_type", None)
    data.pop("processor_class", None)
    data.update(size={"shortest_edge": int(image_size)}, crop_size={"height": int(image_size), "width": int(image_size)},
                do_resize=True, do_center_crop=True)
    return type(image_processor).from_dict(data)


def load_image_processor(vision_dir, image_size: int | None = None):
    """The tower's CLIPImageProcessor (``preprocessor_config.json``), sized to ``image_size`` when given."""
    from transformers import CLIPImageProcessor

    vision_dir = check_dir(vision_dir, "vision tower directory")
    if not (vision_dir / "preprocessor_config.json").exists():
        raise GeoChatError(f"{vision_dir} has no preprocessor_config.json (the tower's CLIPImageProcessor); "
                           "save one beside the tower with CLIPImageProcessor(...).save_pretrained(dir)")
    read_json_object(vision_dir / "preprocessor_config.json", GeoChatError, "image processor config")
    try:
        processor = CLIPImageProcessor.from_pretrained(str(vision_dir))
    except Exception as exc:  # noqa: BLE001
        raise loading_error("a CLIPImageProcessor", vision_dir, exc) from None
    return sized_image_processor(processor, image_size) if image_size is not None else processor


# ----------------------------------------------------------------------------------------------------------------
# projector
# ----------------------------------------------------------------------------------------------------------------


def feature_layers(config) -> int:
    layer = config.vision_feature_layer
    return 1 if isinstance(layer, int) else len(layer)


def init_projector_(projector: nn.Module, std: float = 0.02) -> nn.Module:
    """Re-initialise a Llava projector in place: normal(0, std) weights, zero biases (transformers' rule)."""
    with torch.no_grad():
        for module in projector.modules():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, std)
                if module.bias is not None:
                    module.bias.zero_()
    return projector


def new_projector(config, like: nn.Module | None = None) -> nn.Module:
    """A freshly initialised ``LlavaMultiModalProjector`` for ``config`` on ``like``'s device/dtype."""
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    projector = init_projector_(LlavaMultiModalProjector(config), getattr(config.text_config, "initializer_range", 0.02))
    if like is not None:
        ref = next(like.parameters())
        projector.to(device=ref.device, dtype=ref.dtype)
    return projector


def replace_projector(model, seed: int | None = None) -> nn.Module:
    """Put a freshly initialised projector (sized for ``model.config`` as it is now) in place of the model's, keeping
    the old one's trainability and mode; ``seed`` makes the initialisation reproducible. Returns the new projector."""
    projector = model.model.multi_modal_projector
    if seed is not None:
        torch.manual_seed(seed)
    new = new_projector(model.config, like=projector)
    new.requires_grad_(any(p.requires_grad for p in projector.parameters()))
    new.train(projector.training)
    model.model.multi_modal_projector = new
    return new


def projector_state_dict(weights) -> dict[str, torch.Tensor]:
    """Projector weights keyed ``linear_1.*`` / ``linear_2.*`` from any of: LLaVA's ``mm_projector.bin``
    (``model.mm_projector.0.weight``...), an HF Llava state dict (``...multi_modal_projector.linear_1.weight``) or
    a bare one; ``weights`` is such a dict or a ``.bin``/``.pt``/``.safetensors`` file."""
    if isinstance(weights, (str, Path)):
        path = Path(weights)
        if not path.is_file():
            raise GeoChatError(f"projector weights not found: {path}")
        weights = read_weight_file(path, GeoChatError)
    out: dict[str, torch.Tensor] = {}
    for key, value in weights.items():
        m = re.match(r"^(?:.*?(?:mm_projector|multi_modal_projector)\.)?(0|2|linear_1|linear_2)\.(weight|bias)$", key)
        if m is None:
            if "mm_projector" in key or "multi_modal_projector" in key:
                raise GeoChatError(f"projector key {key!r} is not part of an mlp2x_gelu projector "
                                   "(expected mm_projector.0/.2 or multi_modal_projector.linear_1/linear_2)")
            continue  # other weights saved beside the projector (e.g. embed_tokens in mm_projector.bin)
        name = {"0": "linear_1", "2": "linear_2"}.get(m.group(1), m.group(1))
        out[f"{name}.{m.group(2)}"] = value
    if not out:
        raise GeoChatError("no projector weights found (keys like model.mm_projector.0.weight or linear_1.weight)")
    return out


def load_projector_weights(model, weights) -> None:
    """Load mlp2x_gelu projector weights into ``model.model.multi_modal_projector`` with a clear shape check."""
    projector = model.model.multi_modal_projector
    state = projector_state_dict(weights)
    own = projector.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise GeoChatError(f"projector weights lack {missing}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise GeoChatError(f"projector weight {key} has shape {tuple(value.shape)} but this model needs "
                               f"{tuple(own[key].shape)} (vision width {model.config.vision_config.hidden_size}, "
                               f"text width {model.config.text_config.hidden_size})")
    projector.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


# ----------------------------------------------------------------------------------------------------------------
# tokenizer / processor
# ----------------------------------------------------------------------------------------------------------------


def has_tokenizer_files(path) -> bool:
    p = Path(path)
    return p.is_dir() and any((p / f).exists() for f in _TOKENIZER_FILES)


def load_tokenizer(path):
    from transformers import AutoTokenizer

    p = check_dir(path, "tokenizer directory")
    for name in ("tokenizer_config.json", "tokenizer.json", "special_tokens_map.json"):
        if (p / name).is_file():
            read_json(p / name, GeoChatError)
    try:
        with warnings.catch_warnings():  # AutoTokenizer also parses an original LLaVA config.json (rope_scaling: null)
            warnings.filterwarnings("ignore", message=".*rope_scaling.*", category=FutureWarning)
            return AutoTokenizer.from_pretrained(str(p))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception for a malformed tokenizer.json
        raise loading_error("a tokenizer", p, exc) from None


def prepare_tokenizer(tokenizer, image_token: str = IMAGE_TOKEN) -> int:
    """Make sure ``tokenizer`` knows ``image_token`` as one special, un-normalised token (added when missing) and
    has a pad token (LLaVA's rule: unk, else eos); returns the image token id."""
    from tokenizers import AddedToken

    if image_token not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(image_token, special=True, normalized=False)], special_tokens=True)
        logger.info("added %s to the tokenizer as id %d", image_token, tokenizer.convert_tokens_to_ids(image_token))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    ids = tokenizer.encode(image_token, add_special_tokens=False)
    if len(ids) != 1:
        raise GeoChatError(f"the tokenizer splits {image_token!r} into {len(ids)} tokens {ids}; it must be one token")
    return int(ids[0])


def make_processor(image_processor, tokenizer, vision_config, image_token: str = IMAGE_TOKEN, chat_template=None):
    """A LlavaProcessor that expands each ``<image>`` in a prompt to one token per image feature.

    transformers' LlavaProcessor counts ``(H // patch_size) * (W // patch_size) + num_additional_image_tokens``
    tokens from the processed pixel values and removes one for ``vision_feature_select_strategy="default"`` (the
    CLS feature the model drops). CLIP has one CLS token, so ``num_additional_image_tokens=1`` gives exactly
    ``(image_size // patch) ** 2`` (1296 at 504/14); leaving it at its default 0 would give one token too few.
    """
    from transformers import LlavaProcessor

    cfg = getattr(vision_config, "vision_config", vision_config)
    crop = getattr(image_processor, "crop_size", None)
    crop_h = None if crop is None else (crop.get("height") if isinstance(crop, Mapping) else crop.height)
    if crop_h != cfg.image_size or not getattr(image_processor, "do_center_crop", True):
        image_processor = sized_image_processor(image_processor, cfg.image_size)
    prepare_tokenizer(tokenizer, image_token)
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=int(cfg.patch_size),
        vision_feature_select_strategy=VISION_FEATURE_SELECT_STRATEGY,
        num_additional_image_tokens=1,
        image_token=image_token,
        chat_template=chat_template,
    )


def update_processor(processor, vision_config, image_processor=None) -> None:
    """Point a LlavaProcessor at a new tower in place: patch size, image size and, when given, the new tower's
    own image processor (its normalisation)."""
    cfg = getattr(vision_config, "vision_config", vision_config)
    source = image_processor if image_processor is not None else processor.image_processor
    processor.image_processor = sized_image_processor(source, cfg.image_size)
    processor.patch_size = int(cfg.patch_size)
    processor.num_additional_image_tokens = 1
    processor.vision_feature_select_strategy = VISION_FEATURE_SELECT_STRATEGY


def parameters_on_meta():
    """A context that builds modules with their parameters on the meta device (no memory, no init cost) but real
    buffers, so a later ``load_state_dict(..., assign=True)`` or module replacement fills them (rotary ``inv_freq``
    and CLIP ``position_ids`` are non-persistent buffers and must stay real): accelerate's ``init_empty_weights``."""
    from accelerate import init_empty_weights

    return init_empty_weights(include_buffers=False)


def meta_tensors(model) -> list[str]:
    """Names of the parameters and buffers still on the meta device (none, once a model is filled)."""
    return [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.device.type == "meta"]

