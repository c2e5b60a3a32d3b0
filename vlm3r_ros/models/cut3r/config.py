"""CUT3R model configuration and the official constructor strings.

The official checkpoints store the model constructor as a Python expression string
(``ckpt['args'].model``), for example ``ARCroco3DStereo(ARCroco3DStereoConfig(...))``.
The official loader ``eval``s it; here it is parsed with :mod:`ast` and only literal
keyword values are accepted (numbers, strings, booleans, ``None``, tuples, lists and the
name ``inf``), so a checkpoint can never run code through its config.

Facts below were read from the official CUT3R code (``src/dust3r/model.py``,
``src/croco/models/croco.py``, ``config/*.yaml``):

* ``ARCroco3DStereoConfig`` defaults: ``ray_enc_depth=2``, ``state_size=324``,
  ``local_mem_size=256``, ``state_pe='2d'``, ``state_dec_num_heads=16``,
  ``landscape_only=True``, ``patch_embed_cls='PatchEmbedDust3R'``.
* ``CrocoConfig`` defaults: ``img_size=224``, ``patch_size=16``, ``mlp_ratio=4``,
  LayerNorm eps 1e-6, ``norm_im2_in_dec=True``.
* The ray-map encoder blocks always use 16 heads (a literal in the official code).
* The DPT head uses ``feature_dim=256``, ``last_dim=128`` and the DPT adapter's default
  ``layer_dims=[96, 192, 384, 768]`` (literals, independent of the model dims).
"""

from __future__ import annotations

import ast
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

INF = math.inf

# Constructor string of the final checkpoint ``cut3r_512_dpt_4_64.pth``
# (config/dpt_512_vary_4_64.yaml in the official repository).
OFFICIAL_512_DPT_ARGS = (
    "ARCroco3DStereo(ARCroco3DStereoConfig(freeze='encoder', state_size=768, "
    "state_pe='2d', pos_embed='RoPE100', rgb_head=True, pose_head=True, "
    "patch_embed_cls='ManyAR_PatchEmbed', img_size=(512, 512), head_type='dpt', "
    "output_mode='pts3d+pose', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), "
    "pose_mode=('exp', -inf, inf), enc_embed_dim=1024, enc_depth=24, enc_num_heads=16, "
    "dec_embed_dim=768, dec_depth=12, dec_num_heads=12, landscape_only=False))"
)

# Constructor string of the intermediate checkpoint ``cut3r_224_linear_4.pth``
# (the output of config/stage2.yaml: 224x224, linear head, 4 views).
OFFICIAL_224_LINEAR_ARGS = (
    "ARCroco3DStereo(ARCroco3DStereoConfig(state_size=768, state_pe='2d', "
    "pos_embed='RoPE100', rgb_head=True, pose_head=True, img_size=(224, 224), "
    "head_type='linear', output_mode='pts3d+pose', depth_mode=('exp', -inf, inf), "
    "conf_mode=('exp', 1, inf), pose_mode=('exp', -inf, inf), enc_embed_dim=1024, "
    "enc_depth=24, enc_num_heads=16, dec_embed_dim=768, dec_depth=12, dec_num_heads=12))"
)

# Keyword arguments of the official constructors that do not change the architecture.
_IGNORED_OFFICIAL_KWARGS = frozenset({'mask_ratio'})

# Names allowed as bare identifiers inside the constructor string.
_SAFE_NAMES: dict[str, Any] = {'inf': INF, 'True': True, 'False': False, 'None': None}


class ConfigParseError(ValueError):
    """Raised when an official constructor string cannot be parsed safely."""


def _literal(node: ast.AST) -> Any:
    """Return the Python value of a literal AST node.

    Raises:
        ConfigParseError: if the node is anything but a literal, a tuple/list of
            literals, a signed number or one of the names in ``_SAFE_NAMES``.
    """
    if isinstance(node, ast.Constant) and isinstance(
        node.value, (int, float, str, bool, type(None))
    ):
        return node.value
    if isinstance(node, ast.Name) and node.id in _SAFE_NAMES:
        return _SAFE_NAMES[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigParseError('unary sign applied to a non-number')
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, (ast.Tuple, ast.List)):
        values = [_literal(elt) for elt in node.elts]
        return tuple(values) if isinstance(node, ast.Tuple) else values
    raise ConfigParseError(f'unsupported expression in model string: {ast.dump(node)}')


