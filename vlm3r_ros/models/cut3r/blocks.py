"""Transformer building blocks of CUT3R with the official parameter names.

Attribute names (``norm1``, ``attn.qkv``, ``cross_attn.projq``, ``mlp.fc1``, ``norm_y``,
``proj`` of the patch embedding, ...) are part of the checkpoint format: renaming one
breaks loading of the official weights.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from vlm3r_ros.models.cut3r.rope import RoPE2D


def layer_norm(dim: int, eps: float = 1e-6) -> nn.LayerNorm:
    """Return the LayerNorm used throughout CUT3R (eps 1e-6, affine)."""
    return nn.LayerNorm(dim, eps=eps)


class Mlp(nn.Module):
    """Two-layer perceptron with GELU (timm layout: ``fc1``, ``act``, ``fc2``)."""

    def __init__(
        self,
        in_features: int,
        hidden_features: Optional[int] = None,
        out_features: Optional[int] = None,
    ) -> None:
        """Create ``in -> hidden -> out``; hidden and out default to ``in_features``."""
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``fc2(gelu(fc1(x)))``."""
        return self.fc2(self.act(self.fc1(x)))


def _apply_rope(
    rope: Optional[RoPE2D], t: torch.Tensor, pos: Optional[torch.Tensor],
    fp16_rounding: bool = False,
) -> torch.Tensor:
    """Return ``t`` rotated by RoPE at ``pos`` in ``t``'s dtype (``t`` if no RoPE/positions).

    The rotation is computed in float32, as the official decoders and ray-map encoder do.
    With ``fp16_rounding`` the input is rounded to float16 first and the result to float16
    before the cast back, as the official image encoder (croco ``blocks.py``) does around
    its CUDA RoPE kernel (float16 tokens in, float32 arithmetic, float16 out), whatever
    the model's dtype.
    """
    if rope is None or pos is None:
        return t
    if fp16_rounding:
        return rope(t.to(torch.float16), pos).to(torch.float16).to(t.dtype)
    return rope(t, pos).to(t.dtype)


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection and optional 2D RoPE.

    ``rope_fp16_rounding`` (default False: RoPE exactly in float32) rounds q and k to
    float16 around RoPE as the official image encoder does; it has no parameters, so it
    changes no checkpoint key.
    """

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool = False, rope: Optional[RoPE2D] = None
    ) -> None:
        """Create attention over ``dim`` features split into ``num_heads`` heads."""
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rope = rope
        self.rope_fp16_rounding = False

    def forward(self, x: torch.Tensor, xpos: Optional[torch.Tensor]) -> torch.Tensor:
        """Return the attention output for tokens ``x`` ``(B, N, C)`` at ``xpos``."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        q = _apply_rope(self.rope, q, xpos, self.rope_fp16_rounding)
        k = _apply_rope(self.rope, k, xpos, self.rope_fp16_rounding)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class CrossAttention(nn.Module):
    """Multi-head cross-attention with separate ``projq/projk/projv`` and 2D RoPE."""

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool = False, rope: Optional[RoPE2D] = None
    ) -> None:
        """Create cross-attention over ``dim`` features with ``num_heads`` heads."""
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.projq = nn.Linear(dim, dim, bias=qkv_bias)
        self.projk = nn.Linear(dim, dim, bias=qkv_bias)
        self.projv = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """Reshape ``(B, N, C)`` to ``(B, heads, N, C/heads)``."""
        b, n, c = t.shape
        return t.reshape(b, n, self.num_heads, c // self.num_heads).permute(0, 2, 1, 3)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        qpos: Optional[torch.Tensor],
        kpos: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """Return ``query`` tokens attended over ``key``/``value`` tokens."""
        b, nq, c = query.shape
        q = _apply_rope(self.rope, self._heads(self.projq(query)), qpos)
        k = _apply_rope(self.rope, self._heads(self.projk(key)), kpos)
        v = self._heads(self.projv(value))
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, nq, c))


