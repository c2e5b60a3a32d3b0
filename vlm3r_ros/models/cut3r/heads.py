"""CUT3R prediction heads: DPT (``DPTPts3dPose``) and linear (``LinearPts3dPose``).

Both heads take four decoder outputs (the encoder tokens and decoder layers
``depth*2//4``, ``depth*3//4`` and ``depth``; the last one still carries the pose token
first) and return per-pixel points in the frame's own camera (``pts3d_in_self_view``),
points in the first frame's world (``pts3d_in_other_view``), confidences, a colour
estimate and the camera pose encoding (translation + unit quaternion, camera-to-world).
Module and attribute names match the official checkpoints.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from vlm3r_ros.models.cut3r.blocks import ConditionModulationBlock, Mlp
from vlm3r_ros.models.cut3r.config import Cut3rConfig
from vlm3r_ros.models.cut3r.rope import RoPE2D

HeadOutput = dict[str, torch.Tensor]


# --------------------------------------------------------------------- post-processing
def reg_dense_depth(
    xyz: torch.Tensor, mode: tuple[str, float, float], pos_z: bool = False
) -> torch.Tensor:
    """Map raw 3-vectors to points: direction kept, norm ``d`` mapped by ``mode``.

    ``exp`` maps the norm to ``expm1(d)`` (metric, unbounded); ``pos_z`` flips each
    vector so that its z is non-negative first (used by the linear head's self view).

    Raises:
        ValueError: for an unknown mode.
    """
    kind = mode[0]
    if kind == 'linear':
        return xyz
    if pos_z:
        xyz = xyz * torch.sign(xyz[..., -1:])
    d = xyz.norm(dim=-1, keepdim=True)
    xyz = xyz / d.clamp(min=1e-8)
    if kind == 'square':
        return xyz * d.square()
    if kind == 'exp':
        return xyz * torch.expm1(d)
    raise ValueError(f'bad depth mode {kind!r}')


def reg_dense_conf(x: torch.Tensor, mode: tuple[str, float, float]) -> torch.Tensor:
    """Map raw confidences: ``exp`` gives ``vmin + exp(x)`` clipped to ``vmax - vmin``.

    Raises:
        ValueError: for an unknown mode.
    """
    kind, vmin, vmax = mode
    if kind == 'exp':
        return vmin + x.exp().clamp(max=vmax - vmin)
    if kind == 'sigmoid':
        return (vmax - vmin) * torch.sigmoid(x) + vmin
    raise ValueError(f'bad conf mode {kind!r}')


def postprocess_points(
    out: torch.Tensor, depth_mode: tuple[str, float, float], conf_mode: tuple[str, float, float],
    pos_z: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a ``(B, 4, H, W)`` map into points ``(B, H, W, 3)`` and confidence ``(B, H, W)``."""
    fmap = out.permute(0, 2, 3, 1)
    pts = reg_dense_depth(fmap[..., 0:3], depth_mode, pos_z)
    return pts, reg_dense_conf(fmap[..., 3], conf_mode)


def postprocess_rgb(out: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Map a ``(B, 3, H, W)`` map to colours in ``[-1, 1]`` as ``(B, H, W, 3)``."""
    fmap = out.permute(0, 2, 3, 1)
    return (torch.sigmoid(fmap) * (1 - 2 * eps) + eps - 0.5) * 2


def postprocess_pose(out: torch.Tensor, mode: tuple[str, float, float]) -> torch.Tensor:
    """Map a raw ``(B, 7)`` pose to translation (norm mapped by ``mode``) + unit quaternion.

    The quaternion is real-part first and standardised to a non-negative real part.
    """
    kind = mode[0]
    trans, quats = out[..., 0:3], out[..., 3:7]
    if kind == 'linear':
        return trans
    d = trans.norm(dim=-1, keepdim=True)
    if kind == 'square':
        scale = d.square() / d.clamp(min=1e-8)
    elif kind == 'exp':
        scale = torch.expm1(d) / d.clamp(min=1e-8)
    else:
        raise ValueError(f'bad pose mode {kind!r}')
    quats = F.normalize(quats, p=2, dim=-1)
    quats = torch.where(quats[..., 0:1] < 0, -quats, quats)
    return torch.cat([trans * scale, quats], dim=-1)


def tokens_to_map(tokens: torch.Tensor, patch_size: int, height: int, width: int) -> torch.Tensor:
    """Turn per-patch predictions ``(B, S, C*p*p)`` into a pixel map ``(B, C, H, W)``."""
    b = tokens.shape[0]
    grid = tokens.transpose(-1, -2).reshape(b, -1, height // patch_size, width // patch_size)
    return F.pixel_shuffle(grid, patch_size)


class PoseDecoder(nn.Module):
    """MLP from the pose token to the 7-d pose encoding (``mlp.fc1``, ``mlp.fc2``)."""

    def __init__(self, hidden_size: int, mlp_ratio: int = 4) -> None:
        """Create the decoder for tokens of width ``hidden_size``."""
        super().__init__()
        self.mlp = Mlp(hidden_size, hidden_size * mlp_ratio, 7)

    def forward(self, pose_feat: torch.Tensor) -> torch.Tensor:
        """Return the raw pose ``(B, 7)`` for the pose token ``(B, C)``."""
        return self.mlp(pose_feat)


# -------------------------------------------------------------------------- DPT parts
class ResidualConvUnit(nn.Module):
    """ReLU-conv-ReLU-conv with a residual (``conv1``, ``conv2``, with biases)."""

    def __init__(self, features: int) -> None:
        """Create the unit on ``features`` channels."""
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x + conv2(relu(conv1(relu(x))))``."""
        out = self.conv2(F.relu(self.conv1(F.relu(x))))
        return out + x


class FeatureFusionBlock(nn.Module):
    """DPT fusion: add the refined skip input, refine, upsample x2, 1x1 conv."""

    def __init__(self, features: int) -> None:
        """Create the block on ``features`` channels."""
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, kernel_size=1, bias=True)
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: torch.Tensor, skip: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Return the fused, upsampled features."""
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=True)
        return self.out_conv(x)


class _Interpolate(nn.Module):
    """Bilinear x2 upsampling as a module (keeps the official ``head`` indices)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` upsampled by 2 (align_corners=True)."""
        return F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=True)


class DPTAdapter(nn.Module):
    """DPT output adapter (croco ``DPTOutputAdapter`` after dust3r's ``_fix``).

    The official scratch module registers each ``layerN_rn`` convolution twice (as
    ``scratch.layerN_rn`` and inside ``scratch.layer_rn``), so both names are in the
    checkpoints; the same convolution is registered under both names here too.
    """

    def __init__(
        self,
        num_channels: int,
        dim_tokens: tuple[int, int, int, int],
        patch_size: int,
        feature_dim: int,
        last_dim: int,
        layer_dims: tuple[int, int, int, int],
    ) -> None:
        """Create an adapter mapping 4 token layers to a ``num_channels`` pixel map."""
        super().__init__()
        self.patch_size = patch_size
        scratch = nn.Module()
        convs = [
            nn.Conv2d(layer_dims[i], feature_dim, kernel_size=3, padding=1, bias=False)
            for i in range(4)
        ]
        for i, conv in enumerate(convs):
            scratch.add_module(f'layer{i + 1}_rn', conv)
        scratch.layer_rn = nn.ModuleList(convs)
        for i in range(1, 5):
            scratch.add_module(f'refinenet{i}', FeatureFusionBlock(feature_dim))
        self.scratch = scratch
        self.head = nn.Sequential(
            nn.Conv2d(feature_dim, feature_dim // 2, kernel_size=3, padding=1),
            _Interpolate(),
            nn.Conv2d(feature_dim // 2, last_dim, kernel_size=3, padding=1),
            nn.ReLU(True),
            nn.Conv2d(last_dim, num_channels, kernel_size=1),
        )
        d0, d1, d2, d3 = layer_dims
        self.act_postprocess = nn.ModuleList([
            nn.Sequential(
                nn.Conv2d(dim_tokens[0], d0, kernel_size=1),
                nn.ConvTranspose2d(d0, d0, kernel_size=4, stride=4),
            ),
            nn.Sequential(
                nn.Conv2d(dim_tokens[1], d1, kernel_size=1),
                nn.ConvTranspose2d(d1, d1, kernel_size=2, stride=2),
            ),
            nn.Sequential(nn.Conv2d(dim_tokens[2], d2, kernel_size=1)),
            nn.Sequential(
                nn.Conv2d(dim_tokens[3], d3, kernel_size=1),
                nn.Conv2d(d3, d3, kernel_size=3, stride=2, padding=1),
            ),
        ])

    def forward(self, layers: list[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
        """Return the ``(B, C, H, W)`` map for 4 token layers ``(B, N, C_i)`` (no pose token)."""
        h, w = image_size
        nh, nw = h // self.patch_size, w // self.patch_size
        maps = []
        for idx, tokens in enumerate(layers):
            grid = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], nh, nw)
            grid = self.act_postprocess[idx](grid)
            maps.append(self.scratch.layer_rn[idx](grid))
        path4 = self.scratch.refinenet4(maps[3])
        # The stride-2 conv rounds odd grids up; crop back to the layer-3 grid.
        path4 = path4[:, :, : maps[2].shape[2], : maps[2].shape[3]]
        path3 = self.scratch.refinenet3(path4, maps[2])
        path2 = self.scratch.refinenet2(path3, maps[1])
        path1 = self.scratch.refinenet1(path2, maps[0])
        return self.head(path1)


def _final_transform(config: Cut3rConfig, rope: RoPE2D) -> nn.ModuleList:
    """Return the two pose-conditioned blocks that map tokens to the world frame."""
    return nn.ModuleList([
        ConditionModulationBlock(
            config.dec_embed_dim, config.dec_num_heads, mlp_ratio=4.0, qkv_bias=True, rope=rope
        )
        for _ in range(2)
    ])


class DPTPts3dPose(nn.Module):
    """DPT head of ``cut3r_512_dpt_4_64``: ``dpt_self``, ``final_transform``,
    ``dpt_cross``, ``dpt_rgb`` and ``pose_head``."""

    def __init__(self, config: Cut3rConfig, rope: RoPE2D) -> None:
        """Create the head for ``config`` sharing the model's ``rope``."""
        super().__init__()
        self.config = config
        ed, dd = config.enc_embed_dim, config.dec_embed_dim
        dims = (ed, dd, dd, dd)
        args = dict(
            dim_tokens=dims, patch_size=config.patch_size, feature_dim=config.dpt_feature_dim,
            last_dim=config.dpt_last_dim, layer_dims=config.dpt_layer_dims,
        )
        self.dpt_self = DPTAdapter(num_channels=4, **args)
        self.final_transform = _final_transform(config, rope)
        self.dpt_cross = DPTAdapter(num_channels=4, **args)
        self.dpt_rgb: Optional[DPTAdapter] = (
            DPTAdapter(num_channels=3, **args) if config.rgb_head else None
        )
        self.pose_head = PoseDecoder(dd)

    def forward(
        self,
        layers: list[torch.Tensor],
        image_size: tuple[int, int],
        pos: torch.Tensor,
        with_rgb: bool = False,
    ) -> HeadOutput:
        """Return the head outputs; ``layers[-1]`` has the pose token first."""
        cfg = self.config
        pose_token = layers[-1][:, 0]
        tokens = layers[-1][:, 1:]
        pose = self.pose_head(pose_token)
        cross = tokens
        for blk in self.final_transform:
            cross = blk(cross, pose_token, pos)
        self_layers = layers[:-1] + [tokens]
        cross_layers = layers[:-1] + [cross]
        pts_self, conf_self = postprocess_points(
            self.dpt_self(self_layers, image_size), cfg.depth_mode, cfg.conf_mode
        )
        pts_cross, conf_cross = postprocess_points(
            self.dpt_cross(cross_layers, image_size), cfg.depth_mode, cfg.conf_mode
        )
        out: HeadOutput = {
            'pts3d_in_self_view': pts_self,
            'conf_self': conf_self,
            'pts3d_in_other_view': pts_cross,
            'conf': conf_cross,
            'camera_pose': postprocess_pose(pose, cfg.pose_mode),
        }
        if with_rgb and self.dpt_rgb is not None:
            out['rgb'] = postprocess_rgb(self.dpt_rgb(self_layers, image_size))
        return out


class LinearPts3dPose(nn.Module):
    """Linear head of ``cut3r_224_linear_4``: ``proj``, ``rgb_proj``, ``pose_head``,
    ``final_transform`` and ``cross_proj`` (per-patch MLPs + pixel shuffle)."""

    def __init__(self, config: Cut3rConfig, rope: RoPE2D, mlp_ratio: float = 4.0) -> None:
        """Create the head for ``config`` sharing the model's ``rope``."""
        super().__init__()
        self.config = config
        dd, p = config.dec_embed_dim, config.patch_size
        hidden = int(mlp_ratio * dd)
        self.proj = Mlp(dd, hidden, 4 * p * p)
        self.rgb_proj: Optional[Mlp] = Mlp(dd, hidden, 3 * p * p) if config.rgb_head else None
        self.pose_head = PoseDecoder(dd)
        self.final_transform = _final_transform(config, rope)
        self.cross_proj = Mlp(dd, hidden, 4 * p * p)

    def forward(
        self,
        layers: list[torch.Tensor],
        image_size: tuple[int, int],
        pos: torch.Tensor,
        with_rgb: bool = False,
    ) -> HeadOutput:
        """Return the head outputs; only ``layers[-1]`` (pose token first) is used."""
        cfg = self.config
        h, w = image_size
        p = cfg.patch_size
        pose_token = layers[-1][:, 0]
        tokens = layers[-1][:, 1:]
        pose = self.pose_head(pose_token)
        cross = tokens
        for blk in self.final_transform:
            cross = blk(cross, pose_token, pos)
        pts_self, conf_self = postprocess_points(
            tokens_to_map(self.proj(tokens), p, h, w), cfg.depth_mode, cfg.conf_mode, pos_z=True
        )
        pts_cross, conf_cross = postprocess_points(
            tokens_to_map(self.cross_proj(cross), p, h, w), cfg.depth_mode, cfg.conf_mode
        )
        out: HeadOutput = {
            'pts3d_in_self_view': pts_self,
            'conf_self': conf_self,
            'pts3d_in_other_view': pts_cross,
            'conf': conf_cross,
            'camera_pose': postprocess_pose(pose, cfg.pose_mode),
        }
        if with_rgb and self.rgb_proj is not None:
            out['rgb'] = postprocess_rgb(tokens_to_map(self.rgb_proj(tokens), p, h, w))
        return out


def build_head(config: Cut3rConfig, rope: RoPE2D) -> nn.Module:
    """Return the head named by ``config.head_type`` ('dpt' or 'linear')."""
    if config.head_type == 'dpt':
        return DPTPts3dPose(config, rope)
    return LinearPts3dPose(config, rope)
