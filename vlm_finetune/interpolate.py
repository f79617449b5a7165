"""Position-embedding interpolation for CLIP ViT towers run at a new resolution.

GeoChat runs CLIP ViT-L/14-336 at 504 px: the 24x24 patch grid (577 rows with the CLS row) becomes 36x36
(1297 rows). Its rule, followed here: keep the CLS row as it is, reshape the other rows to their square grid,
``F.interpolate(mode="bicubic", align_corners=True)`` to the new grid, flatten back row-major and put the CLS
row first again. (open_clip's own ``resize_pos_embed`` and transformers' ``interpolate_pos_encoding`` use
``align_corners=False``; both settings are offered.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# modes whose F.interpolate takes align_corners; the others refuse the argument
_ALIGNABLE = ("linear", "bilinear", "bicubic", "trilinear")
MODES = ("bicubic", "bilinear", "nearest", "nearest-exact", "area")


def grid_side(num_patches: int) -> int:
    """The side of a square patch grid of ``num_patches`` cells; a ValueError when it is not a square."""
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(
            f"position embedding has {num_patches} patch rows (+1 CLS row), which is not a square grid "
            f"({side}x{side}={side * side}, {side + 1}x{side + 1}={(side + 1) ** 2}); only square grids are supported"
        )
    return side


def valid_image_sizes(image_size: int, patch_size: int) -> tuple[int, int]:
    """The multiples of ``patch_size`` just below and just above ``image_size`` (equal when it divides)."""
    lower = (image_size // patch_size) * patch_size
    upper = lower if lower == image_size else lower + patch_size
    return lower, upper


def check_image_size(image_size: int, patch_size: int) -> int:
    """The patch grid side for ``image_size``; a ValueError naming the nearest valid sizes otherwise."""
    if image_size <= 0:
        raise ValueError(f"image size must be positive, got {image_size}")
    if image_size % patch_size:
        lower, upper = valid_image_sizes(image_size, patch_size)
        options = [f"{n} ({n // patch_size}x{n // patch_size} patches)" for n in (lower, upper) if n > 0]
        raise ValueError(
            f"image size {image_size} is not a multiple of the patch size {patch_size}; "
            f"nearest valid sizes: {' or '.join(options)}"
        )
    return image_size // patch_size


def resolve_image_size(requested: int | None, native: int, patch_size: int) -> int:
    """The image size policy of every stage-two tool: ``requested`` None or 0 means the model's own size
    (``native``); any other size must be a positive multiple of the patch size (:func:`check_image_size`, a
    ValueError naming the nearest valid sizes), e.g. GeoChat's 504 px for a patch-14 tower."""
    size = int(requested or native)
    check_image_size(size, int(patch_size))
    return size


def interpolate_pos_embed(
    pos: torch.Tensor,
    new_grid: int,
    mode: str = "bicubic",
    align_corners: bool = True,
) -> torch.Tensor:
    """``pos`` of shape ``(1 + g*g, D)`` (CLS row first) -> ``(1 + new_grid**2, D)``.

    The CLS row is kept; the ``g x g`` grid rows are resized with ``F.interpolate`` (in float32, cast back
    to ``pos.dtype``). The same grid returns a copy of ``pos``. A leading batch dim of 1 (``(1, 1+g*g, D)``,
    GeoChat's shape) is accepted and kept.
    """
    if mode not in MODES:
        raise ValueError(f"interpolation mode {mode!r} is not one of {', '.join(MODES)}")
    if new_grid <= 0:
        raise ValueError(f"new grid side must be positive, got {new_grid}")
    batched = pos.ndim == 3
    if batched:
        if pos.shape[0] != 1:
            raise ValueError(f"a batched position embedding must have batch size 1, got shape {tuple(pos.shape)}")
        pos = pos[0]
    if pos.ndim != 2 or pos.shape[0] < 2:
        raise ValueError(f"position embedding must be (1 + g*g, D) with a CLS row first, got shape {tuple(pos.shape)}")
    cls_row, grid_rows = pos[:1], pos[1:]
    old_grid = grid_side(grid_rows.shape[0])
    if old_grid == new_grid:
        out = pos.clone()
    else:
        dim = pos.shape[1]
        img = grid_rows.float().reshape(1, old_grid, old_grid, dim).permute(0, 3, 1, 2)  # (1, D, g, g)
        kwargs = {"align_corners": align_corners} if mode in _ALIGNABLE else {}
        img = F.interpolate(img, size=(new_grid, new_grid), mode=mode, **kwargs)
        grid_rows = img.permute(0, 2, 3, 1).reshape(new_grid * new_grid, dim).to(pos.dtype)
        out = torch.cat([cls_row, grid_rows], dim=0)
    return out.unsqueeze(0) if batched else out
