"""The optimizer of stage-1 training: ``--opt adamw`` (open_clip_train's) or ``--opt adam`` (RemoteCLIP's), both on
open_clip_train's two parameter groups (no weight decay on gains, biases, 1-D parameters and logit_scale)."""

from __future__ import annotations

import torch

from clip_pretrain.config import TrainConfig


def param_groups(model: torch.nn.Module, wd: float) -> list[dict]:
    """No weight decay on gains, biases, 1-D params and logit_scale (as open_clip_train)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exclude else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": wd}]


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """``cfg.opt``'s optimizer over :func:`param_groups`: AdamW decays the weights apart from the gradient
    (decoupled); Adam adds ``wd x weight`` to the gradient of the decayed group (L2), which its moment estimates then
    scale like the rest of the gradient."""
    kind = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[cfg.opt]
    return kind(param_groups(model, cfg.wd), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
