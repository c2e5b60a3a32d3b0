"""Load and save CUT3R checkpoints in the official layout, without running pickled code.

Official ``.pth`` files (``cut3r_512_dpt_4_64.pth``, ``cut3r_224_linear_4.pth``) are
``torch.save`` dicts with ``'model'`` (the state dict) and ``'args'`` (the training
config, whose ``model`` attribute is the constructor string). The training script is
Hydra-based, so ``args`` is most likely an OmegaConf ``DictConfig``; DUSt3R-style
scripts store an ``argparse.Namespace``. Both are read with
``torch.load(weights_only=True)``:

* ``argparse.Namespace`` is allow-listed as itself (a plain attribute bag);
* OmegaConf classes, ``typing.Any`` and ``collections.defaultdict`` are allow-listed
  under their names but mapped to inert local stand-ins that only store the pickled
  state, so no code from the file (nor OmegaConf itself) ever runs;
* any other global makes loading fail with :class:`CheckpointError`.

The constructor string is parsed with :mod:`ast` (see ``config.py``), never ``eval``-ed.
``.safetensors`` files are read with ``safetensors``; the constructor string may be
stored in the header metadata under ``'model'``.

Loading is strict with one tolerance, the one the official loader has: a checkpoint
without any ``dec_blocks_state.*`` key (one saved before CUT3R had a state decoder) gets
copies of its ``dec_blocks.*`` there, with a logged note. Every other missing,
unexpected or mis-shaped key still fails (the official loader would skip them silently).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch

from vlm3r_ros.models.cut3r.config import ConfigParseError, Cut3rConfig
from vlm3r_ros.models.cut3r.model import Cut3rModel

PathLike = Union[str, Path]
LOG = logging.getLogger(__name__)

_MAX_LISTED = 20
# Builtins that may appear in pickled configs; their constructors are side-effect free.
_HARMLESS_BUILTINS: dict[str, Any] = {
    f'builtins.{t.__name__}': t
    for t in (dict, list, tuple, set, frozenset, int, float, str, bool, bytes, complex)
}


class CheckpointError(RuntimeError):
    """Raised when a checkpoint cannot be read or does not match the model."""


class _Inert:
    """Stand-in for a class named in a checkpoint: records state, runs nothing."""

    _source = ''

    def __new__(cls, *args: Any, **kwargs: Any) -> '_Inert':
        """Create an empty instance, remembering the positional arguments."""
        obj = super().__new__(cls)
        obj.__dict__['_args'] = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Accept and ignore constructor arguments."""

    def __repr__(self) -> str:
        """Return a readable form naming the stood-in class."""
        return f'<inert {self._source}>'


def _plain_dict(*args: Any, **kwargs: Any) -> dict:
    """Stand-in for ``collections.defaultdict``: an empty plain dict (factory ignored)."""
    return {}


def _safe_globals_for(names: list[str]) -> list[tuple[Callable[..., Any], str]]:
    """Return ``(stand-in, name)`` pairs for the non-default globals of a checkpoint.

    Raises:
        CheckpointError: if a global is outside the allowed set.
    """
    pairs: list[tuple[Callable[..., Any], str]] = []
    refused = []
    for name in sorted(set(names)):
        if name == 'argparse.Namespace':
            pairs.append((argparse.Namespace, name))
        elif name in _HARMLESS_BUILTINS:
            pairs.append((_HARMLESS_BUILTINS[name], name))
        elif name == 'collections.defaultdict':
            pairs.append((_plain_dict, name))
        elif name.startswith(('omegaconf.', 'typing.')):
            stub = type(name.rsplit('.', 1)[-1], (_Inert,), {'_source': name})
            pairs.append((stub, name))
        else:
            refused.append(name)
    if refused:
        raise CheckpointError(
            'refusing to unpickle globals that are not plain config containers: '
            + ', '.join(refused)
            + '. Re-save the checkpoint as {"model": state_dict, "args": Namespace(model=...)} '
            'or as .safetensors.'
        )
    return pairs


def _model_string_from_args(args: Any) -> Optional[str]:
    """Return the constructor string held by a checkpoint's ``args`` (None if absent)."""
    value: Any = None
    if isinstance(args, str):
        value = args
    elif isinstance(args, argparse.Namespace):
        value = getattr(args, 'model', None)
    elif isinstance(args, dict):
        value = args.get('model')
    elif isinstance(args, _Inert):
        # OmegaConf DictConfig state: {'_content': {'model': AnyNode{'_val': str}}, ...}
        content = vars(args).get('_content')
        if isinstance(content, dict):
            value = content.get('model')
    if isinstance(value, _Inert):
        value = vars(value).get('_val')
    return value if isinstance(value, str) else None


