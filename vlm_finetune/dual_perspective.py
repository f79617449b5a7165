"""Dual-perspective GeoChat: INF-LLaVA's high-resolution input path on transformers' Llava (``--high-res
dual-perspective``).

Cropping (:mod:`vlm_finetune.dual_crops`, fed by :mod:`vlm_finetune.image_prep`): the image at ``N x S`` px gives
``N x N`` local crops (blocks) and ``N x N`` global crops (strided pixels), plus the whole image at ``S``: ``2N^2 + 1``
sub-images of ``S`` px through the frozen vision tower (``pixel_values`` ``(B, 2N^2 + 1, 3, S, S)``).

Enhancement (:class:`DualPerspectiveEnhancer`, the new trainable module ``model.dual_perspective``):

1. local and global features are re-assembled into two ``N g x N g`` feature maps by their 2-D positions (``g`` = the
   tower's patch grid, 36 at 504/14): local crops side by side, global crops interleaved;
2. local enhancement: each local block cross-attends to the same block cut from the global map (the same scene
   region seen by the global crops); global enhancement: each global crop cross-attends to the same strided
   sub-map cut from the local map. Attention stays inside ``g^2`` tokens (never the ``(N g)^2`` of the whole map),
   one shared cross-attention (q/k/v/o + LayerNorm, residual), as INF-LLaVA's module;
3. ``ffn_crop`` (local) and ``ffn_stride`` (global), each ``d -> 64 -> d/2``, concatenated on channels (``d``);
4. average-pooled ``N x N`` back to ``g x g``: the token count of one image (1296 at 504/14, as plain GeoChat);
5. merged with the resized view's features by a residual add with a per-channel gate initialised at zero:
   ``resized + gate * pooled``. Why an add and not concat + linear: the LLM sees the same number of image tokens
   and, at initialisation, exactly the features of plain GeoChat, so a released GeoChat/LLaVA projector and LLM
   start from their own quality and the high-resolution detail is blended in as the gate learns (ControlNet /
   LLaMA-Adapter zero-init); concat + a linear ``2d -> d`` initialised to ``[I, 0]`` would start the same way at
   the cost of ``2 d^2`` more weights.

The projector then maps the fused features as usual. The module trains with the projector (tower frozen; the tower
runs without autograd when none of its weights trains), and is saved with the model: ``config.high_res``,
``high_res_grid``, ``high_res_hidden``, ``high_res_heads`` in config.json, its weights under
``model.dual_perspective.*``; :func:`llava_class` picks :class:`DualPerspectiveLlava` when loading such a folder.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlavaForConditionalGeneration, LlavaModel, LlavaPreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from vlm_finetune.dual_crops import (
    DEFAULT_GRID,
    DUAL_PERSPECTIVE,
    HIGH_RES_MODES,
    HIGH_RES_NONE,
    global_crops,
    interleave_global,
    local_crops,
    sub_image_count,
    tile_local,
)
from vlm_finetune.parts import GeoChatError, feature_layers

CONFIG_KEYS = {"grid": "high_res_grid", "hidden": "high_res_hidden", "heads": "high_res_heads"}


class DualPerspectiveError(GeoChatError):
    """A dual-perspective setting that does not fit the model (grid, width, feature strategy, pixel layout)."""


@dataclass
class DualPerspectiveSettings:
    """The dual-perspective module's shape: ``grid`` N (local and global crops per side), ``hidden`` (the
    ``ffn_crop``/``ffn_stride`` bottleneck, INF-LLaVA's 64), ``heads`` of the cross-attention (0 = width // 64)."""

    grid: int = DEFAULT_GRID
    hidden: int = 64
    heads: int = 0

    def validate(self, width: int | None = None) -> None:
        if self.grid < 2:
            raise DualPerspectiveError(f"high_res_grid must be >= 2, got {self.grid}")
        if self.hidden < 1 or self.heads < 0:
            raise DualPerspectiveError(f"high_res_hidden must be >= 1 and high_res_heads >= 0, got {self.hidden}, "
                                       f"{self.heads}")
        if width is not None and (width % 2 or width % self.heads_for(width)):
            raise DualPerspectiveError(f"vision feature width {width} must be even and divisible by "
                                       f"{self.heads_for(width)} attention heads")

    def heads_for(self, width: int) -> int:
        return self.heads or max(1, width // 64)

    def record(self, config) -> None:
        """Write the settings into a LlavaConfig (saved in config.json)."""
        config.high_res = DUAL_PERSPECTIVE
        for key, name in CONFIG_KEYS.items():
            setattr(config, name, int(getattr(self, key)))

    @classmethod
    def from_config(cls, config) -> DualPerspectiveSettings:
        if getattr(config, "high_res", None) != DUAL_PERSPECTIVE:
            raise DualPerspectiveError("the model config does not record high_res: dual-perspective")
        return cls(**{key: int(getattr(config, name, getattr(cls, key))) for key, name in CONFIG_KEYS.items()})


def is_dual_perspective(config) -> bool:
    return getattr(config, "high_res", None) == DUAL_PERSPECTIVE


class CrossAttention(nn.Module):
    """Multi-head cross-attention with a residual and a LayerNorm: ``norm(query + o(attn(q(query), k(ctx), v(ctx))))``
    (PyTorch's scaled_dot_product_attention: memory-efficient kernels on GPU)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))
        self.norm = nn.LayerNorm(width)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        def split(x):
            return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (M, heads, L, d / heads)

        out = F.scaled_dot_product_attention(split(self.q(query)), split(self.k(context)), split(self.v(context)))
        return self.norm(query + self.o(out.transpose(1, 2).flatten(2)))


def _ffn(width: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width // 2))


class DualPerspectiveEnhancer(nn.Module):
    """INF-LLaVA's dual-perspective enhancement (see the module doc): ``(B, 2N^2 + 1, g^2, d)`` vision features of
    ``[resized, local crops, global crops]`` -> ``(B, g^2, d)``, one image's tokens."""

    def __init__(self, width: int, settings: DualPerspectiveSettings):
        super().__init__()
        settings.validate(width)
        self.grid = settings.grid
        self.cross_attn = CrossAttention(width, settings.heads_for(width))
        self.ffn_crop = _ffn(width, settings.hidden)
        self.ffn_stride = _ffn(width, settings.hidden)
        self.gate = nn.Parameter(torch.zeros(width))

    def _maps(self, features: torch.Tensor, first: int) -> torch.Tensor:
        """The N^2 crops' tokens from index ``first`` as (B, N^2, d, g, g) feature maps."""
        n2 = self.grid * self.grid
        crops = features[:, first:first + n2]  # (B, N^2, g^2, d)
        side = math.isqrt(crops.shape[2])
        if side * side != crops.shape[2]:
            raise DualPerspectiveError(f"{crops.shape[2]} tokens per crop is not a square grid (the dual-perspective "
                                       "path needs vision_feature_select_strategy 'default': CLS dropped)")
        return crops.transpose(2, 3).unflatten(-1, (side, side))

    def _attend(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Cross-attention of each of the N^2 query maps (B, N^2, d, g, g) to its context map; the same shape out."""
        b, n2, d, g, _ = query.shape
        q = query.flatten(3).transpose(2, 3).reshape(b * n2, g * g, d)
        c = context.flatten(3).transpose(2, 3).reshape(b * n2, g * g, d)
        return self.cross_attn(q, c).reshape(b, n2, g * g, d).transpose(2, 3).unflatten(-1, (g, g))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        n = self.grid
        if features.dim() != 4 or features.shape[1] != sub_image_count(n):
            raise DualPerspectiveError(f"expected (batch, {sub_image_count(n)}, tokens, width) features, got "
                                       f"{tuple(features.shape)}")
        resized = features[:, 0]
        local, glob = self._maps(features, 1), self._maps(features, 1 + n * n)
        local_map, global_map = tile_local(local, n), interleave_global(glob, n)  # (B, d, N g, N g) each
        local_enhanced = tile_local(self._attend(local, local_crops(global_map, n)), n)
        global_enhanced = interleave_global(self._attend(glob, global_crops(local_map, n)), n)
        fused = torch.cat([self.ffn_crop(local_enhanced.permute(0, 2, 3, 1)),
                           self.ffn_stride(global_enhanced.permute(0, 2, 3, 1))], dim=-1)  # (B, N g, N g, d)
        pooled = F.avg_pool2d(fused.permute(0, 3, 1, 2), n)  # (B, d, g, g): the token count of one image
        return resized + self.gate * pooled.flatten(2).transpose(1, 2)


def select_features(hidden_states, layer, strategy: str) -> torch.Tensor:
    """The Llava feature selection: ``hidden_states[layer]`` (or the layers concatenated on channels), CLS dropped
    for the ``default`` strategy."""
    layers = [layer] if isinstance(layer, int) else list(layer)
    picked = [hidden_states[i][:, 1:] if strategy == "default" else hidden_states[i] for i in layers]
    return picked[0] if len(picked) == 1 else torch.cat(picked, dim=-1)


def feature_width(config) -> int:
    return int(config.vision_config.hidden_size) * feature_layers(config)


class DualPerspectiveLlavaModel(LlavaModel):
    """LlavaModel whose image features run the dual-perspective path (``self.dual_perspective``)."""

    def __init__(self, config):
        super().__init__(config)
        self.dual_perspective = DualPerspectiveEnhancer(feature_width(config),
                                                        DualPerspectiveSettings.from_config(config))

    def get_image_features(self, pixel_values, vision_feature_layer=None, vision_feature_select_strategy=None,
                           image_sizes=None, **kwargs):
        """``(B, 2N^2 + 1, 3, S, S)`` sub-images -> the tower (no autograd when frozen) -> the enhancer -> the
        projector: one image's tokens per sample (``pooler_output``, a list as Llava's)."""
        layer = self.config.vision_feature_layer if vision_feature_layer is None else vision_feature_layer
        strategy = vision_feature_select_strategy or self.config.vision_feature_select_strategy
        count = sub_image_count(self.dual_perspective.grid)
        if pixel_values.dim() != 5 or pixel_values.shape[1] != count:
            raise DualPerspectiveError(
                f"a dual-perspective GeoChat takes pixel_values (batch, {count}, 3, S, S), got "
                f"{tuple(pixel_values.shape)}: prepare images with vlm_finetune.image_prep.pixel_values(..., "
                f"high_res_grid={self.dual_perspective.grid})")
        tower = self.vision_tower
        grad = torch.is_grad_enabled() and any(p.requires_grad for p in tower.parameters())
        with torch.set_grad_enabled(grad):  # a frozen tower keeps no activations (LLaVA's tower is no_grad)
            out = tower(pixel_values.flatten(0, 1), output_hidden_states=True, return_dict=True)
        selected = select_features(out.hidden_states, layer, strategy)
        fused = self.dual_perspective(selected.unflatten(0, tuple(pixel_values.shape[:2])))
        features = self.multi_modal_projector(fused)
        return BaseModelOutputWithPooling(last_hidden_state=out.last_hidden_state, pooler_output=list(features))


class DualPerspectiveLlava(LlavaForConditionalGeneration):
    """LlavaForConditionalGeneration on :class:`DualPerspectiveLlavaModel` (the same state-dict layout plus
    ``model.dual_perspective.*``); ``from_pretrained`` on a folder whose config records ``high_res``."""

    def __init__(self, config):
        LlavaPreTrainedModel.__init__(self, config)  # the parent's body, with the dual-perspective LlavaModel
        self.model = DualPerspectiveLlavaModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()


def llava_class(config):
    """The model class for a GeoChat config: DualPerspectiveLlava when it records ``high_res: dual-perspective``,
    else LlavaForConditionalGeneration. ``config``: a LlavaConfig or its config.json dict."""
    mode = config.get("high_res") if isinstance(config, dict) else getattr(config, "high_res", None)
    if mode in (None, HIGH_RES_NONE):
        return LlavaForConditionalGeneration
    if mode != DUAL_PERSPECTIVE:
        raise DualPerspectiveError(f"config high_res {mode!r}: this toolkit knows {', '.join(HIGH_RES_MODES)}")
    return DualPerspectiveLlava


def enable_dual_perspective(model, settings: DualPerspectiveSettings | None = None, seed: int | None = None):
    """A DualPerspectiveLlava built around a plain GeoChat ``model``'s parts (tower, projector, LLM, head: shared,
    not copied) and a new :class:`DualPerspectiveEnhancer` (zero gate: at first it answers as ``model`` does); the
    settings are recorded in the shared config. A model that already is dual-perspective is returned when the
    settings agree. ``seed`` seeds the new module's initialisation."""
    settings = settings or DualPerspectiveSettings()
    width = feature_width(model.config)
    settings.validate(width)
    if is_dual_perspective(model.config):
        have = DualPerspectiveSettings.from_config(model.config)
        if have != settings:
            raise DualPerspectiveError(f"the model is already dual-perspective with {asdict(have)}, not "
                                       f"{asdict(settings)}")
        return model
    settings.record(model.config)
    with torch.device("meta"):
        new = DualPerspectiveLlava(model.config)
    new.model.vision_tower = model.model.vision_tower
    new.model.language_model = model.model.language_model
    new.model.multi_modal_projector = projector = model.model.multi_modal_projector
    new.lm_head = model.lm_head
    if getattr(model, "generation_config", None) is not None:
        new.generation_config = model.generation_config
    if seed is not None:
        torch.manual_seed(seed)
    ref = next(projector.parameters())
    new.model.dual_perspective = DualPerspectiveEnhancer(width, settings).to(device=ref.device, dtype=ref.dtype)
    new.train(model.training)
    leftover = [name for name, t in new.state_dict().items() if t.is_meta]
    if leftover:
        raise DualPerspectiveError(f"internal: tensors left on the meta device: {leftover[:5]}")
    return new


