"""Model size profiles: the tiny test/CPU profile and the real VLM-3R 7B profile.

A `Profile` fixes every architectural number of the fused LMM (SigLIP vision tower, fusion block,
projector, pooling, Qwen2 language model) plus the geometry-token contract with CUT3R, the runtime
device/dtype and where real weights live on disk. The same code builds both sizes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

FUSION_MODES: tuple[str, ...] = ('cross_attention', 'position_encoding')
POOL_MODES: tuple[str, ...] = ('bilinear', 'average', 'max')
NEWLINE_POSITIONS: tuple[str, ...] = ('grid', 'frame', 'no_token')
DTYPES: tuple[str, ...] = ('float32', 'float16', 'bfloat16')
GEOMETRY_SELECTIONS: tuple[str, ...] = ('all', 'patch_tokens', 'camera_tokens')
GEOMETRY_RESIZE_MODES: tuple[str, ...] = ('stretch', 'vlm3r')
NUMERICS: tuple[str, ...] = ('precise', 'reference')


@dataclass(frozen=True)
class Profile:
    """Every size, path and runtime choice of one VLM-3R model configuration.

    Vision numbers describe the *full* SigLIP checkpoint; `vision_select_layer` (-2 as in the
    reference) decides how many encoder layers actually run (`vision_kept_layers`).
    Geometry numbers describe the CUT3R tokens that `encode_frame` consumes: one camera token
    followed by `(geometry_image_size // geometry_patch_size) ** 2` patch tokens of
    `geometry_dim` features.
    """

    name: str
    # SigLIP vision tower.
    vision_image_size: int
    vision_patch_size: int
    vision_hidden_size: int
    vision_intermediate_size: int
    vision_num_layers: int
    vision_num_heads: int
    vision_select_layer: int = -2
    vision_layer_norm_eps: float = 1e-6
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    # CUT3R geometry tokens (camera token + patch tokens).
    geometry_dim: int = 768
    geometry_image_size: int = 432
    geometry_patch_size: int = 16
    # Which geometry tokens the fusion attends to (reference `spatial_tower_select_feature`).
    geometry_select: str = 'all'
    # How a camera frame becomes the CUT3R input (`cut3r.preprocess` resize modes): 'vlm3r'
    # is the reference's (SigLIP-processed 384x384 frame, bilinear to geometry_image_size);
    # 'stretch' a bilinear resize of the raw frame (what the tiny small CUT3R was trained on).
    geometry_resize_mode: str = 'vlm3r'
    # Fusion of vision and geometry.
    fusion: str = 'cross_attention'
    fusion_num_heads: int = 18
    fusion_dropout: float = 0.1
    # Projector, pooling and newline tokens.
    projector_type: str = 'mlp2x_gelu'
    spatial_pool_mode: str = 'bilinear'
    spatial_pool_stride: int = 2
    newline_position: str = 'grid'
    # Qwen2 language model (vocab None = take the tokenizer's length).
    llm_hidden_size: int = 3584
    llm_intermediate_size: int = 18944
    llm_num_layers: int = 28
    llm_num_heads: int = 28
    llm_num_kv_heads: int = 4
    llm_vocab_size: int | None = 152064
    llm_max_position_embeddings: int = 32768
    llm_rope_theta: float = 1000000.0
    llm_rms_norm_eps: float = 1e-6
    # Video-3D LLM position encoding (metres, metres, metres per step).
    pe_min_xyz: tuple[float, float, float] = (-15.0, -15.0, -5.0)
    pe_max_xyz: tuple[float, float, float] = (15.0, 15.0, 5.0)
    pe_voxel_size: float = 0.1
    pe_temperature: float = 10000.0
    # Conversation (qwen_1_5 template of the reference).
    system_prompt: str = 'You are a helpful assistant.'
    # Runtime.
    device: str = 'cpu'
    dtype: str = 'float32'
    # Numerics: 'reference' = as the official code (float16 on GPU, TF32 matmuls, q/k
    # rounded to float16 around CUT3R's image-encoder RoPE); 'precise' = bfloat16 on GPU,
    # no TF32, RoPE exactly in float32.
    numerics: str = 'precise'
    seed: int | None = None
    max_cached_prefixes: int = 2
    # Local weights (real profile only; tiny builds seeded random weights and its own tokenizer).
    base_model_dir: str | None = None
    lora_dir: str | None = None
    non_lora_path: str | None = None
    vision_tower_dir: str | None = None
    tokenizer_dir: str | None = None

    def __post_init__(self) -> None:
        """Validate the choices; raises ValueError naming the offending field."""
        if self.fusion not in FUSION_MODES:
            raise ValueError(f'fusion must be one of {FUSION_MODES}, got {self.fusion!r}')
        if self.spatial_pool_mode not in POOL_MODES:
            raise ValueError(f'spatial_pool_mode must be one of {POOL_MODES}, '
                             f'got {self.spatial_pool_mode!r}')
        if self.newline_position not in NEWLINE_POSITIONS:
            raise ValueError(
                f'newline_position must be one of {NEWLINE_POSITIONS}, '
                f'got {self.newline_position!r}')
        if self.geometry_select not in GEOMETRY_SELECTIONS:
            raise ValueError(f'geometry_select must be one of {GEOMETRY_SELECTIONS}, '
                             f'got {self.geometry_select!r}')
        if self.dtype not in DTYPES:
            raise ValueError(f'dtype must be one of {DTYPES}, got {self.dtype!r}')
        if self.geometry_resize_mode not in GEOMETRY_RESIZE_MODES:
            raise ValueError(f'geometry_resize_mode must be one of {GEOMETRY_RESIZE_MODES}, '
                             f'got {self.geometry_resize_mode!r}')
        if self.numerics not in NUMERICS:
            raise ValueError(f'numerics must be one of {NUMERICS}, got {self.numerics!r}')
        if self.projector_type != 'mlp2x_gelu':
            raise ValueError('only the mlp2x_gelu projector is implemented, '
                             f'got {self.projector_type!r}')
        if self.vision_image_size < self.vision_patch_size:
            raise ValueError('vision_image_size must be at least vision_patch_size')
        if self.geometry_image_size % self.geometry_patch_size:
            raise ValueError('geometry_image_size must be a multiple of geometry_patch_size')
        if not 1 <= self.vision_kept_layers <= self.vision_num_layers:
            raise ValueError(f'vision_select_layer {self.vision_select_layer} is out of range')
        if self.vision_hidden_size % self.fusion_num_heads:
            raise ValueError('vision_hidden_size must be divisible by fusion_num_heads')
        if self.llm_hidden_size % self.llm_num_heads or self.llm_num_heads % self.llm_num_kv_heads:
            raise ValueError('llm heads must divide llm_hidden_size and be a multiple of '
                             'llm_num_kv_heads')
        if self.spatial_pool_stride < 1:
            raise ValueError('spatial_pool_stride must be >= 1')
        if self.max_cached_prefixes < 0:
            raise ValueError('max_cached_prefixes must be >= 0')
        if self.pe_voxel_size <= 0:
            raise ValueError('pe_voxel_size must be > 0')

    @property
    def vision_grid(self) -> int:
        """Patches per side of the SigLIP grid (27 at 384/14: the stride-14 conv drops 6 px)."""
        return self.vision_image_size // self.vision_patch_size

    @property
    def vision_kept_layers(self) -> int:
        """Encoder layers that run: the reference deletes the layers after the selected one."""
        if self.vision_select_layer < 0:
            return self.vision_num_layers + self.vision_select_layer + 1
        return self.vision_select_layer

    @property
    def pooled_grid(self) -> int:
        """Tokens per side after the 2x2 spatial pooling (14 for a 27 grid, 13 with 'average')."""
        if self.spatial_pool_stride == 1:
            return self.vision_grid
        if self.spatial_pool_mode == 'bilinear':
            return math.ceil(self.vision_grid / self.spatial_pool_stride)
        return self.vision_grid // self.spatial_pool_stride

    @property
    def tokens_per_frame(self) -> int:
        """Visual tokens one frame contributes to the LLM sequence, newline tokens included."""
        grid = self.pooled_grid
        if self.newline_position == 'grid':
            return grid * (grid + 1)
        if self.newline_position == 'frame':
            return grid * grid + 1
        return grid * grid

    @property
    def geometry_grid(self) -> int:
        """CUT3R patches per side."""
        return self.geometry_image_size // self.geometry_patch_size

    @property
    def geometry_num_tokens(self) -> int:
        """Geometry tokens per frame: 1 camera token + patch tokens (730 at real size)."""
        return 1 + self.geometry_grid ** 2


_PROFILES: dict[str, Profile] = {
    'tiny': Profile(
        name='tiny',
        vision_image_size=224, vision_patch_size=16, vision_hidden_size=64,
        vision_intermediate_size=128, vision_num_layers=3, vision_num_heads=4,
        # Geometry tokens of the shipped small CUT3R (Cut3rConfig.small(): 64 dims, 10x10),
        # fed the way it was trained (raw frame stretched to 160x160).
        geometry_dim=64, geometry_image_size=160, geometry_patch_size=16,
        geometry_resize_mode='stretch',
        fusion_num_heads=4,
        llm_hidden_size=64, llm_intermediate_size=128, llm_num_layers=2, llm_num_heads=4,
        llm_num_kv_heads=2, llm_vocab_size=None, llm_max_position_embeddings=8192,
        device='cpu', dtype='float32', seed=0,
    ),
    'vlm3r-7b': Profile(
        name='vlm3r-7b',
        vision_image_size=384, vision_patch_size=14, vision_hidden_size=1152,
        vision_intermediate_size=4304, vision_num_layers=27, vision_num_heads=16,
        geometry_dim=768, geometry_image_size=432, geometry_patch_size=16,
        fusion_num_heads=18,
        llm_hidden_size=3584, llm_intermediate_size=18944, llm_num_layers=28, llm_num_heads=28,
        llm_num_kv_heads=4, llm_vocab_size=152064, llm_max_position_embeddings=32768,
        # The reference's input and numerics (fp16, TF32, fp16 RoPE rounding).
        geometry_resize_mode='vlm3r', device='cuda', dtype='float16', numerics='reference',
        seed=None,
    ),
}


def profile_names() -> tuple[str, ...]:
    """Return the names `get_profile` accepts."""
    return tuple(_PROFILES)


def get_profile(name: str, **overrides: Any) -> Profile:
    """Return the named profile, with any fields replaced by `overrides`.

    Typical overrides: weight directories (`base_model_dir`, `lora_dir`, ...), `device`,
    `dtype`, `fusion`, `max_cached_prefixes`.
    Raises KeyError for an unknown name, TypeError for an unknown field and ValueError for an
    invalid value.
    """
    try:
        base = _PROFILES[name]
    except KeyError:
        raise KeyError(f'unknown profile {name!r}; known: {sorted(_PROFILES)}') from None
    return dataclasses.replace(base, **overrides) if overrides else base
