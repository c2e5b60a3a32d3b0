"""CUT3R (``ARCroco3DStereo``) as a per-frame recurrent step.

One call of :meth:`Cut3rModel.step` is one step of the official recurrent rollout
(``forward_recurrent``): encode the image (and optionally a ray map), read a pose token
(the learnt ``pose_token`` on the first frame, else a read from the pose memory), run
the state decoder and the image decoder side by side (each block of one attends to the
previous output of the other), predict points/confidence/pose with the head, write the
pose memory, and gate the state update. The state (``state_size`` tokens) and the pose
memory (``local_mem_size`` slots) have fixed sizes, so memory does not grow with the
number of frames.

Module names match the official checkpoints (see ``checkpoint.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from vlm3r_ros.models.cut3r.blocks import (
    Block,
    DecoderBlock,
    PatchEmbed,
    layer_norm,
    patch_positions,
)
from vlm3r_ros.models.cut3r.config import Cut3rConfig
from vlm3r_ros.models.cut3r.heads import build_head
from vlm3r_ros.models.cut3r.rope import RoPE2D


class LocalMemory(nn.Module):
    """Pose memory (``pose_retriever``): ``size`` slots of ``2*v_dim`` features.

    Each slot holds a key half (projected global image feature) and a value half (pose
    token). Writing and reading are two decoder blocks each, without RoPE.
    """

    def __init__(self, size: int, k_dim: int, v_dim: int, num_heads: int, depth: int = 2) -> None:
        """Create a memory of ``size`` slots for keys of ``k_dim`` and values of ``v_dim``."""
        super().__init__()
        self.v_dim = v_dim
        self.proj_q = nn.Linear(k_dim, v_dim)
        self.masked_token = nn.Parameter(torch.randn(1, 1, v_dim) * 0.2)
        self.mem = nn.Parameter(torch.randn(1, size, 2 * v_dim) * 0.2)
        self.write_blocks = nn.ModuleList([
            DecoderBlock(2 * v_dim, num_heads, mlp_ratio=4, qkv_bias=True, norm_mem=True)
            for _ in range(depth)
        ])
        self.read_blocks = nn.ModuleList([
            DecoderBlock(2 * v_dim, num_heads, mlp_ratio=4, qkv_bias=True, norm_mem=True)
            for _ in range(depth)
        ])

    def update_mem(
        self, mem: torch.Tensor, feat_k: torch.Tensor, feat_v: torch.Tensor
    ) -> torch.Tensor:
        """Return the memory after writing key ``feat_k`` ``(B,1,k_dim)`` / value ``feat_v``."""
        feat = torch.cat([self.proj_q(feat_k), feat_v], dim=-1)
        for blk in self.write_blocks:
            mem = blk(mem, feat, None, None)
        return mem

    def inquire(self, query: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        """Return the pose token ``(B,1,v_dim)`` read from ``mem`` for key ``query``."""
        x = self.proj_q(query)
        x = torch.cat([x, self.masked_token.expand(x.shape[0], -1, -1).to(x.dtype)], dim=-1)
        for blk in self.read_blocks:
            x = blk(x, mem, None, None)
        return x[..., -self.v_dim:]


@dataclass
class StepOutput:
    """Tensors produced by one recurrent step (batch first).

    Attributes:
        pts_self: ``(B, H, W, 3)`` points in the frame's own camera (metric).
        conf_self: ``(B, H, W)`` confidence of ``pts_self`` (>= 1).
        pts_world: ``(B, H, W, 3)`` points in the first frame's camera (metric).
        conf: ``(B, H, W)`` confidence of ``pts_world`` (>= 1).
        camera_pose: ``(B, 7)`` camera-to-world translation + quaternion (w, x, y, z).
        tokens: ``(B, 1 + P, dec_dim)`` last decoder layer (after its norm): pose token
            first, then P patch tokens in row-major order.
        state: ``(B, state_size, dec_dim)`` state after the gated update.
        mem: ``(B, local_mem_size, 2*dec_dim)`` pose memory after the gated update.
        rgb: optional ``(B, H, W, 3)`` colour estimate in [-1, 1].
    """

    pts_self: torch.Tensor
    conf_self: torch.Tensor
    pts_world: torch.Tensor
    conf: torch.Tensor
    camera_pose: torch.Tensor
    tokens: torch.Tensor
    state: torch.Tensor
    mem: torch.Tensor
    rgb: Optional[torch.Tensor] = None


class Cut3rModel(nn.Module):
    """CUT3R with the official parameter layout and a streaming ``step``.

    The downstream head runs in float32 even when the rest of the model is cast to
    half precision (as the official code does with autocast disabled in the head);
    use :meth:`to_inference_dtype` to cast.
    """

    def __init__(self, config: Cut3rConfig) -> None:
        """Build every module of ``config`` (random initialisation)."""
        super().__init__()
        self.config = config
        c = config
        ed, dd = c.enc_embed_dim, c.dec_embed_dim
        # Creation order follows the official model so state_dict() lists keys in the
        # same order as the checkpoints.
        self.patch_embed = PatchEmbed(c.patch_size, 3, ed)
        self.patch_embed_ray_map = PatchEmbed(c.patch_size, 6, ed)
        self.rope = RoPE2D(c.rope_freq)
        self.enc_blocks = nn.ModuleList([
            Block(ed, c.enc_num_heads, c.mlp_ratio, qkv_bias=True, rope=self.rope)
            for _ in range(c.enc_depth)
        ])
        self.enc_norm = layer_norm(ed)
        self.decoder_embed = nn.Linear(ed, dd)
        self.dec_blocks = nn.ModuleList([
            DecoderBlock(dd, c.dec_num_heads, c.mlp_ratio, qkv_bias=True,
                         norm_mem=c.norm_im2_in_dec, rope=self.rope)
            for _ in range(c.dec_depth)
        ])
        self.dec_norm = layer_norm(dd)
        self.enc_blocks_ray_map = nn.ModuleList([
            Block(ed, c.ray_enc_num_heads, 4, qkv_bias=True, rope=self.rope)
            for _ in range(c.ray_enc_depth)
        ])
        self.enc_norm_ray_map = layer_norm(ed)
        self.pose_token = nn.Parameter(torch.randn(1, 1, dd) * 0.02)
        self.pose_retriever = LocalMemory(c.local_mem_size, ed, dd, c.dec_num_heads)
        self.register_tokens = nn.Embedding(c.state_size, ed)
        self.masked_img_token = nn.Parameter(torch.randn(1, ed) * 0.02)
        self.masked_ray_map_token = nn.Parameter(torch.randn(1, ed) * 0.02)
        self.decoder_embed_state = nn.Linear(ed, dd)
        self.dec_blocks_state = nn.ModuleList([
            DecoderBlock(dd, c.state_dec_num_heads, c.mlp_ratio, qkv_bias=True,
                         norm_mem=c.norm_im2_in_dec, rope=self.rope)
            for _ in range(c.dec_depth)
        ])
        self.dec_norm_state = layer_norm(dd)
        self.downstream_head = build_head(c, self.rope)

    # ------------------------------------------------------------------ utilities
    @property
    def compute_dtype(self) -> torch.dtype:
        """Return the dtype of the backbone weights (the head stays float32)."""
        return self.patch_embed.proj.weight.dtype

    @property
    def device(self) -> torch.device:
        """Return the device of the weights."""
        return self.patch_embed.proj.weight.device

    @property
    def rope_fp16_rounding(self) -> bool:
        """Return whether the image encoder rounds q/k to float16 around RoPE."""
        return any(blk.attn.rope_fp16_rounding for blk in self.enc_blocks)

    def set_rope_fp16_rounding(self, enabled: bool) -> 'Cut3rModel':
        """Switch the reference's float16 rounding around RoPE; return ``self``.

        The official image encoder (croco ``Block``) casts q and k to float16 before its
        RoPE kernel and keeps the kernel's float16 output; the ray-map encoder and both
        decoders (dust3r blocks) rotate in float32. ``enabled=True`` reproduces that on
        ``enc_blocks`` only, at any model dtype; False (the default) rotates exactly in
        float32 everywhere. No weights change.
        """
        for blk in self.enc_blocks:
            blk.attn.rope_fp16_rounding = bool(enabled)
        return self

    def to_inference_dtype(self, dtype: torch.dtype) -> 'Cut3rModel':
        """Cast the backbone to ``dtype`` and keep the head in float32; return ``self``."""
        self.to(dtype)
        self.downstream_head.to(torch.float32)
        return self

    def state_positions(self, batch: int, device: torch.device) -> Optional[torch.Tensor]:
        """Return the RoPE positions of the state tokens ``(B, S, 2)`` (None for 'none').

        '2d' lays the tokens on a grid whose width is ``int(sqrt(S))`` rounded up to
        an even number (28 for 768 tokens), as in the official code.
        """
        s = self.config.state_size
        idx = torch.arange(s, device=device)
        if self.config.state_pe == 'none':
            return None
        if self.config.state_pe == '1d':
            pos = torch.stack([idx, idx], dim=-1)
        else:
            width = int(s ** 0.5)
            width = width + 1 if width % 2 == 1 else width
            pos = torch.stack([idx // width, idx % width], dim=-1)
        return pos[None].expand(batch, -1, -1)

    def init_state(self, batch: int = 1) -> torch.Tensor:
        """Return the initial state ``(B, state_size, dec_dim)`` (depends on weights only)."""
        ids = torch.arange(self.config.state_size, device=self.device)
        state = self.decoder_embed_state(self.register_tokens(ids))
        return state[None].expand(batch, -1, -1)

    def init_mem(self, batch: int = 1) -> torch.Tensor:
        """Return the initial pose memory ``(B, local_mem_size, 2*dec_dim)``."""
        return self.pose_retriever.mem.expand(batch, -1, -1)

    # ------------------------------------------------------------------- encoders
    def _encode(
        self, x: torch.Tensor, embed: PatchEmbed, blocks: nn.ModuleList, norm: nn.Module
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return tokens ``(B, P, enc_dim)`` and positions ``(B, P, 2)`` of one encoder."""
        p = self.config.patch_size
        tokens = embed(x.to(self.compute_dtype))
        pos = patch_positions(x.shape[-2] // p, x.shape[-1] // p, x.shape[0], x.device)
        for blk in blocks:
            tokens = blk(tokens, pos)
        return norm(tokens), pos

    def encode_image(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a normalised image ``(B, 3, H, W)``; return tokens and positions."""
        return self._encode(img, self.patch_embed, self.enc_blocks, self.enc_norm)

    def encode_ray_map(self, ray_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a ray map ``(B, 6, H, W)`` (origin, unit direction); return tokens, positions."""
        return self._encode(
            ray_map, self.patch_embed_ray_map, self.enc_blocks_ray_map, self.enc_norm_ray_map
        )

    # -------------------------------------------------------------------- decoder
    def decode(
        self,
        state: torch.Tensor,
        state_pos: Optional[torch.Tensor],
        feat: torch.Tensor,
        pos: torch.Tensor,
        pose_feat: torch.Tensor,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the two decoders side by side.

        Args:
            state: ``(B, S, dec_dim)`` current state.
            state_pos: state RoPE positions or None.
            feat: ``(B, P, enc_dim)`` encoder tokens.
            pos: ``(B, P, 2)`` patch positions.
            pose_feat: ``(B, 1, dec_dim)`` pose token, placed first at position (-1, -1).

        Returns:
            The new state (after ``dec_norm_state``) and the list of image-decoder
            outputs: index 0 is ``feat`` itself (encoder dim, no pose token), index
            ``i`` the output of block ``i``; the last one is normalised by ``dec_norm``.
        """
        x = torch.cat([pose_feat.to(feat.dtype), self.decoder_embed(feat)], dim=1)
        pose_pos = torch.full((pos.shape[0], 1, 2), -1, dtype=pos.dtype, device=pos.device)
        x_pos = torch.cat([pose_pos, pos], dim=1)
        outputs = [feat]
        s = state.to(feat.dtype)
        for blk_state, blk_img in zip(self.dec_blocks_state, self.dec_blocks):
            s, x = blk_state(s, x, state_pos, x_pos), blk_img(x, s, x_pos, state_pos)
            outputs.append(x)
        outputs[-1] = self.dec_norm(outputs[-1])
        return self.dec_norm_state(s), outputs

    # ----------------------------------------------------------------------- step
    def step(
        self,
        img: torch.Tensor,
        state: torch.Tensor,
        mem: torch.Tensor,
        is_first: torch.Tensor,
        update: torch.Tensor,
        ray_map: Optional[torch.Tensor] = None,
        use_ray: Optional[torch.Tensor] = None,
        with_rgb: bool = False,
    ) -> StepOutput:
        """Process one frame of a stream.

        Args:
            img: ``(B, 3, H, W)`` image normalised to [-1, 1] (mean 0.5, std 0.5).
            state: ``(B, S, dec_dim)`` state from the previous step (ignored where
                ``is_first``; any finite values will do then).
            mem: ``(B, M, 2*dec_dim)`` pose memory from the previous step (ignored where
                ``is_first``).
            is_first: ``(B,)`` bool/0-1 tensor: start of a sequence. Uses the initial
                state and memory and the learnt pose token (official ``i == 0``).
            update: ``(B,)`` bool/0-1 tensor: write the new state and memory (official
                ``update`` gate); where false the inputs are returned unchanged.
            ray_map: optional ``(B, 6, H, W)`` ray map (origin + unit direction in the
                first frame's camera). Its features are added to the image features.
            use_ray: optional ``(B,)`` gate for ``ray_map`` (default: use it).
            with_rgb: also return the head's colour estimate.

        Returns:
            The frame's :class:`StepOutput`.
        """
        b = img.shape[0]
        first = is_first.reshape(b, 1, 1).to(torch.bool)
        keep = update.reshape(b, 1, 1).to(torch.bool)
        state_in = torch.where(first, self.init_state(b).to(state.dtype), state)
        mem_in = torch.where(first, self.init_mem(b).to(mem.dtype), mem)

        feat, pos = self.encode_image(img)
        if ray_map is not None:
            ray_feat, _ = self.encode_ray_map(ray_map)
            if use_ray is not None:
                ray_feat = ray_feat * use_ray.reshape(b, 1, 1).to(ray_feat.dtype)
            feat = feat + ray_feat

        global_feat = feat.mean(dim=1, keepdim=True)
        retrieved = self.pose_retriever.inquire(global_feat, mem_in.to(feat.dtype))
        pose_feat = torch.where(
            first, self.pose_token.expand(b, -1, -1).to(feat.dtype), retrieved
        )
        state_pos = self.state_positions(b, img.device)
        new_state, dec = self.decode(state_in, state_pos, feat, pos, pose_feat)
        new_mem = self.pose_retriever.update_mem(
            mem_in.to(feat.dtype), global_feat, dec[-1][:, 0:1]
        )

        hooks = self.config.hook_layers
        head_in = [
            dec[hooks[0]].float(),
            dec[hooks[1]][:, 1:].float(),
            dec[hooks[2]][:, 1:].float(),
            dec[hooks[3]].float(),
        ]
        res = self.downstream_head(head_in, (img.shape[-2], img.shape[-1]), pos, with_rgb=with_rgb)
        return StepOutput(
            pts_self=res['pts3d_in_self_view'],
            conf_self=res['conf_self'],
            pts_world=res['pts3d_in_other_view'],
            conf=res['conf'],
            camera_pose=res['camera_pose'],
            tokens=dec[-1],
            state=torch.where(keep, new_state.to(state.dtype), state_in),
            mem=torch.where(keep, new_mem.to(mem.dtype), mem_in),
            rgb=res.get('rgb'),
        )
