"""SigLIP vision tower as the reference uses it: features of the layer before the last.

The reference loads the full SigLIP, deletes its last encoder layer and its pooling head, and
reads the last hidden state of what is left (before `post_layernorm`). Here the tower is built
with only the kept layers (`Profile.vision_kept_layers`), no head and no post_layernorm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import SiglipVisionConfig, SiglipVisionModel

from vlm3r_ros.models.profiles import Profile


def siglip_config(profile: Profile) -> SiglipVisionConfig:
    """Return the SigLIP config of the kept layers of `profile`'s vision tower."""
    return SiglipVisionConfig(
        hidden_size=profile.vision_hidden_size,
        intermediate_size=profile.vision_intermediate_size,
        num_hidden_layers=profile.vision_kept_layers,
        num_attention_heads=profile.vision_num_heads,
        num_channels=3,
        image_size=profile.vision_image_size,
        patch_size=profile.vision_patch_size,
        hidden_act='gelu_pytorch_tanh',
        layer_norm_eps=profile.vision_layer_norm_eps,
        attention_dropout=0.0,
        vision_use_head=False,
        attn_implementation='sdpa',
    )


def build_siglip(profile: Profile) -> SiglipVisionModel:
    """Build (never download) the SigLIP vision tower for `profile`.

    `post_layernorm` is replaced by an identity: the reference reads the hidden state before
    it, so its weights are never used (the loader skips them explicitly).
    """
    tower = SiglipVisionModel(siglip_config(profile))
    tower.post_layernorm = nn.Identity()
    return tower


def preprocess_image(image: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float],
                     device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """Turn an (H, W, 3) uint8 RGB image into (1, 3, size, size) normalised pixels.

    Like the reference processor: squash-resize to size x size with bicubic filtering (torch's
    antialiased bicubic, rounded and clipped to 0..255 like the 8-bit PIL result), scale to
    [0, 1], normalise with mean/std (0.5 for SigLIP). Raises ValueError for a wrong shape/dtype.
    """
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError('image must be an (H, W, 3) uint8 RGB array, '
                         f'got {array.shape} {array.dtype}')
    # Frames decoded from ROS messages are read-only views of the message bytes.
    array = np.ascontiguousarray(array) if array.flags.writeable else array.copy()
    return preprocess_batch(torch.from_numpy(array)[None], size, mean, std, device, dtype)


def preprocess_batch(images: torch.Tensor, size: int, mean: Sequence[float],
                     std: Sequence[float], device: torch.device | str,
                     dtype: torch.dtype) -> torch.Tensor:
    """Batched `preprocess_image`: (B, H, W, 3) uint8 -> (B, 3, size, size) pixels.

    The training code feeds frames through this so that it sees exactly what the node sees.
    """
    pixels = images.to(device).permute(0, 3, 1, 2).float()
    if pixels.shape[-2:] != (size, size):
        pixels = F.interpolate(pixels, size=(size, size), mode='bicubic', align_corners=False,
                               antialias=True).round().clamp(0, 255)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
    return ((pixels / 255.0 - mean_t) / std_t).to(dtype)


def siglip_features(tower: SiglipVisionModel, pixels: torch.Tensor) -> torch.Tensor:
    """Return (B, grid*grid, hidden) features of the last kept layer, before post_layernorm."""
    hidden = tower.embeddings(pixels)
    return tower.encoder(inputs_embeds=hidden).last_hidden_state