class Block(nn.Module):
    """Pre-norm ViT block: self-attention then MLP, each with a residual."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        rope: Optional[RoPE2D] = None,
        eps: float = 1e-6,
    ) -> None:
        """Create a block of width ``dim``."""
        super().__init__()
        self.norm1 = layer_norm(dim, eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, rope=rope)
        self.norm2 = layer_norm(dim, eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, xpos: Optional[torch.Tensor]) -> torch.Tensor:
        """Return the block output for tokens ``x`` at positions ``xpos``."""
        x = x + self.attn(self.norm1(x), xpos)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """Self-attention, cross-attention to a memory ``y``, then MLP (CroCo decoder)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        norm_mem: bool = True,
        rope: Optional[RoPE2D] = None,
        eps: float = 1e-6,
    ) -> None:
        """Create a decoder block; ``norm_mem`` adds ``norm_y`` on the memory tokens."""
        super().__init__()
        self.norm1 = layer_norm(dim, eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, rope=rope)
        self.cross_attn = CrossAttention(dim, num_heads, qkv_bias=qkv_bias, rope=rope)
        self.norm2 = layer_norm(dim, eps)
        self.norm3 = layer_norm(dim, eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_y: nn.Module = layer_norm(dim, eps) if norm_mem else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        xpos: Optional[torch.Tensor],
        ypos: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """Return updated ``x``; the memory ``y`` is not modified."""
        x = x + self.attn(self.norm1(x), xpos)
        y_ = self.norm_y(y)
        x = x + self.cross_attn(self.norm2(x), y_, y_, xpos, ypos)
        return x + self.mlp(self.norm3(x))


class ModLN(nn.Module):
    """LayerNorm modulated by a condition vector (adaLN: shift and scale from an MLP)."""

    def __init__(self, inner_dim: int, mod_dim: int, eps: float = 1e-6) -> None:
        """Create the norm of ``inner_dim`` features conditioned on ``mod_dim`` features."""
        super().__init__()
        self.norm = nn.LayerNorm(inner_dim, eps=eps)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(mod_dim, inner_dim * 2))

    def forward(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        """Return ``norm(x) * (1 + scale) + shift`` with ``shift, scale = mlp(mod)``."""
        shift, scale = self.mlp(mod).chunk(2, dim=-1)
        return self.norm(x) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class ConditionModulationBlock(nn.Module):
    """ViT block whose norms are modulated by the camera (pose) token."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        rope: Optional[RoPE2D] = None,
    ) -> None:
        """Create the block of width ``dim`` (condition of the same width)."""
        super().__init__()
        self.norm1 = ModLN(dim, dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, rope=rope)
        self.norm2 = ModLN(dim, dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(
        self, x: torch.Tensor, mod: torch.Tensor, xpos: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """Return the block output for ``x`` ``(B, N, C)`` conditioned on ``mod`` ``(B, C)``."""
        x = x + self.attn(self.norm1(x, mod), xpos)
        return x + self.mlp(self.norm2(x, mod))


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding (``proj`` convolution, no norm)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        """Create a ``patch_size`` x ``patch_size`` embedding of ``in_chans`` channels."""
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return patch tokens ``(B, (H/p)*(W/p), C)`` in row-major order.

        Raises:
            ValueError: if H or W is not a multiple of the patch size.
        """
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f'image size {h}x{w} is not a multiple of the patch size {self.patch_size}'
            )
        return self.proj(x).flatten(2).transpose(1, 2)


def patch_positions(
    grid_h: int, grid_w: int, batch: int, device: torch.device
) -> torch.Tensor:
    """Return ``(batch, grid_h*grid_w, 2)`` int64 ``(y, x)`` positions in row-major order."""
    ys = torch.arange(grid_h, device=device)
    xs = torch.arange(grid_w, device=device)
    pos = torch.cartesian_prod(ys, xs)
    return pos[None].expand(batch, -1, -1)
