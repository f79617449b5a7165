"""GeoChat assembled on transformers' ``LlavaForConditionalGeneration`` (stage two's model).

GeoChat is LLaVA-1.5 with the CLIP position grid interpolated to 504 px: a CLIP vision tower whose
``hidden_states[-2]`` without CLS (``vision_feature_layer=-2``, ``vision_feature_select_strategy="default"``)
go through an ``mlp2x_gelu`` projector (``linear_1`` vision width -> text width, GELU, ``linear_2``) into a
LLaMA/Vicuna language model. Unlike the original code (one ``-200`` placeholder per image), HF Llava needs one
``<image>`` token in the prompt per image feature: ``(image_size // patch_size) ** 2`` tokens, 1296 at 504/14.

    model, processor = assemble_geochat("runs/x/hf_vision_tower", "vicuna-7b-v1.5", image_size=504)
    swap_vision_tower(model, "runs/y/hf_vision_tower", processor=processor)            # same width
    swap_vision_tower(model, "runs/z/hf_vision_tower", reinit_projector=True)          # other width

The vision tower is any Hugging Face CLIP vision directory (``config.json`` + weights +
``preprocessor_config.json``), e.g. the RS CLIP tower that ``vlm_finetune.export`` writes. Its position grid
is resized like GeoChat's ``clip_interpolate_embeddings``: the CLS row kept, the grid bicubic-interpolated with
``align_corners=True``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlm_finetune.interpolate import interpolate_pos_embed
from vlm_finetune.weights import check_weight_folder, first_line, read_json, read_json_object, read_weight_file

logger = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
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


def _check_dir(path, what: str) -> Path:
    p = Path(path)
    if p.is_file():
        raise GeoChatError(f"{what} {p} is a file (expected a directory)")
    if not p.is_dir():
        raise GeoChatError(f"{what} not found: {p} (expected a directory)")
    return p


def check_model_dir(path, what: str) -> Path:
    """A transformers model folder checked cheaply before anything is loaded: a ``config.json`` holding a json
    object, and weight files that are present, not empty and not truncated (headers only; see
    :mod:`vlm_finetune.weights`). Problems are one-line GeoChatErrors naming the file."""
    p = _check_dir(path, what)
    if not (p / "config.json").is_file():
        raise GeoChatError(f"{p} has no config.json: not a transformers model folder ({what})")
    read_json_object(p / "config.json", GeoChatError, "config object")
    check_weight_folder(p, GeoChatError)
    return p


def _loading_error(what: str, path, exc: BaseException) -> GeoChatError:
    """A loader's (often multi-line) exception as one GeoChatError line naming the folder."""
    return GeoChatError(f"cannot load {what} from {path}: {first_line(exc)}")


def resize_vision_tower(tower, image_size: int):
    """A CLIPVisionModel like ``tower`` for ``image_size`` px, position embeddings interpolated (same object if
    the size already matches)."""
    from transformers import CLIPVisionModel

    cfg = tower.config
    image_size = int(image_size)
    if image_size == int(cfg.image_size):
        return tower
    patch = int(cfg.patch_size)
    if image_size < patch:
        raise GeoChatError(f"image size {image_size} is smaller than the tower's patch size {patch}")
    if image_size % patch:
        logger.warning("image size %d is not a multiple of the patch size %d: the last %d px of each side are unused",
                       image_size, patch, image_size % patch)
    grid = image_size // patch
    new_cfg = cfg.__class__.from_dict(cfg.to_dict())
    new_cfg.image_size = image_size
    state = tower.state_dict()
    key = "embeddings.position_embedding.weight"
    state[key] = interpolate_position_embeddings(state[key], grid)
    with _parameters_on_meta():
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
            with _parameters_on_meta():
                tower = CLIPVisionModel(full.config)
            tower.load_state_dict(full.vision_model.state_dict(), strict=True, assign=True)
        else:
            tower = CLIPVisionModel.from_pretrained(str(vision_dir))
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for a bad folder
        raise _loading_error("a CLIP vision tower", vision_dir, exc) from None
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

    vision_dir = _check_dir(vision_dir, "vision tower directory")
    if not (vision_dir / "preprocessor_config.json").exists():
        raise GeoChatError(f"{vision_dir} has no preprocessor_config.json (the tower's CLIPImageProcessor); "
                           "save one beside the tower with CLIPImageProcessor(...).save_pretrained(dir)")
    read_json_object(vision_dir / "preprocessor_config.json", GeoChatError, "image processor config")
    try:
        processor = CLIPImageProcessor.from_pretrained(str(vision_dir))
    except Exception as exc:  # noqa: BLE001
        raise _loading_error("a CLIPImageProcessor", vision_dir, exc) from None
    return sized_image_processor(processor, image_size) if image_size is not None else processor