def apply_high_res(model, high_res: str, grid: int = DEFAULT_GRID, seed: int | None = None):
    """``high_res`` of a run on ``model``: ``""`` keeps the model as it is, ``"none"`` requires a plain one,
    ``"dual-perspective"`` returns it dual-perspective with ``grid`` (converted by :func:`enable_dual_perspective`
    when plain; an error when it already is with another grid)."""
    if not high_res:
        return model
    if high_res not in HIGH_RES_MODES:
        raise DualPerspectiveError(f"high_res {high_res!r}: use one of {', '.join(HIGH_RES_MODES)}")
    if high_res == HIGH_RES_NONE:
        if is_dual_perspective(model.config):
            raise DualPerspectiveError("--high-res none: the model is dual-perspective (its config records "
                                       "high_res); leave --high-res unset to train it as it is")
        return model
    return enable_dual_perspective(model, DualPerspectiveSettings(grid=int(grid)), seed=seed)


ADAPTER_FILE = "high_res.json"  # beside a LoRA adapter trained on a model made dual-perspective by the run


def write_adapter_settings(model, adapter_dir) -> None:
    """Record a dual-perspective model's settings beside its adapter, so a plain base model can be rebuilt alike."""
    from pathlib import Path

    from rs_common.files import atomic_write_json

    if is_dual_perspective(model.config):
        atomic_write_json(Path(adapter_dir) / ADAPTER_FILE,
                          {"high_res": DUAL_PERSPECTIVE, **asdict(DualPerspectiveSettings.from_config(model.config))})


def model_for_adapter(model, adapter_dir):
    """``model`` made dual-perspective when ``adapter_dir`` records it (:func:`write_adapter_settings`), so the
    adapter's ``dual_perspective`` weights have a module to load into; ``model`` otherwise."""
    from pathlib import Path

    from rs_common.weights import read_json_object

    path = Path(adapter_dir) / ADAPTER_FILE
    if not path.is_file():
        return model
    data = read_json_object(path, DualPerspectiveError, "dual-perspective settings")
    return enable_dual_perspective(model, DualPerspectiveSettings(**{k: int(data[k]) for k in CONFIG_KEYS if k in data}))
