"""INF-LLaVA's dual-perspective cropping, as pure tensor functions (pixels and feature maps alike).

An image resized to ``N x S`` px gives ``N x N`` *local* crops (contiguous ``S x S`` blocks, row-major) and ``N x N``
*global* crops (strided pixels: crop ``(i, j)`` is ``x[:, :, i::N, j::N]``, every crop spans the whole scene at
``1/N`` resolution). With the whole image resized to ``S`` first, that is ``2N^2 + 1`` sub-images, the layout of a
dual-perspective GeoChat's ``pixel_values``: ``(batch, 2N^2 + 1, 3, S, S)`` = ``[resized, local 0..N^2-1, global
0..N^2-1]`` (index ``k = i * N + j``).

The inverses (:func:`tile_local`, :func:`interleave_global`) put sub-images, or the vision tower's feature maps of
them, back by their 2-D positions: local crops side by side; global crops interleaved, so the feature at ``(u, v)`` of
global crop ``(i, j)`` lands at ``(u * N + i, v * N + j)`` of the high-resolution map (the patch it saw covers the
pixels around there).
"""

from __future__ import annotations

import torch

HIGH_RES_NONE = "none"
DUAL_PERSPECTIVE = "dual-perspective"
HIGH_RES_MODES = (HIGH_RES_NONE, DUAL_PERSPECTIVE)
DEFAULT_GRID = 3  # INF-LLaVA's N for 336 px -> 1008 px; here 504 px -> 1512 px


def sub_image_count(grid: int) -> int:
    """Sub-images per image through the vision tower: ``2 N^2 + 1``."""
    return 2 * grid * grid + 1


def _check(x: torch.Tensor, grid: int) -> tuple[int, int]:
    if x.dim() != 4:
        raise ValueError(f"expected (batch, channels, height, width), got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if grid < 1 or h % grid or w % grid:
        raise ValueError(f"a {h}x{w} map does not split into a {grid}x{grid} grid")
    return h // grid, w // grid


def local_crops(x: torch.Tensor, grid: int) -> torch.Tensor:
    """``(B, C, N*h, N*w)`` -> ``(B, N^2, C, h, w)``: contiguous blocks, row-major (crop ``r * N + c`` is rows
    ``r*h:(r+1)*h``, columns ``c*w:(c+1)*w``)."""
    h, w = _check(x, grid)
    b, c = x.shape[:2]
    return x.reshape(b, c, grid, h, grid, w).permute(0, 2, 4, 1, 3, 5).reshape(b, grid * grid, c, h, w)


def global_crops(x: torch.Tensor, grid: int) -> torch.Tensor:
    """``(B, C, N*h, N*w)`` -> ``(B, N^2, C, h, w)``: crop ``i * N + j`` is ``x[:, :, i::N, j::N]``."""
    h, w = _check(x, grid)
    b, c = x.shape[:2]
    return x.reshape(b, c, h, grid, w, grid).permute(0, 3, 5, 1, 2, 4).reshape(b, grid * grid, c, h, w)


def _check_crops(crops: torch.Tensor, grid: int) -> None:
    if crops.dim() != 5 or crops.shape[1] != grid * grid:
        raise ValueError(f"expected (batch, {grid * grid}, channels, h, w), got shape {tuple(crops.shape)}")


def tile_local(crops: torch.Tensor, grid: int) -> torch.Tensor:
    """The inverse of :func:`local_crops`: ``(B, N^2, C, h, w)`` -> ``(B, C, N*h, N*w)``."""
    _check_crops(crops, grid)
    b, _, c, h, w = crops.shape
    return crops.reshape(b, grid, grid, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(b, c, grid * h, grid * w)


def interleave_global(crops: torch.Tensor, grid: int) -> torch.Tensor:
    """The inverse of :func:`global_crops`: ``(B, N^2, C, h, w)`` -> ``(B, C, N*h, N*w)``."""
    _check_crops(crops, grid)
    b, _, c, h, w = crops.shape
    return crops.reshape(b, grid, grid, c, h, w).permute(0, 3, 4, 1, 5, 2).reshape(b, c, h * grid, w * grid)


def dual_perspective_images(resized: torch.Tensor, high: torch.Tensor, grid: int) -> torch.Tensor:
    """``pixel_values`` of a dual-perspective GeoChat: ``resized`` (B, 3, S, S) and ``high`` (B, 3, N*S, N*S) ->
    ``(B, 2N^2 + 1, 3, S, S)`` = ``[resized, local crops, global crops]``."""
    s = resized.shape[-1]
    if tuple(high.shape[-2:]) != (grid * s, grid * s) or resized.shape[-2] != s:
        raise ValueError(f"high-resolution image {tuple(high.shape[-2:])} is not {grid} x the resized "
                         f"{tuple(resized.shape[-2:])}")
    return torch.cat([resized.unsqueeze(1), local_crops(high, grid), global_crops(high, grid)], dim=1)
