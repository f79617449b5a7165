"""GeoChat assembled on transformers' ``LlavaForConditionalGeneration`` (stage two's model).

GeoChat is LLaVA-1.5 with the CLIP position grid interpolated to 504 px: a CLIP vision tower whose
``hidden_states[-2]`` without CLS (``vision_feature_layer=-2``, ``vision_feature_select_strategy="default"``)
go through an ``mlp2x_gelu`` projector (``linear_1`` vision width -> text width, GELU, ``linear_2``) into a
LLaMA/Vicuna language model. Unlike the original code (one ``-200`` placeholder per image), HF Llava needs one
``<image>`` token in the prompt per image feature: ``(image_size // patch_size) ** 2`` tokens, 1296 at 504/14.

    chat = assemble_geochat("runs/x/hf_vision_tower", "vicuna-7b-v1.5", image_size=504)   # a GeoChat handle
    chat.swap_vision_tower("runs/y/hf_vision_tower")                                      # same width
    chat.swap_vision_tower("runs/z/hf_vision_tower", reinit_projector=True)               # other width
    chat.save("runs/geochat");  chat = load_geochat("runs/geochat")

Every loader returns one :class:`GeoChat` handle: ``model`` plus ``processor`` (the LlavaProcessor, or None when no
tokenizer is known), ``image_processor`` and ``tokenizer`` (its parts, each None when unknown), always the same
attributes whatever the folder held; ``model, processor = chat`` still unpacks.

The parts (tower, image processor, projector, tokenizer, folder checks) are :mod:`vlm_finetune.parts`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rs_common.formats.conversation import CHAT_TEMPLATE
from rs_common.weights import read_json
from vlm_finetune.image_prep import DEFAULT_MODE, record_image_aspect_ratio
from vlm_finetune.parts import (
    IMAGE_TOKEN,
    PROJECTOR_ACT,
    VISION_FEATURE_LAYER,
    VISION_FEATURE_SELECT_STRATEGY,
    GeoChatError,
    check_model_dir,
    feature_layers,
    has_tokenizer_files,
    image_token_count,
    load_image_processor,
    load_projector_weights,
    load_tokenizer,
    load_vision_tower,
    loading_error,
    make_processor,
    meta_tensors,
    new_projector,
    replace_projector,
    prepare_tokenizer,
    sized_image_processor,
    update_processor,
)

logger = logging.getLogger(__name__)


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
        raise loading_error("a causal language model (LlamaForCausalLM)", path, exc) from None


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


@dataclass
class GeoChat:
    """One handle for a loaded or assembled GeoChat: the model and its processor, the same attributes always.

    ``processor``: the LlavaProcessor (prompt with ``<image>`` + image -> model inputs), None when no tokenizer is
    known. ``image_processor`` / ``tokenizer``: its parts, set from it when it is given; either may be None for a
    model built without a tokenizer or a folder without processor files. ``model, processor = chat`` unpacks to
    the model and the most complete processor there is (LlavaProcessor, else image processor, else tokenizer).
    """

    model: Any
    processor: Any = None
    image_processor: Any = None
    tokenizer: Any = None

    def __post_init__(self) -> None:
        if self.processor is not None:
            self.image_processor, self.tokenizer = self.processor.image_processor, self.processor.tokenizer
        elif self.image_processor is not None and self.tokenizer is not None:
            self.processor = make_processor(self.image_processor, self.tokenizer, self.model.config.vision_config)
            self.image_processor = self.processor.image_processor
        ensure_chat_template(self.processor)  # folders saved before the processor carried it get it on load

    @property
    def main_processor(self):
        """The most complete processor there is: the LlavaProcessor, else the image processor, else the tokenizer."""
        return next((p for p in (self.processor, self.image_processor, self.tokenizer) if p is not None), None)

    def __iter__(self):
        yield self.model
        yield self.main_processor

    def require_processor(self, where, error: type[Exception] = GeoChatError, hint: str = ""):
        """The LlavaProcessor, or ``error`` saying that ``where`` has none (inference and training need one)."""
        if self.processor is None:
            raise error(f"{where} has no LlavaProcessor (processor_config.json, or preprocessor_config.json + "
                        f"tokenizer files){hint}")
        return self.processor

    def set_tokenizer(self, tokenizer, pad_to_multiple_of: int | None = None) -> None:
        """Pair the image processor with ``tokenizer`` (``<image>`` added, embeddings grown): a new processor."""
        if self.image_processor is None:
            raise GeoChatError("no image processor (preprocessor_config.json) to pair with the tokenizer")
        finish_tokens(self.model, tokenizer, pad_to_multiple_of=pad_to_multiple_of)
        self.processor = make_processor(self.image_processor, tokenizer, self.model.config.vision_config,
                                        chat_template=CHAT_TEMPLATE)
        self.image_processor, self.tokenizer = self.processor.image_processor, tokenizer

    def swap_vision_tower(self, vision_dir, reinit_projector: bool = False, *, image_size: int | None = None,
                          seed: int | None = None) -> None:
        """:func:`swap_vision_tower` on the model, the processor following the new tower (its own image processor
        when it ships one, at the model's new size)."""
        swap_vision_tower(self.model, vision_dir, reinit_projector, image_size=image_size, processor=self.processor,
                          seed=seed)
        size = self.model.config.vision_config.image_size
        if self.processor is not None:
            self.image_processor = self.processor.image_processor
        elif (Path(vision_dir) / "preprocessor_config.json").exists():
            self.image_processor = load_image_processor(vision_dir, size)
        elif self.image_processor is not None:
            self.image_processor = sized_image_processor(self.image_processor, size)

    def save(self, output_dir, max_shard_size: str | int = "5GB") -> Path:
        """``save_pretrained`` the model and every processor part it has into ``output_dir``."""
        out = save_geochat(self.model, self.processor, output_dir, max_shard_size)
        if self.processor is None:
            for part in (self.image_processor, self.tokenizer):
                if part is not None:
                    part.save_pretrained(str(out))
        return out


def assemble_geochat(vision_dir, llm_dir_or_config, projector=None, *, tokenizer=None, image_size: int | None = None,
                     dtype: torch.dtype | None = None, image_token_index: int | None = None,
                     pad_to_multiple_of: int | None = None, chat_template: str | None = None,
                     image_aspect_ratio: str = DEFAULT_MODE, high_res: str = "", high_res_grid: int = 3,
                     seed: int | None = None) -> GeoChat:
    """Build GeoChat as a ``LlavaForConditionalGeneration``; returns its :class:`GeoChat` handle.

    ``vision_dir``: a Hugging Face CLIP vision directory (weights + ``preprocessor_config.json``).
    ``llm_dir_or_config``: a LlamaForCausalLM directory, a ``LlamaConfig``/config dict (random init) or a model.
    ``projector``: mlp2x_gelu weights (LLaVA's ``mm_projector.bin``, a dict or a file); None = fresh init.
    ``tokenizer``: a tokenizer or its directory; None = the LLM directory's tokenizer when it has one.
    ``image_size``: resize the tower's position grid to this many px (GeoChat: 504); None keeps the tower's.
    ``chat_template``: the processor's Jinja chat template; None = vicuna_v1 (:data:`CHAT_TEMPLATE`).
    ``image_aspect_ratio``: the image preprocessing recorded in ``config.image_aspect_ratio``
    (:mod:`vlm_finetune.image_prep`; GeoChat's ``pad``).
    ``high_res``: ``"dual-perspective"`` builds INF-LLaVA's input path (:mod:`vlm_finetune.dual_perspective`, grid
    ``high_res_grid``, its new module seeded with ``seed``); ``""``/``"none"``: plain GeoChat.

    The handle's ``processor`` is a LlavaProcessor (image processor at ``image_size`` + the tokenizer with
    ``<image>``) when a tokenizer is known, else None and ``image_processor`` the sized CLIPImageProcessor alone
    (image ids then come from the config).
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
    leftover = meta_tensors(model)
    if leftover:
        raise GeoChatError(f"internal: tensors left on the meta device after assembly: {leftover[:5]}")
    if projector is not None:
        load_projector_weights(model, projector)
    finish_tokens(model, tokenizer, image_token_index=image_token_index, pad_to_multiple_of=pad_to_multiple_of)
    record_image_aspect_ratio(model, image_aspect_ratio)
    if high_res:
        from vlm_finetune.dual_perspective import apply_high_res

        model = apply_high_res(model, high_res, high_res_grid, seed=seed)
    model.eval()
    if tokenizer is None:
        return GeoChat(model, image_processor=image_processor)
    return GeoChat(model, make_processor(image_processor, tokenizer, tower.config,
                                         chat_template=chat_template or CHAT_TEMPLATE))


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
    tower = load_vision_tower(vision_dir, image_size=image_size or int(old_cfg.image_size))
    projector = model.model.multi_modal_projector
    expected = projector.linear_1.in_features
    got = tower.config.hidden_size * feature_layers(model.config)
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
        replace_projector(model, seed)
        logger.info("projector re-initialised for vision width %d -> text width %d",
                    tower.config.hidden_size, model.config.text_config.hidden_size)
    if processor is not None:
        has_own = (Path(vision_dir) / "preprocessor_config.json").exists()
        update_processor(processor, tower.config, load_image_processor(vision_dir) if has_own else None)
    logger.info("vision tower swapped: %s (hidden %d, patch %d, %d px, %d image tokens)", vision_dir,
                tower.config.hidden_size, tower.config.patch_size, tower.config.image_size,
                model.config.image_seq_length)
    return model


def ensure_chat_template(processor) -> None:
    """Give a LlavaProcessor without a chat template the vicuna_v1 one (:data:`CHAT_TEMPLATE`), so
    ``processor.apply_chat_template(messages)`` renders GeoChat's prompt; other processors and set templates are
    left alone."""
    if processor is not None and hasattr(processor, "apply_chat_template") and hasattr(processor, "image_processor") \
            and not getattr(processor, "chat_template", None):
        processor.chat_template = CHAT_TEMPLATE


def save_geochat(model, processor, output_dir, max_shard_size: str | int = "5GB") -> Path:
    """``save_pretrained`` the model and its processor (LlavaProcessor or image processor) into ``output_dir``.

    The saved folder always carries ``config.image_aspect_ratio`` (GeoChat's ``pad`` when the model records none) and
    a LlavaProcessor's vicuna_v1 chat template (``chat_template.jinja``)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = getattr(model, "config", None)
    if config is not None and not getattr(config, "image_aspect_ratio", None):
        record_image_aspect_ratio(model, DEFAULT_MODE)
    ensure_chat_template(processor)
    model.save_pretrained(str(out), max_shard_size=max_shard_size)
    if processor is not None:
        processor.save_pretrained(str(out))
    return out


def load_geochat(model_dir, dtype: Any = None) -> GeoChat:
    """Load an HF Llava GeoChat directory as a :class:`GeoChat` handle: its LlavaProcessor when the directory holds
    one (or a tokenizer + an image processor to make one), else whichever part it holds."""
    from transformers import AutoProcessor, CLIPImageProcessor

    from vlm_finetune.dual_perspective import llava_class

    model_dir = check_geochat_dir(model_dir)
    kwargs = {"dtype": dtype} if dtype is not None else {}
    model_class = llava_class(read_json(model_dir / "config.json", GeoChatError))  # dual-perspective when recorded
    try:
        model = model_class.from_pretrained(str(model_dir), **kwargs)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for a bad folder
        raise loading_error("an HF Llava model", model_dir, exc) from None
    try:
        if (model_dir / "processor_config.json").exists():
            return GeoChat(model, AutoProcessor.from_pretrained(str(model_dir)))
        image_processor = CLIPImageProcessor.from_pretrained(str(model_dir)) \
            if (model_dir / "preprocessor_config.json").exists() else None
        tokenizer = load_tokenizer(model_dir) if has_tokenizer_files(model_dir) else None
        return GeoChat(model, image_processor=image_processor, tokenizer=tokenizer)
    except GeoChatError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise loading_error("the processor (tokenizer + image processor)", model_dir, exc) from None


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
