"""2D rotary position embedding (RoPE) as used by CroCo / DUSt3R / CUT3R.

The feature dimension of each head is split in two halves: the first half is rotated
by the token's y position, the second by its x position. Inside a half of size ``D/2``
the pairs are ``(i, i + D/4)`` with inverse frequency ``base ** (-i / (D/4))``.

Angles are computed as ``position * inv_freq`` directly, like the official CUDA kernel.
The official pure-PyTorch fallback looks the angles up in a table indexed by position,
which fails (or, exported to ONNX, silently wraps around) for the pose token at
position (-1, -1); computing the product avoids that.
"""

from __future__ import annotations

import torch
from torch import nn


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Return ``cat(-x2, x1)`` for ``x = cat(x1, x2)`` along the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RoPE2D(nn.Module):
    """Apply 2D RoPE to attention queries or keys.

    Has no parameters or buffers, so it contributes no checkpoint keys.
    """

    def __init__(self, freq: float = 100.0) -> None:
        """Create the embedding with base frequency ``freq`` (100 for ``RoPE100``)."""
        super().__init__()
        self.base = float(freq)

    def _cos_sin(
        self, pos1d: torch.Tensor, half_dim: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return cos and sin of shape ``(B, 1, N, half_dim)`` for positions ``(B, N)``."""
        quarter = half_dim // 2
        exponent = torch.arange(quarter, device=pos1d.device, dtype=torch.float32) / quarter
        inv_freq = 1.0 / (self.base ** exponent)
        angles = pos1d.to(torch.float32)[..., None] * inv_freq  # (B, N, quarter)
        angles = torch.cat((angles, angles), dim=-1)[:, None]  # (B, 1, N, half_dim)
        return angles.cos(), angles.sin()

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate ``tokens`` by their 2D positions.

        Args:
            tokens: ``(B, heads, N, D)``; ``D`` must be a multiple of 4.
            positions: ``(B, N, 2)`` integer or float ``(y, x)`` positions; negative
                values (the pose token's ``-1``) are valid.

        Returns:
            The rotated tokens in float32, shape ``(B, heads, N, D)``.

        Raises:
            ValueError: if shapes do not match or ``D`` is not a multiple of 4.
        """
        if tokens.dim() != 4 or positions.dim() != 3 or positions.shape[-1] != 2:
            raise ValueError(
                f'expected tokens (B,H,N,D) and positions (B,N,2), got '
                f'{tuple(tokens.shape)} and {tuple(positions.shape)}'
            )
        dim = tokens.shape[-1]
        if dim % 4:
            raise ValueError(f'RoPE2D needs a head dim that is a multiple of 4, got {dim}')
        tokens = tokens.to(torch.float32)
        y, x = tokens.chunk(2, dim=-1)
        cos_y, sin_y = self._cos_sin(positions[..., 0], dim // 2)
        cos_x, sin_x = self._cos_sin(positions[..., 1], dim // 2)
        y = y * cos_y + _rotate_half(y) * sin_y
        x = x * cos_x + _rotate_half(x) * sin_x
        return torch.cat((y, x), dim=-1)