# ----------------------------------------------------------------------------------------------------------------
# projector
# ----------------------------------------------------------------------------------------------------------------


def _feature_layers(config) -> int:
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

    p = _check_dir(path, "tokenizer directory")
    for name in ("tokenizer_config.json", "tokenizer.json", "special_tokens_map.json"):
        if (p / name).is_file():
            read_json(p / name, GeoChatError)
    try:
        with warnings.catch_warnings():  # AutoTokenizer also parses an original LLaVA config.json (rope_scaling: null)
            warnings.filterwarnings("ignore", message=".*rope_scaling.*", category=FutureWarning)
            return AutoTokenizer.from_pretrained(str(p))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception for a malformed tokenizer.json
        raise _loading_error("a tokenizer", p, exc) from None


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


# ----------------------------------------------------------------------------------------------------------------
# assembly
# ----------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _parameters_on_meta():
    """Build modules with their parameters on the meta device (no memory, no init cost) but real buffers, so a
    later ``load_state_dict(..., assign=True)`` or module replacement fills them (rotary ``inv_freq`` and CLIP
    ``position_ids`` are non-persistent buffers and must stay real)."""
    original = nn.Module.register_parameter

    def register(module, name, param):
        original(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = original


def _meta_tensors(model) -> list[str]:
    return [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.device.type == "meta"]


def build_llava_config(vision_config, text_config, image_token_index: int, vision_feature_layer=VISION_FEATURE_LAYER,
                       vision_feature_select_strategy: str = VISION_FEATURE_SELECT_STRATEGY):
    from transformers import LlavaConfig

    return LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=int(image_token_index),
        image_seq_length=image_token_count(vision_config),
        projector_hidden_act=PROJECTOR_ACT,
        vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy=vision_feature_select_strategy,
        multimodal_projector_bias=True,
        tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)),
    )


def _load_llm(llm, dtype):
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedConfig, PreTrainedModel

    if isinstance(llm, PreTrainedModel):
        return llm.to(dtype) if dtype is not None else llm
    if isinstance(llm, Mapping):
        llm = LlamaConfig(**llm)
    if isinstance(llm, PreTrainedConfig):
        model = AutoModelForCausalLM.from_config(llm)
        return model.to(dtype) if dtype is not None else model
    path = check_model_dir(llm, "language model directory")
    try:
        return AutoModelForCausalLM.from_pretrained(str(path), **({"dtype": dtype} if dtype is not None else {}))
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for a bad folder
        raise _loading_error("a causal language model (LlamaForCausalLM)", path, exc) from None


def finish_tokens(model, tokenizer=None, image_token_index: int | None = None, pad_to_multiple_of: int | None = None,
                  image_token: str = IMAGE_TOKEN) -> int:
    """Set ``model.config.image_token_index`` and grow the embeddings so the image token has a row.

    With a tokenizer the id is the tokenizer's ``<image>`` (added when missing); without one it is
    ``image_token_index`` or, by default, the first id past the vocabulary (one row is appended).
    """
    vocab = model.get_input_embeddings().weight.shape[0]
    if tokenizer is not None:
        image_id = prepare_tokenizer(tokenizer, image_token)
        needed = max(len(tokenizer), image_id + 1)
    else:
        image_id = vocab if image_token_index is None else int(image_token_index)
        needed = image_id + 1
    if needed > vocab or (pad_to_multiple_of and vocab % pad_to_multiple_of):
        model.resize_token_embeddings(max(needed, vocab), pad_to_multiple_of=pad_to_multiple_of, mean_resizing=True)
        logger.info("token embeddings resized from %d to %d rows", vocab, model.get_input_embeddings().weight.shape[0])
    model.config.image_token_index = image_id
    if tokenizer is not None and getattr(model, "generation_config", None) is not None:
        gen = model.generation_config
        if gen.pad_token_id is None and tokenizer.pad_token_id is not None:
            gen.pad_token_id = tokenizer.pad_token_id
        if gen.eos_token_id is None and tokenizer.eos_token_id is not None:
            gen.eos_token_id = tokenizer.eos_token_id
        if gen.bos_token_id is None and tokenizer.bos_token_id is not None:
            gen.bos_token_id = tokenizer.bos_token_id
    return image_id