def parse_official_model_string(text: str) -> dict[str, Any]:
    """Parse ``ARCroco3DStereo(ARCroco3DStereoConfig(k=v, ...))`` into keyword args.

    Nothing is evaluated: the string is parsed to an AST whose shape is checked and
    whose keyword values must be literals.

    Returns:
        The keyword arguments given to ``ARCroco3DStereoConfig``.

    Raises:
        ConfigParseError: on a syntax error, an unexpected call structure, positional
            arguments, ``**`` expansion or a non-literal value.
    """
    try:
        tree = ast.parse(text.strip(), mode='eval')
    except SyntaxError as exc:
        raise ConfigParseError(f'model string is not valid Python syntax: {exc}') from exc
    outer = tree.body
    if not (
        isinstance(outer, ast.Call)
        and isinstance(outer.func, ast.Name)
        and outer.func.id == 'ARCroco3DStereo'
        and len(outer.args) == 1
        and not outer.keywords
    ):
        raise ConfigParseError('expected ARCroco3DStereo(<config>) at the top level')
    inner = outer.args[0]
    if not (
        isinstance(inner, ast.Call)
        and isinstance(inner.func, ast.Name)
        and inner.func.id == 'ARCroco3DStereoConfig'
        and not inner.args
    ):
        raise ConfigParseError('expected ARCroco3DStereoConfig(k=v, ...) with keywords only')
    kwargs: dict[str, Any] = {}
    for keyword in inner.keywords:
        if keyword.arg is None:
            raise ConfigParseError('** expansion is not allowed in the model string')
        if keyword.arg in kwargs:
            raise ConfigParseError(f'duplicate keyword {keyword.arg!r}')
        kwargs[keyword.arg] = _literal(keyword.value)
    return kwargs


def _format_literal(value: Any) -> str:
    """Return a literal's source form, writing infinities as ``inf``."""
    if isinstance(value, float) and math.isinf(value):
        return 'inf' if value > 0 else '-inf'
    if isinstance(value, tuple):
        inner = ', '.join(_format_literal(v) for v in value)
        return f'({inner},)' if len(value) == 1 else f'({inner})'
    if isinstance(value, list):
        return '[' + ', '.join(_format_literal(v) for v in value) + ']'
    return repr(value)


