"""The VLM-3R network: SigLIP + fusion block + mlp2x_gelu projector + newline token + Qwen2.

Module names mirror the reference LLaVA model so that checkpoint names map by fixed prefixes
(see `checkpoint.py`): `vision_tower` (SigLIP), `fusion_block`, `mm_projector`,
`image_newline` and `language_model` (a transformers `Qwen2ForCausalLM`, built from a config,
never downloaded).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from transformers import Qwen2Config, Qwen2ForCausalLM

from vlm3r_ros.models.profiles import Profile
from vlm3r_ros.models.vlm3r.fusion import CrossAttentionFusion
from vlm3r_ros.models.vlm3r.vision import build_siglip
from vlm3r_ros.models.vlm3r.visual_tokens import build_mlp2x_gelu

_DTYPES: dict[str, torch.dtype] = {
    'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    """Map 'float32' / 'float16' / 'bfloat16' to the torch dtype; raises ValueError otherwise."""
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f'unknown dtype {name!r}; expected one of {sorted(_DTYPES)}') from None


def qwen2_config(profile: Profile, vocab_size: int) -> Qwen2Config:
    """Return the Qwen2 config of `profile` with `vocab_size` embedding rows."""
    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=profile.llm_hidden_size,
        intermediate_size=profile.llm_intermediate_size,
        num_hidden_layers=profile.llm_num_layers,
        num_attention_heads=profile.llm_num_heads,
        num_key_value_heads=profile.llm_num_kv_heads,
        hidden_act='silu',
        max_position_embeddings=profile.llm_max_position_embeddings,
        rms_norm_eps=profile.llm_rms_norm_eps,
        rope_parameters={'rope_type': 'default', 'rope_theta': profile.llm_rope_theta},
        tie_word_embeddings=False,
        use_sliding_window=False,
        attn_implementation='sdpa',
    )


class Vlm3rNet(nn.Module):
    """All weights of the fused LMM; the inference logic lives in `Vlm3rModel`."""

    def __init__(self, profile: Profile, vocab_size: int) -> None:
        """Build the modules for `profile` (weights initialised by torch/transformers defaults)."""
        super().__init__()
        self.vision_tower = build_siglip(profile)
        self.fusion_block: CrossAttentionFusion | None = None
        if profile.fusion == 'cross_attention':
            self.fusion_block = CrossAttentionFusion(
                d_clip=profile.vision_hidden_size, d_geometry=profile.geometry_dim,
                num_heads=profile.fusion_num_heads, dropout=profile.fusion_dropout)
        self.mm_projector = build_mlp2x_gelu(profile.vision_hidden_size, profile.llm_hidden_size)
        # Reference init: randn * hidden ** -0.5 (only matters for random weights).
        self.image_newline = nn.Parameter(
            torch.randn(profile.llm_hidden_size) / profile.llm_hidden_size ** 0.5)
        self.language_model = Qwen2ForCausalLM(qwen2_config(profile, vocab_size))


def cast_parameters_(net: nn.Module, dtype: torch.dtype) -> None:
    """Cast floating parameters and persistent buffers to `dtype`, in place.

    Non-persistent buffers (RoPE inverse frequencies) stay float32 as in the reference, where
    they are computed in float32 and never cast.
    """
    for module in net.modules():
        for param in module.parameters(recurse=False):
            if param.is_floating_point():
                param.data = param.data.to(dtype)
        for name, buffer in list(module.named_buffers(recurse=False)):
            if (buffer.is_floating_point()
                    and name not in module._non_persistent_buffers_set):  # noqa: SLF001
                setattr(module, name, buffer.to(dtype))


def _reinit_non_persistent_buffers(net: Vlm3rNet) -> None:
    """Recompute buffers that checkpoints do not hold (RoPE frequencies, SigLIP position ids).

    Needed after `to_empty`, which leaves every tensor uninitialised. Uses the transformers
    models' own `_init_weights`, which in transformers 5 recomputes exactly these buffers (it
    also re-randomises the owning modules' weights, which the caller loads or randomises next).
    """
    for owner in (net.vision_tower, net.language_model):
        for module in owner.modules():
            non_persistent = getattr(module, '_non_persistent_buffers_set', set())
            if any(name in non_persistent for name, _ in module.named_buffers(recurse=False)):
                owner._init_weights(module)  # noqa: SLF001


@torch.no_grad()
def randomize_(net: Vlm3rNet, seed: int, std: float = 0.02) -> None:
    """Fill every parameter with seeded random values on its own device, in place.

    Norm weights get ones, biases zeros, everything else N(0, std). Used for benchmarks at real
    size without real weights; not the reference initialisation.
    """
    generator = torch.Generator(device=net.image_newline.device).manual_seed(seed)
    for module in net.modules():
        is_norm = 'Norm' in type(module).__name__
        for name, param in module.named_parameters(recurse=False):
            if is_norm:
                param.fill_(1.0 if name == 'weight' else 0.0)
            elif 'bias' in name:
                param.zero_()
            else:
                noise = torch.randn(param.shape, generator=generator, device=param.device,
                                    dtype=torch.float32)
                param.copy_(noise * std)


def build_network(profile: Profile, vocab_size: int, *, device: str | torch.device,
                  dtype: torch.dtype, init: Literal['seeded', 'empty'] = 'seeded',
                  seed: int = 0) -> Vlm3rNet:
    """Build a `Vlm3rNet` in eval mode on `device` with parameters in `dtype`.

    init='seeded': construct on CPU with the default initialisers under a private RNG seeded
    with `seed` (global RNG state untouched), then move. init='empty': construct on the meta
    device and allocate uninitialised storage directly on `device` (no CPU copy, no init cost;
    for loading a checkpoint or `randomize_`), with RoPE/position-id buffers recomputed.
    """
    if init == 'seeded':
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = Vlm3rNet(profile, vocab_size)
        net.to(device)
        cast_parameters_(net, dtype)
    elif init == 'empty':
        with torch.device('meta'):
            net = Vlm3rNet(profile, vocab_size)
        cast_parameters_(net, dtype)  # on meta, so storage is allocated once, in `dtype`
        net.to_empty(device=device)
        _reinit_non_persistent_buffers(net)
    else:
        raise ValueError(f'unknown init {init!r}')
    return net.eval()