def assemble_geochat(vision_dir, llm_dir_or_config, projector=None, *, tokenizer=None, image_size: int | None = None,
                     dtype: torch.dtype | None = None, image_token_index: int | None = None,
                     pad_to_multiple_of: int | None = None, chat_template: str | None = None):
    """Build GeoChat as a ``LlavaForConditionalGeneration``; returns ``(model, processor)``.

    ``vision_dir``: a Hugging Face CLIP vision directory (weights + ``preprocessor_config.json``).
    ``llm_dir_or_config``: a LlamaForCausalLM directory, a ``LlamaConfig``/config dict (random init) or a model.
    ``projector``: mlp2x_gelu weights (LLaVA's ``mm_projector.bin``, a dict or a file); None = fresh init.
    ``tokenizer``: a tokenizer or its directory; None = the LLM directory's tokenizer when it has one.
    ``image_size``: resize the tower's position grid to this many px (GeoChat: 504); None keeps the tower's.

    ``processor`` is a LlavaProcessor (image processor at ``image_size`` + the tokenizer with ``<image>``) when a
    tokenizer is known, else the sized CLIPImageProcessor alone (image ids then come from the config).
    """
    from transformers import LlavaForConditionalGeneration

    tower = load_vision_tower(vision_dir, image_size=image_size)
    image_processor = load_image_processor(vision_dir, tower.config.image_size)
    language = _load_llm(llm_dir_or_config, dtype)
    if tokenizer is None and isinstance(llm_dir_or_config, (str, Path)) and has_tokenizer_files(llm_dir_or_config):
        tokenizer = llm_dir_or_config
    if isinstance(tokenizer, (str, Path)):
        tokenizer = load_tokenizer(tokenizer)
    ref_dtype = next(language.parameters()).dtype
    device = next(language.parameters()).device
    tower.to(device=device, dtype=ref_dtype)

    text_config = language.config
    config = build_llava_config(tower.config, text_config, image_token_index=text_config.vocab_size)
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model.model.vision_tower = tower
    model.model.language_model = language.get_decoder() if hasattr(language, "get_decoder") else language.model
    model.lm_head = language.get_output_embeddings()
    model.model.multi_modal_projector = new_projector(config, like=language)
    model.config.vision_config = tower.config
    model.config.text_config = language.config
    if getattr(language, "generation_config", None) is not None:
        model.generation_config = language.generation_config
    leftover = _meta_tensors(model)
    if leftover:
        raise GeoChatError(f"internal: tensors left on the meta device after assembly: {leftover[:5]}")
    if projector is not None:
        load_projector_weights(model, projector)
    finish_tokens(model, tokenizer, image_token_index=image_token_index, pad_to_multiple_of=pad_to_multiple_of)
    model.eval()
    if tokenizer is None:
        return model, image_processor
    return model, make_processor(image_processor, tokenizer, tower.config, chat_template=chat_template)


