"""Which weights a GeoChat fine-tuning run trains (``--tune``) and what it saves; multi-layer visual features.

* ``lora`` (the default, GeoChat's recipe): peft LoRA on every nn.Linear of the language model but ``lm_head``
  (:func:`vlm_finetune.train.prepare_model`); saves ``adapter/`` and ``merged/``.
* ``unfrozen-attn-norm`` (EarthGPT's cross-modal stage): the language model's self-attention projections (q/k/v/o)
  and its RMSNorm weights are trained, everything else is frozen; saves the full model to ``merged/``.
* ``bias`` (EarthGPT's instruction stage): every nn.Linear of the language model (not ``lm_head``) is wrapped by
  :class:`ScaleShiftLinear`, ``y = (W x + b) * scale + shift`` with a per-output-channel ``scale`` (init 1) and
  ``shift`` (init 0); only those are trained. Saves ``tuned/`` (the trained tensors alone, safetensors + json; apply
  them to the base model with :func:`load_tuned`) and ``merged/`` (scale and shift folded into the weights and a bias:
  ``W' = scale * W``, ``b' = scale * b + shift``; the Llama config then records ``attention_bias``/``mlp_bias``).

In every mode the vision tower stays frozen unless ``--freeze-vision-tower false``, the projector is trained with
``--train-projector`` and a dual-perspective module always.

``--vision-layers -2 -5 -8`` (EarthGPT's vision side): the tower's hidden states of those layers, concatenated on
channels, go to the projector (transformers' Llava takes ``vision_feature_layer`` as a list natively); the projector
is rebuilt for ``len(layers) x`` the tower width (random init, so it is trained) when the model's layer count differs,
and the list is saved in the config, so ``load_geochat`` rebuilds the same shapes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from vlm_finetune.data import FinetuneError

TUNE_MODES = ("lora", "unfrozen-attn-norm", "bias")
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
TUNED_WEIGHTS = "tuned.safetensors"
TUNED_SETTINGS = "tuned.json"


def check_tune(mode: str) -> None:
    if mode not in TUNE_MODES:
        raise FinetuneError(f"--tune {mode!r}: not one of {', '.join(TUNE_MODES)}")


class ScaleShiftLinear(nn.Module):
    """An nn.Linear followed by a learnable per-output-channel scale (init 1) and shift (init 0), in float32."""

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base
        self.scale = nn.Parameter(torch.ones(base.out_features, device=base.weight.device))
        self.shift = nn.Parameter(torch.zeros(base.out_features, device=base.weight.device))

    def forward(self, x):
        y = self.base(x)
        return y * self.scale.to(y.dtype) + self.shift.to(y.dtype)

    def merged(self) -> nn.Linear:
        """A plain nn.Linear (with a bias) computing the same: ``W' = scale * W``, ``b' = scale * b + shift``."""
        w = self.base.weight
        out = nn.Linear(self.base.in_features, self.base.out_features, bias=True, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            scale = self.scale.float()
            bias = self.base.bias.float() if self.base.bias is not None else torch.zeros_like(scale)
            out.weight.copy_((w.float() * scale[:, None]).to(w.dtype))
            out.bias.copy_((bias * scale + self.shift.float()).to(w.dtype))
        return out


def _language_model(model) -> nn.Module:
    return model.model.language_model


def _set_child(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def wrap_scale_shift(model) -> list[str]:
    """Wrap each nn.Linear of the language model in a :class:`ScaleShiftLinear` (idempotent); returns their names
    relative to ``model.model.language_model``."""
    language = _language_model(model)
    inside = {f"{n}.base" for n, m in language.named_modules() if isinstance(m, ScaleShiftLinear)}
    names = [n for n, m in language.named_modules() if isinstance(m, nn.Linear) and n not in inside]
    for name in names:
        _set_child(language, name, ScaleShiftLinear(language.get_submodule(name)))
    return sorted(n for n, m in language.named_modules() if isinstance(m, ScaleShiftLinear))


def merge_scale_shift(model):
    """Fold every :class:`ScaleShiftLinear` into a plain biased nn.Linear (in place) and record the biases in the text
    config (Llama's ``attention_bias``/``mlp_bias``), so the saved model loads with the same shapes. Returns it."""
    language = _language_model(model)
    wrapped = [(n, m) for n, m in language.named_modules() if isinstance(m, ScaleShiftLinear)]
    if not wrapped:
        return model
    text = model.config.text_config
    missing = [k for k in ("attention_bias", "mlp_bias") if not hasattr(text, k)]
    if missing:
        raise FinetuneError(f"--tune bias: the language model ({text.model_type}) config has no {missing}, so a "
                            "merged model cannot record its new biases; use tuned/ with load_tuned")
    for name, module in wrapped:
        _set_child(language, name, module.merged())
    text.attention_bias = True
    text.mlp_bias = True
    return model


def _unfreeze_extras(model, cfg) -> None:
    from vlm_finetune.dual_perspective import is_dual_perspective

    if cfg.train_projector:
        model.model.multi_modal_projector.requires_grad_(True)
    if is_dual_perspective(model.config):
        model.model.dual_perspective.requires_grad_(True)
    if not cfg.freeze_vision_tower:
        model.model.vision_tower.requires_grad_(True)


def unfreeze_attn_norm(model) -> None:
    """Trainable: the language model's q/k/v/o projections and every RMSNorm weight (layers and final norm)."""
    for name, module in _language_model(model).named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if (leaf in ATTENTION_PROJECTIONS and "self_attn" in name) or type(module).__name__.endswith("RMSNorm"):
            module.requires_grad_(True)


def prepare_tuning(model, cfg):
    """Freeze ``model`` and unfreeze what ``cfg.tune`` trains (non-LoRA modes; ``lora`` goes through peft in
    :func:`vlm_finetune.train.prepare_model`). Trainable weights become float32. Returns the model."""
    check_tune(cfg.tune)
    model.requires_grad_(False)
    if cfg.tune == "unfrozen-attn-norm":
        unfreeze_attn_norm(model)
    elif cfg.tune == "bias":
        wrap_scale_shift(model)
        for module in _language_model(model).modules():
            if isinstance(module, ScaleShiftLinear):
                module.scale.requires_grad_(True)
                module.shift.requires_grad_(True)
    _unfreeze_extras(model, cfg)
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    if cfg.gradient_checkpointing:
        model.enable_input_require_grads()
    return model


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_tuned(model, tuned_dir, settings: dict) -> Path:
    """The trained tensors alone (``tuned.safetensors``) and what rebuilds their places (``tuned.json``)."""
    from safetensors.torch import save_file

    from rs_common.files import atomic_write_json

    out = Path(tuned_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(trainable_state(model), str(out / TUNED_WEIGHTS))
    atomic_write_json(out / TUNED_SETTINGS, settings)
    return out


def apply_tuned(model, tuned_dir, merge: bool = False):
    """Apply a ``tuned/`` folder to a base GeoChat model (wraps its linears for ``bias``, sets the feature layers,
    loads the tensors, names any that do not fit); ``merge`` folds scale and shift into the weights."""
    from safetensors.torch import load_file

    tuned = Path(tuned_dir)
    if not (tuned / TUNED_WEIGHTS).is_file():
        raise FinetuneError(f"{tuned}: no {TUNED_WEIGHTS} (a --tune bias run's tuned/ folder)")
    settings = json.loads((tuned / TUNED_SETTINGS).read_text()) if (tuned / TUNED_SETTINGS).is_file() else {}
    layers = settings.get("vision_feature_layer")
    if layers is not None and layers != model.config.vision_feature_layer:
        set_vision_layers(model, layers)
    if settings.get("tune", "bias") == "bias":
        wrap_scale_shift(model)
    state = load_file(str(tuned / TUNED_WEIGHTS))
    own = dict(model.named_parameters())
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise FinetuneError(f"{tuned}: tensors this model has no place for, e.g. {unknown[:3]}")
    with torch.no_grad():
        for name, value in state.items():
            if own[name].shape != value.shape:
                raise FinetuneError(f"{tuned}: {name} has shape {tuple(value.shape)}, the model's is "
                                    f"{tuple(own[name].shape)}")
            own[name].data = value.to(own[name].device, own[name].dtype)
    return merge_scale_shift(model) if merge else model


def load_tuned(base_dir, tuned_dir, merge: bool = False, dtype=None):
    """``load_geochat(base_dir)`` with a ``tuned/`` folder applied (:func:`apply_tuned`): a GeoChat handle."""
    from vlm_finetune.geochat import load_geochat

    chat = load_geochat(base_dir, dtype=dtype)
    apply_tuned(chat.model, tuned_dir, merge=merge)
    return chat


# ----------------------------------------------------------------------------------------------------------------
# multi-layer visual features
# ----------------------------------------------------------------------------------------------------------------


def set_vision_layers(model, layers, seed: int | None = None) -> bool:
    """Feed the projector the concatenated hidden states of the tower layers ``layers`` (a list; one layer is kept
    an int, as GeoChat's ``-2``). Rebuilds the projector (random init) when the input width changes; returns whether
    it did."""
    from vlm_finetune.parts import feature_layers, replace_projector

    n_hidden = model.config.vision_config.num_hidden_layers
    for layer in layers:
        if not -(n_hidden + 1) <= int(layer) <= n_hidden:
            raise FinetuneError(f"--vision-layers {layer}: the tower has hidden states 0..{n_hidden} "
                                f"(or -1..-{n_hidden + 1})")
    value = int(layers[0]) if len(layers) == 1 else [int(x) for x in layers]
    model.config.vision_feature_layer = value
    projector = model.model.multi_modal_projector
    if projector.linear_1.in_features == model.config.vision_config.hidden_size * feature_layers(model.config):
        return False
    replace_projector(model, seed)
    return True


def apply_vision_layers(model, cfg):
    """``cfg.vision_layers`` on ``model`` (nothing when empty); returns ``cfg``, with ``train_projector`` set when the
    projector was rebuilt (its random weights must be trained)."""
    import dataclasses
    import logging

    from vlm_finetune.dual_perspective import is_dual_perspective

    if not cfg.vision_layers:
        return cfg
    if is_dual_perspective(model.config):
        raise FinetuneError("--vision-layers: not available on a dual-perspective model (its enhancer is sized to "
                            "one layer's features)")
    if set_vision_layers(model, cfg.vision_layers, seed=cfg.seed) and not cfg.train_projector:
        logging.getLogger(__name__).warning("--vision-layers %s: a new projector for %d x the tower width, trained "
                                            "(--train-projector set)", cfg.vision_layers, len(cfg.vision_layers))
        return dataclasses.replace(cfg, train_projector=True)
    return cfg


def save_full_tuning(model, cfg) -> dict:
    """A non-LoRA run's own outputs beside ``merged/``: for ``bias``, ``OUTPUT/tuned`` (the trained tensors alone)."""
    if cfg.tune != "bias":
        return {}
    settings = {"tune": cfg.tune, "base_model": cfg.model,
                "vision_feature_layer": model.config.vision_feature_layer}
    return {"tuned": str(save_tuned(model, Path(cfg.output) / "tuned", settings))}
