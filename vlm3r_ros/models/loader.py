"""Build the models the engine runs: a CUT3R geometry encoder and the VLM-3R LMM.

Everything loads from local paths (no hub). ``tiny`` loads the trained small CUT3R
shipped in ``vlm3r_ros/weights`` (or ``cut3r_weights``) and builds its LMM with seeded
random weights unless trained weights are given; ``vlm3r-7b`` needs local weights and
fails with a clear message naming what is missing.

Each profile says how frames reach CUT3R and which numerics it runs with: ``vlm3r-7b``
feeds CUT3R the SigLIP-processed frame (resize mode ``'vlm3r'``) and runs the reference's
numerics (float16 on GPU, TF32 matmuls, q/k rounded to float16 around the image encoder's
RoPE); ``tiny`` stretches the raw frame to 160x160 as its small CUT3R was trained and runs
the precise numerics (bfloat16 on GPU, no TF32, RoPE in float32). ``numerics`` overrides
the profile's choice.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlm3r_ros.models.cut3r.checkpoint import load_cut3r
from vlm3r_ros.models.cut3r.config import Cut3rConfig
from vlm3r_ros.models.cut3r.model import Cut3rModel
from vlm3r_ros.models.cut3r.stream import Cut3rStream
from vlm3r_ros.models.identity import model_identity
from vlm3r_ros.models.profiles import NUMERICS, get_profile
from vlm3r_ros.models.vlm3r.model import Vlm3rModel
from vlm3r_ros.pipeline.engine import ModelBundle
from vlm3r_ros.weights import CUT3R_SMALL, VLM3R_SMALL

TINY_SEED = 0
#: ``tiny_weights_path`` value that asks for the seeded random LMM instead of the shipped one.
RANDOM_WEIGHTS = 'random'


class ModelConfigError(ValueError):
    """The model settings are inconsistent or name files that do not exist."""


@dataclass(frozen=True)
class ModelSpec:
    """What to load: profile, fusion, backend, local weight paths, device, dtype, numerics."""

    profile: str = 'tiny'
    fusion: str = 'cross_attention'
    geometry_backend: str = 'torch'
    cut3r_weights: str = ''
    base_path: str = ''
    non_lora_path: str = ''
    lora_path: str = ''
    tiny_weights_path: str = ''
    device: str = 'auto'
    dtype: str = 'auto'
    onnx_cache_dir: str = '~/.cache/vlm3r_ros'
    numerics: str = 'auto'

    @classmethod
    def from_config(cls, cfg: Any) -> 'ModelSpec':
        """Return the spec from a node config (attributes named like the parameters)."""
        return cls(profile=cfg.model_profile, fusion=cfg.fusion,
                   geometry_backend=cfg.geometry_backend, cut3r_weights=cfg.cut3r_weights,
                   base_path=cfg.vlm3r_base_path, non_lora_path=cfg.vlm3r_non_lora_path,
                   lora_path=cfg.vlm3r_lora_path, tiny_weights_path=cfg.tiny_weights_path,
                   device=cfg.device, dtype=cfg.dtype, onnx_cache_dir=cfg.onnx_cache_dir,
                   numerics=cfg.numerics)

    def resolved_device(self) -> str:
        """Return 'cuda' or 'cpu'; raises ModelConfigError for cuda without a GPU."""
        if self.device == 'auto':
            return 'cuda' if torch.cuda.is_available() else 'cpu'
        if self.device == 'cuda' and not torch.cuda.is_available():
            raise ModelConfigError('device is cuda but no CUDA GPU is available')
        return self.device

    def resolved_numerics(self) -> str:
        """Return 'reference' or 'precise': ``numerics``, or the profile's when 'auto'.

        Raises ModelConfigError for an unknown value or profile.
        """
        if self.numerics == 'auto':
            try:
                return get_profile(self.profile).numerics
            except KeyError:
                raise ModelConfigError(f'unknown model profile {self.profile!r}') from None
        if self.numerics not in NUMERICS:
            raise ModelConfigError(f'numerics must be auto or one of {NUMERICS}, '
                                   f'got {self.numerics!r}')
        return self.numerics

    def resolved_dtype(self, device: str) -> str:
        """Return the dtype name unless set: float32 on CPU; on GPU float16 with the
        reference numerics and bfloat16 with the precise ones."""
        if self.dtype != 'auto':
            return self.dtype
        if device != 'cuda':
            return 'float32'
        return 'float16' if self.resolved_numerics() == 'reference' else 'bfloat16'


def apply_matmul_precision(numerics: str) -> None:
    """Set PyTorch's process-wide TF32 switches for ``numerics`` (they only act on CUDA).

    'reference' enables TF32 for matmuls and cuDNN convolutions (as the reference runs);
    'precise' disables TF32 for matmuls (PyTorch's default) and leaves cuDNN alone.
    """
    reference = numerics == 'reference'
    torch.backends.cuda.matmul.allow_tf32 = reference
    if reference:
        torch.backends.cudnn.allow_tf32 = True


def _existing(path: str, what: str) -> str:
    if not path:
        raise ModelConfigError(f'{what} is not set')
    if not Path(path).exists():
        raise ModelConfigError(f'{what} {path!r} does not exist')
    return path


def _weight_paths(base: str, base_param: str, spec: ModelSpec) -> dict[str, str | None]:
    """Return the profile's weight-path fields: base dir, LoRA dir, non-LoRA file."""
    return {
        'base_model_dir': _existing(base, base_param),
        'lora_dir': _existing(spec.lora_path, 'vlm3r_lora_path') if spec.lora_path else None,
        'non_lora_path': (_existing(spec.non_lora_path, 'vlm3r_non_lora_path')
                          if spec.non_lora_path else None),
    }


def _tiny_weight_paths(spec: ModelSpec) -> dict[str, str | None]:
    """Return the tiny LMM's weight paths: the configured ones, the shipped trained small
    VLM-3R (release layout ``base/`` + ``adapter/``), or none for the seeded random model
    (``tiny_weights_path`` 'random', or a checkout without the shipped directory)."""
    if spec.tiny_weights_path == RANDOM_WEIGHTS:
        return {}
    if spec.tiny_weights_path:
        return _weight_paths(spec.tiny_weights_path, 'tiny_weights_path', spec)
    if (VLM3R_SMALL / 'base').is_dir() and not (spec.lora_path or spec.non_lora_path):
        return {'base_model_dir': str(VLM3R_SMALL / 'base'),
                'lora_dir': str(VLM3R_SMALL / 'adapter'), 'non_lora_path': None}
    return {}


def load_bundle(spec: ModelSpec) -> ModelBundle:
    """Load both models for ``spec`` and return them as a ModelBundle.

    Raises ModelConfigError for missing paths or settings, and the loaders'
    CheckpointError for corrupt, truncated or mismatching checkpoints.
    """
    device = spec.resolved_device()
    dtype_name = spec.resolved_dtype(device)
    dtype = getattr(torch, dtype_name)
    numerics = spec.resolved_numerics()
    rope16 = numerics == 'reference'
    apply_matmul_precision(numerics)
    if spec.profile == 'tiny':
        if device == 'cpu':
            # Two workers share the CPU; intra-op threads would oversubscribe it.
            torch.set_num_threads(1)
        paths = _tiny_weight_paths(spec)
        profile = get_profile('tiny', fusion=spec.fusion, device=device, dtype=dtype_name,
                              seed=TINY_SEED, **paths)
        # The embedded default geometry is the trained small CUT3R shipped in the
        # package (vlm3r_ros/weights); cut3r_weights replaces it.
        cut3r_path = spec.cut3r_weights or (str(CUT3R_SMALL) if CUT3R_SMALL.is_file() else '')
        if cut3r_path:
            cut3r = load_cut3r(_existing(cut3r_path, 'cut3r_weights'), device=device,
                               dtype=dtype, rope_fp16_rounding=rope16)
        else:
            # A checkout without the shipped file (it was removed): same architecture,
            # seeded random weights, so that everything still runs, untrained.
            torch.manual_seed(TINY_SEED)
            cut3r = Cut3rModel(Cut3rConfig.small()).to(device).eval()
            cut3r.set_rope_fp16_rounding(rope16)
    elif spec.profile == 'vlm3r-7b':
        profile = get_profile('vlm3r-7b', fusion=spec.fusion, device=device, dtype=dtype_name,
                              **_weight_paths(spec.base_path, 'vlm3r_base_path', spec))
        cut3r_path = _existing(spec.cut3r_weights, 'cut3r_weights')
        cut3r = load_cut3r(cut3r_path, device=device, dtype=dtype, rope_fp16_rounding=rope16)
    else:
        raise ModelConfigError(f'unknown model profile {spec.profile!r}')
    if cut3r.config.dec_embed_dim != profile.geometry_dim:
        raise ModelConfigError(
            f'CUT3R decoder dim {cut3r.config.dec_embed_dim} does not match the profile\'s '
            f'geometry_dim {profile.geometry_dim}')
    lmm = Vlm3rModel.from_profile(profile)
    size = (profile.geometry_image_size, profile.geometry_image_size)
    new_stream = _stream_factory(spec, cut3r, size, profile.geometry_resize_mode)

    def close() -> None:
        lmm.clear_cache()

    lmm_weights = paths if spec.profile == 'tiny' else _weight_paths(
        spec.base_path, 'vlm3r_base_path', spec)
    identity = model_identity(
        {'profile': spec.profile, 'fusion': spec.fusion, 'dtype': dtype_name,
         'numerics': numerics, 'geometry_backend': spec.geometry_backend},
        {'cut3r': (cut3r_path if spec.profile != 'tiny' or cut3r_path
                   else f'seeded random (seed {TINY_SEED})'),
         **(lmm_weights or {'lmm': f'seeded random (seed {TINY_SEED})'})})
    return ModelBundle(profile=spec.profile, new_geometry_stream=new_stream, spatial=lmm,
                       close=close, identity=identity)


def _stream_factory(spec: ModelSpec, cut3r: Cut3rModel, size: tuple[int, int],
                    resize_mode: str) -> Any:
    """Return a callable creating fresh geometry streams over the shared weights.

    ``resize_mode`` is the profile's ``geometry_resize_mode`` ('vlm3r' for the fused 7B
    model, 'stretch' for tiny). The ONNX backend exports the per-frame step once
    (float32) into ``onnx_cache_dir``, keyed by profile, weights file, input size and
    RoPE rounding, and reuses the export afterwards.
    """
    if spec.geometry_backend == 'onnx':
        from vlm3r_ros.models.cut3r.onnx_backend import OnnxCut3rStream, export_onnx
        path = onnx_export_path(spec, size, cut3r.rope_fp16_rounding)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            export_onnx(cut3r.float(), path, input_size=size)
        return lambda: OnnxCut3rStream(path, image_size=size, resize_mode=resize_mode)
    return lambda: Cut3rStream(cut3r, image_size=size, resize_mode=resize_mode)


def onnx_export_path(spec: ModelSpec, size: tuple[int, int],
                     rope_fp16_rounding: bool = False) -> Path:
    """Return where the ONNX export of this CUT3R configuration is cached."""
    import hashlib
    weights = spec.cut3r_weights or (str(CUT3R_SMALL) if spec.profile == 'tiny'
                                     and CUT3R_SMALL.is_file() else '')
    source = weights or f'{spec.profile}-seed{TINY_SEED}'
    stamp = Path(source).stat().st_mtime_ns if weights else 0
    rounding = '|rope16' if rope_fp16_rounding else ''
    digest = hashlib.sha256(f'{Path(source).resolve() if weights else source}'
                            f'|{stamp}|{size}{rounding}'.encode()).hexdigest()[:16]
    return Path(spec.onnx_cache_dir).expanduser() / f'cut3r_{digest}.onnx'