def _pair(value: Any) -> tuple[int, int]:
    """Return ``(v, v)`` for an int and a 2-tuple of ints for a sequence."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f'expected a pair, got {value!r}')
        return int(value[0]), int(value[1])
    return int(value), int(value)


@dataclass(frozen=True)
class Cut3rConfig:
    """Architecture of a CUT3R model (``ARCroco3DStereo``).

    Field names follow the official constructor where one exists. ``dpt_*`` fields are
    literals in the official code; they are fields here only so reduced-size profiles
    can shrink the DPT head (``tiny``). ``freeze``, ``landscape_only`` and
    ``patch_embed_cls`` are recorded for round-tripping but do not change the model:
    the official loader forces ``landscape_only=False`` and swaps ``ManyAR_PatchEmbed``
    for ``PatchEmbedDust3R`` (same parameters).
    """

    img_size: tuple[int, int] = (224, 224)
    patch_size: int = 16
    enc_embed_dim: int = 1024
    enc_depth: int = 24
    enc_num_heads: int = 16
    dec_embed_dim: int = 768
    dec_depth: int = 12
    dec_num_heads: int = 12
    mlp_ratio: float = 4.0
    norm_im2_in_dec: bool = True
    pos_embed: str = 'RoPE100'
    state_size: int = 324
    state_pe: str = '2d'
    state_dec_num_heads: int = 16
    local_mem_size: int = 256
    ray_enc_depth: int = 2
    ray_enc_num_heads: int = 16
    head_type: str = 'linear'
    output_mode: str = 'pts3d+pose'
    depth_mode: tuple[str, float, float] = ('exp', -INF, INF)
    conf_mode: tuple[str, float, float] = ('exp', 1.0, INF)
    pose_mode: tuple[str, float, float] = ('exp', -INF, INF)
    rgb_head: bool = False
    pose_head: bool = False
    depth_head: bool = False
    pose_conf_head: bool = False
    dpt_feature_dim: int = 256
    dpt_last_dim: int = 128
    dpt_layer_dims: tuple[int, int, int, int] = (96, 192, 384, 768)
    freeze: str = 'none'
    landscape_only: bool = True
    patch_embed_cls: str = 'PatchEmbedDust3R'

    def __post_init__(self) -> None:
        """Normalise tuple fields and reject configurations this port does not build.

        Raises:
            ValueError: for an unsupported head/output mode, positional embedding,
                state positional embedding, or dims that do not split into heads.
        """
        object.__setattr__(self, 'img_size', _pair(self.img_size))
        object.__setattr__(self, 'dpt_layer_dims', tuple(int(d) for d in self.dpt_layer_dims))
        for name in ('depth_mode', 'conf_mode', 'pose_mode'):
            mode = tuple(getattr(self, name))
            if len(mode) != 3:
                raise ValueError(f'{name} must be (mode, vmin, vmax), got {mode!r}')
            object.__setattr__(self, name, (str(mode[0]), float(mode[1]), float(mode[2])))
        if self.output_mode != 'pts3d+pose' or not self.pose_head:
            raise ValueError(
                'only output_mode="pts3d+pose" with pose_head=True is supported '
                '(both official checkpoints use it)'
            )
        if self.head_type not in ('dpt', 'linear'):
            raise ValueError(f'unknown head_type {self.head_type!r}')
        if not self.pos_embed.startswith('RoPE'):
            raise ValueError(
                f'only RoPE positional embeddings are supported, got {self.pos_embed!r}'
            )
        if self.state_pe not in ('2d', '1d', 'none'):
            raise ValueError(f'unknown state_pe {self.state_pe!r}')
        if len(self.dpt_layer_dims) != 4:
            raise ValueError('dpt_layer_dims must have 4 entries')
        for dim, heads, what in (
            (self.enc_embed_dim, self.enc_num_heads, 'encoder'),
            (self.enc_embed_dim, self.ray_enc_num_heads, 'ray-map encoder'),
            (self.dec_embed_dim, self.dec_num_heads, 'image decoder'),
            (self.dec_embed_dim, self.state_dec_num_heads, 'state decoder'),
        ):
            if dim % heads or (dim // heads) % 4:
                raise ValueError(
                    f'{what}: dim {dim} with {heads} heads gives a head dim that is not '
                    'a multiple of 4 (2D RoPE needs one)'
                )
        if self.depth_mode[1] != -INF or self.depth_mode[2] != INF:
            raise ValueError(
                'bounded depth_mode is not supported (the official code asserts this)'
            )

    @property
    def rope_freq(self) -> float:
        """Return the RoPE base frequency parsed from ``pos_embed`` (e.g. 100)."""
        return float(self.pos_embed[len('RoPE'):])

    @property
    def hook_layers(self) -> tuple[int, int, int, int]:
        """Return the decoder outputs fed to the head: 0, depth*2//4, depth*3//4, depth."""
        d = self.dec_depth
        return 0, d * 2 // 4, d * 3 // 4, d

    # ------------------------------------------------------------------ profiles
    @classmethod
    def official_512_dpt(cls) -> 'Cut3rConfig':
        """Return the config of ``cut3r_512_dpt_4_64.pth`` (DPT head, final model)."""
        return cls.from_official_string(OFFICIAL_512_DPT_ARGS)

    @classmethod
    def official_224_linear(cls) -> 'Cut3rConfig':
        """Return the config of ``cut3r_224_linear_4.pth`` (linear head, intermediate)."""
        return cls.from_official_string(OFFICIAL_224_LINEAR_ARGS)

    @classmethod
    def tiny(cls, head_type: str = 'dpt') -> 'Cut3rConfig':
        """Return a small config with the official layout, for tests and CPU benchmarks.

        Same modules and parameter names as the official models; only widths, depths,
        state size and memory size shrink. 224x224 input gives 14x14 patches.
        """
        base = cls.official_512_dpt() if head_type == 'dpt' else cls.official_224_linear()
        return replace(
            base,
            img_size=(224, 224),
            enc_embed_dim=64,
            enc_depth=2,
            enc_num_heads=4,
            ray_enc_num_heads=4,
            dec_embed_dim=48,
            dec_depth=2,
            dec_num_heads=4,
            state_dec_num_heads=4,
            state_size=16,
            local_mem_size=8,
            dpt_feature_dim=32,
            dpt_last_dim=16,
            dpt_layer_dims=(8, 16, 24, 32),
        )

    @classmethod
    def small(cls) -> 'Cut3rConfig':
        """Return the config of the trained embedded default (``cut3r_small``).

        The official stage-1 layout (linear head, RGB and pose heads, 224-linear
        constructor) at a size that trains on two CPU cores: encoder 96 x 3, decoders
        64 x 3, 64 state tokens, 16 pose-memory slots, 160x160 input (10x10 patches).
        About 3.2M parameters.
        """
        return replace(
            cls.official_224_linear(),
            img_size=(160, 160),
            enc_embed_dim=96,
            enc_depth=3,
            enc_num_heads=4,
            ray_enc_num_heads=4,
            dec_embed_dim=64,
            dec_depth=3,
            dec_num_heads=4,
            state_dec_num_heads=4,
            state_size=64,
            local_mem_size=16,
        )

    # ------------------------------------------------------------- conversions
    @classmethod
    def from_official_kwargs(cls, kwargs: dict[str, Any]) -> 'Cut3rConfig':
        """Build a config from ``ARCroco3DStereoConfig`` keyword arguments.

        Defaults not given in ``kwargs`` are the official constructor defaults.

        Raises:
            ConfigParseError: for a keyword this port does not know.
            ValueError: for an unsupported value (see ``__post_init__``).
        """
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in kwargs.items():
            if key in _IGNORED_OFFICIAL_KWARGS:
                continue
            if key not in known:
                raise ConfigParseError(f'unknown model constructor argument {key!r}')
            values[key] = value
        return cls(**values)

    @classmethod
    def from_official_string(cls, text: str) -> 'Cut3rConfig':
        """Parse an official constructor string (see ``parse_official_model_string``)."""
        return cls.from_official_kwargs(parse_official_model_string(text))

    def to_official_string(self) -> str:
        """Return a constructor string that ``from_official_string`` maps back to ``self``.

        Every field is written, so the string also carries the ``dpt_*`` fields of
        reduced profiles (the official code would not accept those; the official
        configs above are the reference strings for the real checkpoints).
        """
        parts = [f'{k}={_format_literal(v)}' for k, v in asdict(self).items()]
        return 'ARCroco3DStereo(ARCroco3DStereoConfig(' + ', '.join(parts) + '))'
