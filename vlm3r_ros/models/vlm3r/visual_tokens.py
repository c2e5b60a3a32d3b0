"""Projector, 2x2 spatial pooling and newline tokens that turn vision features into LLM tokens.

Shapes at real size: (729, 1152) SigLIP tokens -> projector (729, 3584) -> bilinear pooling to
14x14 = (196, 3584) -> 'grid' newline tokens, one after each row: (14 * 15 = 210, 3584).
Concatenating per-frame results in frame order gives exactly the reference's video sequence
(its `add_token_per_grid` appends the newline to each row of each frame).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def build_mlp2x_gelu(in_dim: int, out_dim: int) -> nn.Sequential:
    """Return the mlp2x_gelu projector: Linear(in->out), GELU, Linear(out->out).

    Indices 0 and 2 hold the weights, as in the reference `mm_projector.0` / `mm_projector.2`.
    """
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


def pool_tokens(tokens: torch.Tensor, grid: int, stride: int, mode: str) -> torch.Tensor:
    """Pool (N, grid*grid, D) row-major tokens by `stride`; return (N, g*g, D).

    'bilinear' resizes to ceil(grid / stride) per side (27 -> 14, the evaluation setting);
    'average' and 'max' use non-overlapping windows (27 -> 13, the demo setting).
    Raises ValueError for a token count that is not grid*grid or an unknown mode.
    """
    frames, count, dim = tokens.shape
    if count != grid * grid:
        raise ValueError(f'expected {grid * grid} tokens for a {grid}x{grid} grid, got {count}')
    if stride == 1:
        return tokens
    image = tokens.view(frames, grid, grid, dim).permute(0, 3, 1, 2)
    if mode == 'bilinear':
        side = math.ceil(grid / stride)
        pooled = F.interpolate(image, size=(side, side), mode='bilinear')
    elif mode == 'average':
        pooled = F.avg_pool2d(image, stride)
    elif mode == 'max':
        pooled = F.max_pool2d(image, stride)
    else:
        raise ValueError(f'unknown spatial pool mode {mode!r}')
    return pooled.permute(0, 2, 3, 1).reshape(frames, -1, dim)


def add_newline_tokens(tokens: torch.Tensor, newline: torch.Tensor, position: str) -> torch.Tensor:
    """Append newline tokens to one frame's (g*g, D) pooled tokens; return (T_frame, D).

    'grid': one newline after each row (g * (g + 1) tokens); 'frame': one at the end of the frame
    (g*g + 1); 'no_token': unchanged. Raises ValueError for an unknown position or a non-square
    token count.
    """
    count, dim = tokens.shape
    if position == 'no_token':
        return tokens
    newline = newline.to(dtype=tokens.dtype, device=tokens.device).reshape(1, dim)
    if position == 'frame':
        return torch.cat([tokens, newline], dim=0)
    if position != 'grid':
        raise ValueError(f'unknown newline position {position!r}')
    side = math.isqrt(count)
    if side * side != count:
        raise ValueError(f'grid newlines need a square token count, got {count}')
    rows = tokens.view(side, side, dim)
    with_newline = torch.cat([rows, newline.expand(side, 1, dim)], dim=1)
    return with_newline.reshape(side * (side + 1), dim)
