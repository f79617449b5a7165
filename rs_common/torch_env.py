"""Device and autocast helpers every torch stage uses (training, evaluation)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


def resolve_device(device: str | torch.device | None, error: type[Exception] = ValueError) -> torch.device:
    """``auto`` (or None) -> cuda when available, else cpu. A device name torch does not know, or CUDA asked for on a
    machine without it, raises ``error`` (the caller's own error type, so its command line reports it in one line)."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise error(f"device {str(device)!r} is not a device name (use cpu, cuda, cuda:N or auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise error(f"device {str(device)!r} asked for, but CUDA is not available here (use --device cpu)")
    return dev


def precision_autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """The autocast an open_clip ``--precision`` runs the forward pass under: ``amp`` = float16 autocast on CUDA
    (nothing on CPU, where amp is plain float32), ``amp_bf16`` = bfloat16 autocast on any device; every other
    precision (fp32, and the half-precision weights of fp16/bf16/pure_*) none."""
    if precision == "amp" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    if precision == "amp_bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()