def _describe_keys(names: list[str]) -> str:
    """Return up to ``_MAX_LISTED`` names and a count of the rest."""
    shown = ', '.join(names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f' ... and {more} more' if more > 0 else '')


def _verify_zip(path: Path) -> None:
    """Check the zip container and every record's CRC (detects truncation and bit flips).

    Raises:
        CheckpointError: if the file is not a readable zip or a record is damaged.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(
            f'{path}: not a readable zip-format torch checkpoint (truncated or corrupt?): {exc}'
        ) from exc
    except Exception as exc:  # zlib.error and friends from damaged records
        raise CheckpointError(f'{path}: corrupt checkpoint record: {exc}') from exc
    if bad is not None:
        raise CheckpointError(f'{path}: corrupt checkpoint, CRC mismatch in record {bad!r}')


def _read_pth(path: Path) -> tuple[dict[str, torch.Tensor], Optional[str]]:
    """Return the state dict and constructor string of a ``.pth`` checkpoint."""
    _verify_zip(path)
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as exc:
        raise CheckpointError(f'{path}: cannot inspect checkpoint pickle: {exc}') from exc
    allowed = _safe_globals_for(names)
    try:
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(str(path), map_location='cpu', weights_only=True)
    except Exception as exc:
        raise CheckpointError(f'{path}: cannot load checkpoint safely: {exc}') from exc
    if isinstance(obj, dict) and 'model' in obj and isinstance(obj['model'], dict):
        state, args = obj['model'], obj.get('args')
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state, args = obj, None
    else:
        raise CheckpointError(f'{path}: expected a dict with a "model" state dict')
    return dict(state), _model_string_from_args(args)


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], Optional[str]]:
    """Return the tensors and the ``'model'`` metadata string of a ``.safetensors`` file."""
    from safetensors import safe_open

    try:
        state: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework='pt', device='cpu') as f:
            metadata = f.metadata() or {}
            for key in f.keys():
                state[key] = f.get_tensor(key)
    except Exception as exc:
        raise CheckpointError(
            f'{path}: cannot read safetensors file (truncated or corrupt?): {exc}'
        ) from exc
    return state, metadata.get('model')


def read_checkpoint(path: PathLike) -> tuple[dict[str, torch.Tensor], Optional[str]]:
    """Read a CUT3R checkpoint without building a model.

    Returns:
        ``(state_dict, model_string)``; ``model_string`` is the official constructor
        string or None when the file carries none. A ``module.`` prefix on every key
        (DataParallel) is removed.

    Raises:
        CheckpointError: if the file is missing, truncated, corrupt, holds
            disallowed pickled objects or has no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint not found: {path}')
    if path.suffix == '.safetensors':
        state, model_string = _read_safetensors(path)
    else:
        state, model_string = _read_pth(path)
    if state and all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f'{path}: non-tensor entries in the state dict: {_describe_keys(bad)}'
        )
    return state, model_string


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Check that ``state`` has exactly the model's keys and shapes.

    Raises:
        CheckpointError: listing missing, unexpected and mis-shaped keys.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shaped = [
        f'{k} (checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)})'
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f'{len(missing)} missing: {_describe_keys(missing)}')
    if unexpected:
        problems.append(f'{len(unexpected)} unexpected: {_describe_keys(unexpected)}')
    if shaped:
        problems.append(f'{len(shaped)} mis-shaped: {_describe_keys(shaped)}')
    if problems:
        raise CheckpointError('checkpoint does not match the model: ' + '; '.join(problems))


def fill_state_decoder(
    model: torch.nn.Module, state: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], int]:
    """Return ``state`` with ``dec_blocks_state.*`` copied from ``dec_blocks.*`` if absent.

    As the official ``ARCroco3DStereo.load_state_dict``: only when the model has a state
    decoder and the checkpoint has no ``dec_blocks_state`` key at all; otherwise
    ``state`` is returned as it is. The copies are clones (not tied to the image decoder).

    Returns:
        ``(state, number of keys added)``.
    """
    wanted = [k for k in model.state_dict() if k.startswith('dec_blocks_state.')]
    if not wanted or any(k.startswith('dec_blocks_state') for k in state):
        return state, 0
    filled = dict(state)
    added = 0
    for key in wanted:
        source = 'dec_blocks.' + key[len('dec_blocks_state.'):]
        if source in state:
            filled[key] = state[source].clone()
            added += 1
    return filled, added


