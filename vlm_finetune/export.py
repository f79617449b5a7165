"""Hand a stage-1 open_clip ViT over to transformers (and GeoChat): a ``CLIPVisionModelWithProjection`` folder.

``export_vision_tower(checkpoint, model_name, image_size, output)`` loads any checkpoint ``create_clip`` reads
(open_clip .pt/.bin, ``OUTPUT/checkpoints/step_N.pt``, ``final.safetensors``, a checkpoint folder; OpenAI TorchScript
.pt only with ``allow_torchscript``, as loading one runs code stored in it), maps the vision tower's weights onto
transformers' CLIP vision model, optionally at a new resolution (position embedding interpolated GeoChat's way: CLS
row kept, grid bicubic with ``align_corners=True``), and writes::

    OUTPUT/config.json               CLIPVisionConfig (save_pretrained), image_size = the exported size
    OUTPUT/model.safetensors         vision_model.* + visual_projection.weight (save_pretrained)
    OUTPUT/preprocessor_config.json  CLIPImageProcessor at the exported size, the checkpoint's mean/std
    OUTPUT/export_info.json          provenance: source, model, sizes, interpolation, activation, versions
    OUTPUT/legacy/                   (--legacy-layout) the same tower for transformers 4.31-4.36 (GeoChat)

Key map (open_clip ``visual.*`` -> transformers, under ``vision_model.``): conv1 -> embeddings.patch_embedding;
class_embedding -> embeddings.class_embedding; positional_embedding -> embeddings.position_embedding.weight;
ln_pre -> pre_layrnorm; transformer.resblocks.N.attn.in_proj_{weight,bias} split in 3 (q, k, v) ->
encoder.layers.N.self_attn.{q,k,v}_proj; attn.out_proj -> self_attn.out_proj; ln_1/ln_2 -> layer_norm1/2;
mlp.c_fc/c_proj -> mlp.fc1/fc2; ln_post -> post_layernorm; proj (width x embed) -> visual_projection.weight,
transposed. ``hidden_act`` is read from the tower's MLP: ``quick_gelu`` for QuickGELU towers (OpenAI weights,
``-quickgelu`` names, ``force_quick_gelu``), ``gelu`` for nn.GELU.

Layouts, checked against transformers 5.24: in memory ``CLIPVisionModel`` has no ``vision_model.`` level
(``embeddings.patch_embedding.weight``) while ``CLIPVisionModelWithProjection`` has it; ``save_pretrained`` of
the latter writes ``vision_model.*`` + ``visual_projection.weight``, and ``CLIPVisionModel.from_pretrained``
strips the prefix on load (a conversion rule) and reports ``visual_projection.weight`` as its only unexpected
key. transformers 4.31-4.36 (GeoChat pins 4.31) name the keys of both classes with ``vision_model.``, so the
file is the same layout there; ``position_ids`` has been a non-persistent buffer since 4.31
(huggingface/transformers#24505, "Clean load keys", merged June 2023 before the 4.31.0 release), so it is not
written unless asked for (``legacy_position_ids``, for strict ``load_state_dict`` code written against <= 4.30).

The reverse, ``hf_vision_to_open_clip(hf_dir)``, turns any transformers CLIP vision tower (this export, a
``CLIPVisionModel`` folder, or a full ``CLIPModel`` folder such as openai/clip-vit-large-patch14-336) into
open_clip ``visual`` keys, so it can be evaluated in an open_clip model of the same shape.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from clip_pretrain.models import TORCHSCRIPT_HELP
from rs_common.config import ConfigError
from rs_common.weights import read_json, read_weights
from vlm_finetune.interpolate import MODES, grid_side, interpolate_pos_embed, resolve_image_size

log = logging.getLogger(__name__)

HF_PREFIX = "vision_model."
LEGACY_TRANSFORMERS_VERSION = "4.31.0"
_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1, "box": 4, "hamming": 5}  # PIL codes

# per-layer key map: open_clip (under transformer.resblocks.N.) -> transformers (under encoder.layers.N.)
_LAYER_MAP = {
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
_TOP_MAP = {
    "conv1.weight": "embeddings.patch_embedding.weight", "class_embedding": "embeddings.class_embedding",
    "positional_embedding": "embeddings.position_embedding.weight",
    **{f"ln_pre.{p}": f"pre_layrnorm.{p}" for p in ("weight", "bias")},
    **{f"ln_post.{p}": f"post_layernorm.{p}" for p in ("weight", "bias")},
}
_BLOCK_RE = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)$")
_HF_LAYER_RE = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")


class ExportError(ValueError):
    """A model, size or file that cannot be exported; the message says why and what to use instead."""


# --------------------------------------------------------------------------------------------------------------
# what can be exported


def check_model_config(model_name: str, image_size: int | None = None) -> None:
    """Refuse non-ViT towers (ResNets, timm, Hugging Face towers) and bad sizes from the model's JSON config,
    before any weights are read."""
    import open_clip

    import clip_pretrain  # noqa: F401 - registers rs-tiny
    from clip_pretrain.models import check_model_name

    check_model_name(model_name)
    vcfg = open_clip.get_model_config(model_name).get("vision_cfg", {})
    if vcfg.get("timm_model_name"):
        raise ExportError(
            f"{model_name}: its vision tower is the timm model {vcfg['timm_model_name']!r}, not an open_clip "
            "VisionTransformer; only open_clip ViT towers (ViT-B-32, ViT-B-16, ViT-L-14, ViT-L-14-336, rs-tiny...) "
            "map onto transformers' CLIPVisionModel"
        )
    if vcfg.get("hf_model_name"):
        raise ExportError(f"{model_name}: its vision tower is the Hugging Face model {vcfg['hf_model_name']!r}, "
                          "not an open_clip VisionTransformer; only open_clip ViT towers can be exported")
    if isinstance(vcfg.get("layers"), (list, tuple)) or not vcfg.get("patch_size"):
        raise ExportError(
            f"{model_name}: its vision tower is a ResNet (ModifiedResNet), not a ViT; transformers' "
            "CLIPVisionModel (and GeoChat/LLaVA) take ViT towers only: export a ViT-* model"
        )
    try:
        resolve_image_size(image_size, int(vcfg.get("image_size") or vcfg["patch_size"]), int(vcfg["patch_size"]))
    except ValueError as exc:
        raise ExportError(f"{model_name}: {exc}") from None


def check_vit(visual: torch.nn.Module) -> None:
    """An ExportError unless ``visual`` is an open_clip VisionTransformer that transformers' CLIP ViT can
    represent exactly (CLS-token pooling, pre-LN, plain residual blocks, a projection)."""
    from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

    name = type(visual).__name__
    if not isinstance(visual, VisionTransformer):
        kind = {"ModifiedResNet": "a ResNet", "TimmModel": "a timm model", "HFTextEncoder": "a Hugging Face model"}
        raise ExportError(f"the vision tower is {kind.get(name, name)} ({name}), not an open_clip "
                          "VisionTransformer: only ViT towers map onto transformers' CLIPVisionModel")
    problems = []
    if visual.image_size[0] != visual.image_size[1] or visual.patch_size[0] != visual.patch_size[1]:
        problems.append(f"non-square image/patch size {visual.image_size}/{visual.patch_size}")
    if visual.attn_pool is not None:
        problems.append("attentional pooling (CoCa-style attn_pool)")
    if visual.pool_type != "tok":
        problems.append(f"pool_type={visual.pool_type!r} (transformers pools the CLS token)")
    if isinstance(visual.ln_pre, torch.nn.Identity):
        problems.append("no ln_pre (transformers always applies pre_layrnorm)")
    if visual.proj is None:
        problems.append("no projection (proj is None)")
    if visual.conv1.bias is not None:
        problems.append("a patch-embedding bias")
    for i, blk in enumerate(visual.transformer.resblocks):
        if not isinstance(blk, ResidualAttentionBlock):
            problems.append(f"block {i} is {type(blk).__name__} (qk-norm / scaled attention / sub-LN)")
            break
        if not (isinstance(blk.ls_1, torch.nn.Identity) and isinstance(blk.ls_2, torch.nn.Identity)):
            problems.append("layer scale (ls_init_value)")
            break
        if blk.attn.in_proj_weight is None or blk.attn.in_proj_bias is None:
            problems.append("attention without a packed, biased in-projection")
            break
    if problems:
        raise ExportError("this ViT has features transformers' CLIPVisionModel cannot represent: "
                          + "; ".join(problems))


def hidden_act(visual: torch.nn.Module) -> str:
    """transformers' ``hidden_act`` for the tower's MLP activation (QuickGELU -> quick_gelu, GELU -> gelu)."""
    from open_clip.transformer import QuickGELU

    act = visual.transformer.resblocks[0].mlp.gelu
    if isinstance(act, QuickGELU):
        return "quick_gelu"
    if isinstance(act, torch.nn.GELU):
        return "gelu" if act.approximate == "none" else "gelu_pytorch_tanh"
    raise ExportError(f"activation {type(act).__name__} has no transformers equivalent (quick_gelu / gelu)")


def _layer_norm_eps(visual: torch.nn.Module) -> float:
    eps = {m.eps for m in visual.modules() if isinstance(m, torch.nn.LayerNorm)}
    if len(eps) != 1:
        raise ExportError(f"the tower's LayerNorms use several eps values {sorted(eps)}; transformers has one")
    return eps.pop()


def hf_vision_config(visual: torch.nn.Module, image_size: int | None = None):
    """The ``CLIPVisionConfig`` of ``visual`` (an open_clip ViT) at ``image_size`` (default: its own)."""
    from transformers import CLIPVisionConfig

    check_vit(visual)
    patch = visual.patch_size[0]
    try:
        size = resolve_image_size(image_size, visual.image_size[0], patch)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    block = visual.transformer.resblocks[0]
    cfg = CLIPVisionConfig(
        hidden_size=visual.conv1.out_channels,
        intermediate_size=block.mlp.c_fc.out_features,
        projection_dim=visual.proj.shape[1],
        num_hidden_layers=len(visual.transformer.resblocks),
        num_attention_heads=block.attn.num_heads,
        num_channels=visual.conv1.in_channels,
        image_size=size,
        patch_size=patch,
        hidden_act=hidden_act(visual),
        layer_norm_eps=_layer_norm_eps(visual),
    )
    cfg.architectures = ["CLIPVisionModelWithProjection"]
    return cfg


# --------------------------------------------------------------------------------------------------------------
# key maps


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if any(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return dict(state)


def open_clip_to_hf(visual_state: dict[str, torch.Tensor], prefix: str = HF_PREFIX) -> dict[str, torch.Tensor]:
    """open_clip vision-tower keys (``conv1.weight``..., or ``visual.``-prefixed keys of a whole CLIP state dict)
    -> transformers keys under ``prefix`` (``vision_model.``; pass ``""`` for an in-memory CLIPVisionModel) plus
    ``visual_projection.weight``. Every tower key must be used: leftovers (layer scale, attention pooling...)
    are an ExportError rather than silently dropped weights."""
    state = _strip(visual_state, "visual.")
    out: dict[str, torch.Tensor] = {}
    left = set(state)
    for src, dst in _TOP_MAP.items():
        if src not in state:
            raise ExportError(f"open_clip vision state dict lacks {src!r}: not a CLIP ViT tower")
        out[prefix + dst] = state[src]
        left.discard(src)
    layers = sorted({int(m.group(1)) for k in state if (m := _BLOCK_RE.match(k))})
    if layers != list(range(len(layers))) or not layers:
        raise ExportError(f"open_clip vision state dict has transformer blocks {layers}: expected 0..N-1")
    for n in layers:
        src_p, dst_p = f"transformer.resblocks.{n}.", f"{prefix}encoder.layers.{n}."
        for kind in ("weight", "bias"):
            key = f"{src_p}attn.in_proj_{kind}"
            if key not in state:
                raise ExportError(f"open_clip vision state dict lacks {key!r}")
            q, k, v = state[key].chunk(3, dim=0)
            out[f"{dst_p}self_attn.q_proj.{kind}"] = q
            out[f"{dst_p}self_attn.k_proj.{kind}"] = k
            out[f"{dst_p}self_attn.v_proj.{kind}"] = v
            left.discard(key)
        for src, dst in _LAYER_MAP.items():
            if src_p + src not in state:
                raise ExportError(f"open_clip vision state dict lacks {src_p + src!r}")
            out[dst_p + dst] = state[src_p + src]
            left.discard(src_p + src)
    if "proj" in state:
        out["visual_projection.weight"] = state["proj"].t()
        left.discard("proj")
    if left:
        raise ExportError(f"open_clip vision weights with no transformers CLIP equivalent: {sorted(left)[:10]}")
    return {k: v.contiguous() for k, v in out.items()}


_IGNORED_HF = re.compile(r"^(text_model\.|text_projection\.|logit_scale$|logit_bias$)|position_ids$")


def hf_to_open_clip(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers CLIP vision keys (with or without ``vision_model.``; a whole CLIPModel's text keys,
    ``logit_scale`` and ``position_ids`` buffers are ignored) -> open_clip ``visual`` module keys (no
    ``visual.`` prefix). ``proj`` is present only when the source has ``visual_projection.weight``."""
    state = {k: v for k, v in hf_state.items() if not _IGNORED_HF.search(k)}
    proj = state.pop("visual_projection.weight", None)
    state = _strip(state, HF_PREFIX)
    inv_top = {v: k for k, v in _TOP_MAP.items()}
    inv_layer = {v: k for k, v in _LAYER_MAP.items()}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    left = []
    for key, value in state.items():
        if key in inv_top:
            out[inv_top[key]] = value
            continue
        m = _HF_LAYER_RE.match(key)
        if m and m.group(2) in inv_layer:
            out[f"transformer.resblocks.{m.group(1)}.{inv_layer[m.group(2)]}"] = value
            continue
        pm = re.match(r"^self_attn\.([qkv])_proj\.(weight|bias)$", m.group(2)) if m else None
        if pm:
            qkv.setdefault((int(m.group(1)), pm.group(2)), {})[pm.group(1)] = value
            continue
        left.append(key)
    if left:
        raise ExportError(f"transformers weights with no open_clip ViT equivalent: {sorted(left)[:10]}")
    for (n, kind), parts in sorted(qkv.items()):
        if set(parts) != {"q", "k", "v"}:
            raise ExportError(f"layer {n}: self_attn {kind} has only {sorted(parts)} of q/k/v")
        out[f"transformer.resblocks.{n}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], 0)
    missing = [k for k in _TOP_MAP if k not in out]
    if missing:
        raise ExportError(f"transformers weights lack the vision tower's {missing}: not a CLIP vision model")
    if proj is not None:
        out["proj"] = proj.t().contiguous()
    return out


def _read_json(path: Path) -> Any:
    return read_json(path, ExportError)


def read_hf_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a transformers model folder (model.safetensors, pytorch_model.bin, or a sharded index of
    either) or of one weights file; an unreadable file is an ExportError naming it."""
    return read_weights(path, ExportError)


def _vision_section(cfg: Any, path: Path) -> dict:
    """The vision part of a transformers config.json (a CLIPModel's ``vision_config``, else the whole object)."""
    section = cfg.get("vision_config", cfg) if isinstance(cfg, dict) else None
    if not isinstance(section, dict):
        raise ExportError(f"{path}: not a transformers config (expected a json object)")
    return section


def hf_vision_to_open_clip(hf_dir: str | Path, image_size: int | None = None, mode: str = "bicubic",
                           align_corners: bool = True) -> dict[str, torch.Tensor]:
    """open_clip ``visual`` keys for the CLIP vision tower in ``hf_dir`` (a transformers folder or weights file),
    e.g. ``model.visual.load_state_dict(hf_vision_to_open_clip(d))``. ``image_size`` re-grids the position
    embedding (e.g. back from 504 to the open_clip model's 336). The tower's activation is in its config.json:
    ``quick_gelu`` towers need an open_clip model built with ``force_quick_gelu=True``."""
    out = hf_to_open_clip(read_hf_weights(hf_dir))
    cfg_path = Path(hf_dir) / "config.json"
    if cfg_path.is_file():
        cfg = _read_json(cfg_path)
        act = _vision_section(cfg, cfg_path).get("hidden_act")
        if act:
            log.info("%s: hidden_act=%s (%s)", hf_dir, act, "build the open_clip model with force_quick_gelu=True"
                     if act == "quick_gelu" else "open_clip's default nn.GELU")
    patch = out["conv1.weight"].shape[-1]
    try:
        native = grid_side(out["positional_embedding"].shape[0] - 1) * patch
        size = resolve_image_size(image_size, native, patch)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    if size != native:
        out["positional_embedding"] = interpolate_pos_embed(out["positional_embedding"], size // patch, mode,
                                                            align_corners)
    return out


def load_hf_vision_into_open_clip(model: torch.nn.Module, hf_dir: str | Path, mode: str = "bicubic",
                                  align_corners: bool = True) -> None:
    """Load the transformers tower in ``hf_dir`` into ``model.visual`` (an open_clip CLIP or its ViT), the
    position embedding re-gridded to the model's own size; strict: every weight must fit."""
    visual = getattr(model, "visual", model)
    check_vit(visual)
    cfg_path = Path(hf_dir) / "config.json"
    if cfg_path.is_file():
        cfg = _read_json(cfg_path)
        act = _vision_section(cfg, cfg_path).get("hidden_act")
        if act and act != hidden_act(visual):
            raise ExportError(f"{hf_dir}: the tower uses {act}, the open_clip model {hidden_act(visual)}: build it with "
                              f"force_quick_gelu={act == 'quick_gelu'}")
    state = hf_vision_to_open_clip(hf_dir, image_size=visual.image_size[0], mode=mode, align_corners=align_corners)
    try:
        visual.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ExportError(f"{hf_dir}: the tower does not fit this open_clip model: "
                          f"{first[0][:300] if first else type(exc).__name__}") from None


# --------------------------------------------------------------------------------------------------------------
# conversion and export


def convert_visual(visual: torch.nn.Module, image_size: int | None = None, mode: str = "bicubic",
                   align_corners: bool = True):
    """``(CLIPVisionConfig, transformers state dict)`` for an open_clip ViT tower at ``image_size`` (default: its
    own), position embedding interpolated when the grid changes. Tensors are fp32 copies on CPU."""
    cfg = hf_vision_config(visual, image_size)
    state = {k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu()
             for k, v in visual.state_dict().items()}
    grid = cfg.image_size // cfg.patch_size
    pos = state["positional_embedding"]
    if grid_side(pos.shape[0] - 1) != grid:
        state["positional_embedding"] = interpolate_pos_embed(pos, grid, mode=mode, align_corners=align_corners)
    return cfg, open_clip_to_hf(state)


def image_processor(image_size: int, mean, std, interpolation: str = "bicubic", resize_mode: str = "shortest"):
    """A ``CLIPImageProcessor`` doing what open_clip's eval transform does at ``image_size``: resize the shortest
    edge, centre-crop a square, scale to [0, 1], normalise with the checkpoint's mean/std."""
    from transformers import CLIPImageProcessor

    kwargs: dict[str, Any] = {
        "size": {"shortest_edge": image_size},
        "crop_size": {"height": image_size, "width": image_size},
        "do_center_crop": True,
    }
    if resize_mode == "squash":  # open_clip resizes to a square directly, no crop
        kwargs = {"size": {"height": image_size, "width": image_size}, "do_center_crop": False}
    elif resize_mode != "shortest":
        log.warning("open_clip resize_mode %r has no CLIPImageProcessor equivalent: using shortest-edge + crop",
                    resize_mode)
    return CLIPImageProcessor(
        do_resize=True, resample=_RESAMPLE.get(interpolation, 3), do_rescale=True, do_normalize=True,
        image_mean=[float(x) for x in mean], image_std=[float(x) for x in std], do_convert_rgb=True, **kwargs,
    )


_LEGACY_FIELDS = ("attention_dropout", "hidden_act", "hidden_size", "image_size", "initializer_factor",
                  "initializer_range", "intermediate_size", "layer_norm_eps", "num_attention_heads", "num_channels",
                  "num_hidden_layers", "patch_size", "projection_dim")


def _legacy_config(cfg) -> dict[str, Any]:
    """config.json for transformers 4.31 (CLIPVisionModelWithProjection): every CLIPVisionConfig field written
    out (none left to a default), ``torch_dtype`` (5.x writes ``dtype``), its version."""
    d = cfg.to_dict()
    out = {k: d[k] for k in _LEGACY_FIELDS}
    out.update(architectures=["CLIPVisionModelWithProjection"], model_type="clip_vision_model",
               torch_dtype="float32", transformers_version=LEGACY_TRANSFORMERS_VERSION)
    return dict(sorted(out.items()))


def write_legacy(output: Path, cfg, state: dict[str, torch.Tensor], processor, position_ids: bool = False) -> Path:
    """``output/legacy``: the layout transformers 4.31-4.36 read (``vision_model.*`` + ``visual_projection.weight``,
    safetensors with ``format: pt`` metadata, which 4.x requires), its config and preprocessor."""
    from safetensors.torch import save_file

    folder = output / "legacy"
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    if position_ids:
        n = (cfg.image_size // cfg.patch_size) ** 2 + 1
        tensors[HF_PREFIX + "embeddings.position_ids"] = torch.arange(n, dtype=torch.int64).unsqueeze(0)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(_legacy_config(cfg), indent=2) + "\n")
    processor.save_pretrained(folder)
    return folder


def export_vision_tower(
    checkpoint: str | Path | None,
    model_name: str | None,
    image_size: int | None = None,
    output: str | Path = "vision_tower",
    legacy_layout: bool = False,
    interpolation: str = "bicubic",
    align_corners: bool = True,
    force_quick_gelu: bool = False,
    legacy_position_ids: bool = False,
    allow_torchscript: bool = False,
) -> Path:
    """Export ``model_name``'s vision tower from ``checkpoint`` (a file or a checkpoint folder; None: random init, for
    tests) to a transformers folder at ``image_size`` (None/0: the model's own size). Returns the output folder.
    A TorchScript checkpoint is refused unless ``allow_torchscript`` (loading it runs code from the file)."""
    import open_clip
    import transformers
    from transformers import CLIPVisionModelWithProjection

    from clip_pretrain.identity import IdentityError, read_identity, resolve_model
    from clip_pretrain.models import create_clip

    if interpolation not in MODES:
        raise ExportError(f"interpolation {interpolation!r} is not one of {', '.join(MODES)}")
    try:  # the model (and its activation) recorded with the weights, or --model
        model_name = resolve_model(model_name, read_identity(checkpoint) if checkpoint else None, str(checkpoint or ""))
    except IdentityError as exc:
        raise ExportError(str(exc)) from None
    check_model_config(model_name, image_size)
    output = Path(output).expanduser()
    if output.exists() and not output.is_dir():
        raise ExportError(f"--output {output}: exists and is not a folder")
    bundle = create_clip(model_name, pretrained=checkpoint, force_quick_gelu=force_quick_gelu,
                         allow_torchscript=allow_torchscript)
    model = bundle.model.eval()
    visual = model.visual
    native = visual.image_size[0]
    cfg, state = convert_visual(visual, image_size, mode=interpolation, align_corners=align_corners)

    hf = CLIPVisionModelWithProjection(cfg)
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if missing or unexpected:  # the key map and the installed transformers disagree: a bug, never a user error
        raise ExportError(f"transformers {transformers.__version__} CLIPVisionModelWithProjection does not match "
                          f"the key map: missing {missing[:5]}, unexpected {unexpected[:5]}")
    output.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(output, safe_serialization=True)
    pp = open_clip.get_model_preprocess_cfg(model)
    processor = image_processor(cfg.image_size, pp["mean"], pp["std"], pp.get("interpolation", "bicubic"),
                                pp.get("resize_mode", "shortest"))
    processor.save_pretrained(output)
    if legacy_layout:
        write_legacy(output, cfg, state, processor, position_ids=legacy_position_ids)
    info = {
        "source_checkpoint": str(checkpoint) if checkpoint else None,
        "model": model_name,
        "native_image_size": native,
        "image_size": cfg.image_size,
        "patch_size": cfg.patch_size,
        "positions": (cfg.image_size // cfg.patch_size) ** 2 + 1,
        "native_positions": (native // cfg.patch_size) ** 2 + 1,
        "interpolation": interpolation if cfg.image_size != native else None,
        "align_corners": align_corners if cfg.image_size != native else None,
        "hidden_act": cfg.hidden_act,
        "mean": list(pp["mean"]),
        "std": list(pp["std"]),
        "legacy_layout": "legacy/" if legacy_layout else None,
        "versions": {"transformers": transformers.__version__, "open_clip": open_clip.__version__,
                     "torch": torch.__version__},
        "features_for_llava": "hidden_states[-2] without the CLS token (vision_feature_layer=-2, 'default')",
    }
    (output / "export_info.json").write_text(json.dumps(info, indent=2) + "\n")
    log.info("exported %s vision tower (%d px, %d positions, %s) to %s", model_name, cfg.image_size,
             info["positions"], cfg.hidden_act, output)
    return output


# --------------------------------------------------------------------------------------------------------------
# command-line config


def _opt(default, help_text: str):
    return field(default=default, metadata={"help": help_text})


@dataclass
class ExportConfig:
    checkpoint: str = _opt("", "stage-1 checkpoint: step_N.pt, final.safetensors, open_clip .pt/.bin, a checkpoint "
                               "folder, or OpenAI TorchScript .pt (with --allow-torchscript)")
    model: str = _opt("", "open_clip model name the checkpoint was trained as (ViT-L-14-336, rs-tiny...); read from "
                          "the checkpoint's open_clip_config.json when it has one, so only needed for other files")
    image_size: int = _opt(0, "exported resolution, a multiple of the patch size (GeoChat: 504); 0 = the model's own")
    output: str = _opt("", "output folder (transformers CLIPVisionModelWithProjection + CLIPImageProcessor)")
    legacy_layout: bool = _opt(False, "also write OUTPUT/legacy for transformers 4.31-4.36 (GeoChat)")
    legacy_position_ids: bool = _opt(False, "put the vision_model.embeddings.position_ids buffer in the legacy "
                                            "weights (strict loaders written for transformers <= 4.30)")
    interpolation: str = _opt("bicubic", f"position-embedding interpolation: {', '.join(MODES)}")
    align_corners: bool = _opt(True, "F.interpolate align_corners (GeoChat: true)")
    force_quick_gelu: bool = _opt(False, "the tower uses QuickGELU; only needed for weights that do not record it "
                                         "(this toolkit's checkpoints, hub snapshots and OpenAI weights do)")
    random_init: bool = _opt(False, "export a randomly initialised tower (smoke tests); no --checkpoint")
    allow_torchscript: bool = _opt(False, TORCHSCRIPT_HELP)

    def validate(self) -> None:
        if not self.model and self.random_init:
            raise ConfigError("--model is required with --random-init (the open_clip model name, e.g. ViT-L-14-336)")
        if not self.output:
            raise ConfigError("--output is required (the folder to write)")
        if not self.checkpoint and not self.random_init:
            raise ConfigError("--checkpoint is required (or --random-init for a smoke test)")
        if self.checkpoint and self.random_init:
            raise ConfigError("--checkpoint and --random-init exclude each other")
        if self.checkpoint and not Path(self.checkpoint).expanduser().exists():
            raise ConfigError(f"--checkpoint {self.checkpoint}: no such file or folder")
        if self.image_size < 0:
            raise ConfigError(f"--image-size must be positive (or 0 for the model's own), got {self.image_size}")
        if self.interpolation not in MODES:
            raise ConfigError(f"--interpolation {self.interpolation!r} is not one of {', '.join(MODES)}")


def run_export(cfg: ExportConfig) -> Path:
    return export_vision_tower(
        cfg.checkpoint or None, cfg.model or None, cfg.image_size, cfg.output, legacy_layout=cfg.legacy_layout,
        interpolation=cfg.interpolation, align_corners=cfg.align_corners, force_quick_gelu=cfg.force_quick_gelu,
        legacy_position_ids=cfg.legacy_position_ids, allow_torchscript=cfg.allow_torchscript,
    )