def swap_vision_tower(model, vision_dir, reinit_projector: bool = False, *, image_size: int | None = None,
                      processor=None, seed: int | None = None):
    """Replace the vision tower of an assembled/converted GeoChat by the CLIP vision tower in ``vision_dir``.

    The new tower is resized to ``image_size`` px (None = the model's current image size, e.g. GeoChat's 504),
    so the image token count ``(image_size // patch) ** 2`` and the position count follow the new tower's patch
    size; ``config.vision_config``/``image_seq_length`` are updated. Its hidden size must equal the projector's
    input width unless ``reinit_projector`` (then the projector is re-initialised for the new width). A
    LlavaProcessor passed as ``processor`` is updated in place (patch size, image size, the new tower's image
    processor when it ships one). Returns the model.
    """
    old_cfg = model.config.vision_config
    size = int(image_size) if image_size is not None else int(old_cfg.image_size)
    tower = load_vision_tower(vision_dir, image_size=size)
    projector = model.model.multi_modal_projector
    expected = projector.linear_1.in_features
    got = tower.config.hidden_size * _feature_layers(model.config)
    if got != expected and not reinit_projector:
        raise GeoChatError(
            f"vision tower {vision_dir} has hidden size {tower.config.hidden_size} but the projector "
            f"(multi_modal_projector.linear_1) takes {expected} inputs, the old tower's hidden size "
            f"{old_cfg.hidden_size}; use a tower of hidden size {old_cfg.hidden_size}, or pass reinit_projector=True "
            f"(--reinit-projector) to re-initialise the projector for the new tower")
    old_tower = model.model.vision_tower
    ref = next(old_tower.parameters())
    tower.to(device=ref.device, dtype=ref.dtype)
    tower.requires_grad_(any(p.requires_grad for p in old_tower.parameters()))
    tower.train(old_tower.training)
    model.model.vision_tower = tower
    model.config.vision_config = tower.config
    model.config.image_seq_length = image_token_count(tower.config)
    if reinit_projector:
        if seed is not None:
            torch.manual_seed(seed)
        new = new_projector(model.config, like=projector)
        new.requires_grad_(any(p.requires_grad for p in projector.parameters()))
        new.train(projector.training)
        model.model.multi_modal_projector = new
        logger.info("projector re-initialised for vision width %d -> text width %d",
                    tower.config.hidden_size, model.config.text_config.hidden_size)
    if processor is not None:
        new_ip = None
        if (Path(vision_dir) / "preprocessor_config.json").exists():
            new_ip = load_image_processor(vision_dir)
        if hasattr(processor, "tokenizer"):
            update_processor(processor, tower.config, new_ip)
        else:
            raise GeoChatError("swap_vision_tower(processor=...) takes a LlavaProcessor; size a bare image processor "
                               "with sized_image_processor(ip, model.config.vision_config.image_size)")
    logger.info("vision tower swapped: %s (hidden %d, patch %d, %d px, %d image tokens)", vision_dir,
                tower.config.hidden_size, tower.config.patch_size, tower.config.image_size,
                model.config.image_seq_length)
    return model


def save_geochat(model, processor, output_dir, max_shard_size: str | int = "5GB") -> Path:
    """``save_pretrained`` the model and its processor (LlavaProcessor or image processor) into ``output_dir``."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), max_shard_size=max_shard_size)
    if processor is not None:
        processor.save_pretrained(str(out))
    return out


def load_geochat(model_dir, dtype: Any = None):
    """Load an HF Llava GeoChat directory: ``(model, processor)`` (processor = LlavaProcessor when the directory
    holds one, else LlavaProcessor from its tokenizer + image processor, else its image processor, else None)."""
    from transformers import AutoProcessor, CLIPImageProcessor, LlavaForConditionalGeneration

    model_dir = check_geochat_dir(model_dir)
    kwargs = {"dtype": dtype} if dtype is not None else {}
    try:
        model = LlavaForConditionalGeneration.from_pretrained(str(model_dir), **kwargs)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for a bad folder
        raise _loading_error("an HF Llava model", model_dir, exc) from None
    processor = None
    try:
        if (model_dir / "processor_config.json").exists():
            processor = AutoProcessor.from_pretrained(str(model_dir))
        elif (model_dir / "preprocessor_config.json").exists():
            image_processor = CLIPImageProcessor.from_pretrained(str(model_dir))
            processor = image_processor
            if has_tokenizer_files(model_dir):
                processor = make_processor(image_processor, load_tokenizer(model_dir), model.config.vision_config)
        elif has_tokenizer_files(model_dir):
            processor = load_tokenizer(model_dir)
    except GeoChatError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _loading_error("the processor (tokenizer + image processor)", model_dir, exc) from None
    return model, processor


def check_geochat_dir(model_dir) -> Path:
    """Cheap checks of an HF Llava GeoChat folder before its weights are loaded (see :func:`check_model_dir`); the
    processor files that exist must be valid json."""
    model_dir = check_model_dir(model_dir, "GeoChat (HF Llava) directory")
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        if (model_dir / name).is_file():
            read_json(model_dir / name, GeoChatError)
    return model_dir


def has_llava_processor_files(model_dir) -> bool:
    """True when ``model_dir`` can give a LlavaProcessor: ``processor_config.json``, or an image processor
    (``preprocessor_config.json``) plus tokenizer files."""
    p = Path(model_dir)
    return (p / "processor_config.json").is_file() or (
        (p / "preprocessor_config.json").is_file() and has_tokenizer_files(p))