def _check_finite(state: dict[str, torch.Tensor]) -> None:
    """Raise CheckpointError if a floating tensor holds NaN or inf (damaged payload)."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f'non-finite values (corrupt weights?) in: {_describe_keys(bad)}')


def _config_diff(a: Cut3rConfig, b: Cut3rConfig) -> list[str]:
    """Return ``field: a != b`` lines for fields that differ."""
    return [
        f'{f.name}: {getattr(a, f.name)!r} != {getattr(b, f.name)!r}'
        for f in dataclasses.fields(Cut3rConfig)
        if getattr(a, f.name) != getattr(b, f.name)
    ]


# Fields that do not change the network (the official loader overrides or ignores them).
_NON_ARCH_FIELDS = frozenset({'freeze', 'landscape_only', 'patch_embed_cls', 'img_size'})


def load_cut3r(
    path: PathLike,
    config: Optional[Cut3rConfig] = None,
    device: Union[str, torch.device] = 'cpu',
    dtype: torch.dtype = torch.float32,
    rope_fp16_rounding: bool = False,
) -> Cut3rModel:
    """Build a :class:`Cut3rModel` from a checkpoint, strictly.

    A checkpoint without a state decoder (no ``dec_blocks_state.*`` key) is completed
    from its image decoder, as the official loader does, and a note is logged.

    Args:
        path: ``.pth`` (official layout) or ``.safetensors`` file.
        config: architecture to use when the checkpoint carries no constructor string.
            When both exist they must describe the same network.
        device: where to put the model.
        dtype: backbone dtype (float32, float16 or bfloat16); the head stays float32.
        rope_fp16_rounding: round q/k to float16 around the image encoder's RoPE as the
            reference does (see :meth:`Cut3rModel.set_rope_fp16_rounding`).

    Returns:
        The model in eval mode with gradients disabled.

    Raises:
        CheckpointError: unreadable/corrupt file, unsafe pickle content, an
            unparseable or conflicting config, no config at all, non-finite weights,
            or missing/unexpected/mis-shaped keys (other than a whole missing state
            decoder).
    """
    state, model_string = read_checkpoint(path)
    if model_string is not None:
        try:
            found = Cut3rConfig.from_official_string(model_string)
        except (ConfigParseError, ValueError) as exc:
            raise CheckpointError(f'{path}: bad model constructor string: {exc}') from exc
        if config is not None:
            diff = [
                d for d in _config_diff(config, found)
                if d.split(':')[0] not in _NON_ARCH_FIELDS
            ]
            if diff:
                raise CheckpointError(
                    f'{path}: given config differs from the checkpoint\'s: ' + '; '.join(diff)
                )
        config = found
    if config is None:
        raise CheckpointError(f'{path}: checkpoint has no model constructor string; pass config=')
    _check_finite(state)
    with torch.device('meta'):
        model = Cut3rModel(config)
    state, added = fill_state_decoder(model, state)
    if added:
        LOG.warning('%s: checkpoint has no state decoder (dec_blocks_state); copied %d '
                    'tensors from dec_blocks, as the official loader does', path, added)
    check_state_dict(model, state)
    model.load_state_dict(state, strict=True, assign=True)
    model.to(device)
    model.to_inference_dtype(dtype)
    model.set_rope_fp16_rounding(rope_fp16_rounding)
    model.eval()
    model.requires_grad_(False)
    return model


def save_official_layout(
    model: Cut3rModel, path: PathLike, args_string: Optional[str] = None,
    metadata: Optional[dict[str, str]] = None,
) -> Path:
    """Write ``model`` in the official checkpoint layout.

    ``.pth``: ``{'model': state_dict, 'args': argparse.Namespace(model=args_string),
    'epoch': 0}``. ``.safetensors``: the state dict with ``args_string`` in the header
    metadata under ``'model'`` (shared tensors are written as separate copies).

    Args:
        model: the model to save.
        path: destination; the suffix picks the format.
        args_string: constructor string; defaults to ``model.config.to_official_string()``.
        metadata: extra string entries for the safetensors header (e.g. the training
            step); ignored for ``.pth``.

    Returns:
        The path written.
    """
    path = Path(path)
    args_string = args_string if args_string is not None else model.config.to_official_string()
    state = {k: v.detach().to('cpu') for k, v in model.state_dict().items()}
    if path.suffix == '.safetensors':
        from safetensors.torch import save_file

        save_file({k: v.contiguous().clone() for k, v in state.items()}, str(path),
                  metadata={**(metadata or {}), 'model': args_string})
    else:
        torch.save({'model': state, 'args': argparse.Namespace(model=args_string), 'epoch': 0},
                   str(path))
    return path
