"""Spatial-Visual-View fusion: one cross-attention layer from SigLIP tokens to CUT3R tokens.

Parameter names equal the reference `fusion_block` (VLM-3R `CrossAttentionFusion`) so that
checkpoint keys `model.fusion_block.<name>` map one to one.
"""

from __future__ import annotations

import torch
from torch import nn


class CrossAttentionFusion(nn.Module):
    """Fuse visual tokens (B, N, d_clip) with geometry tokens (B, M, d_geo) into (B, N, d_clip).

    Order (as the reference): LayerNorm both inputs; query Linear(d_clip->d_attn); separate key
    and value Linear(d_geo->d_attn); batch-first multi-head attention with its own in/out
    projections; out Linear(d_attn->d_clip); LayerNorm; residual add of the raw visual tokens;
    dropout. 3D tokens never enter the LLM sequence; they only modify the visual tokens.
    """

    def __init__(self, d_clip: int, d_geometry: int, num_heads: int, d_attn: int | None = None,
                 dropout: float = 0.1) -> None:
        """Build the block; `d_attn` defaults to `d_clip` as in the reference."""
        super().__init__()
        d_attn = d_clip if d_attn is None else d_attn
        self.clip_norm = nn.LayerNorm(d_clip)
        self.spatial_encoder_norm = nn.LayerNorm(d_geometry)
        self.clip_query_proj = nn.Linear(d_clip, d_attn)
        self.spatial_encoder_key_proj = nn.Linear(d_geometry, d_attn)
        self.spatial_encoder_value_proj = nn.Linear(d_geometry, d_attn)
        self.cross_attention = nn.MultiheadAttention(embed_dim=d_attn, num_heads=num_heads,
                                                     batch_first=True)
        # The reference applies out_proj (d_attn -> d_clip) before out_norm, so the norm's width
        # is d_attn; both are equal (1152) in every released configuration.
        self.out_norm = nn.LayerNorm(d_attn)
        self.out_proj = nn.Linear(d_attn, d_clip)
        self.dropout = nn.Dropout(dropout)

    def forward(self, clip_features: torch.Tensor, geometry_tokens: torch.Tensor) -> torch.Tensor:
        """Return the fused visual tokens, same shape and dtype as `clip_features`."""
        query = self.clip_query_proj(self.clip_norm(clip_features))
        geometry = self.spatial_encoder_norm(geometry_tokens)
        key = self.spatial_encoder_key_proj(geometry)
        value = self.spatial_encoder_value_proj(geometry)
        attended, _ = self.cross_attention(query=query, key=key, value=value, need_weights=False)
        fused = self.out_norm(self.out_proj(attended)) + clip_features
        return self.dropout(fused)
