"""Reading and writing weight files safely: safetensors (lazy) and torch `.bin` (no pickles).

`.bin` files are read with `torch.load(weights_only=True)`, which refuses arbitrary pickled
objects. Every failure is reported as a `CheckpointError` naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not match the model (names listed)."""


def format_names(title: str, names: list[str], limit: int = 20) -> str:
    """Return '<title> (n): a, b, ... and k more' for error messages."""
    shown = ', '.join(names[:limit])
    more = f' ... and {len(names) - limit} more' if len(names) > limit else ''
    return f'{title} ({len(names)}): {shown}{more}'


def read_json(path: Path) -> dict[str, Any]:
    """Return the JSON object in `path`; raises CheckpointError when missing or malformed."""
    try:
        with open(path, encoding='utf-8') as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise CheckpointError(f'{path} does not exist') from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f'{path} is not readable JSON: {exc}') from exc
    if not isinstance(data, dict):
        raise CheckpointError(f'{path} must hold a JSON object')
    return data


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write `data` as indented JSON."""
    path.write_text(json.dumps(dict(data), indent=2, sort_keys=True) + '\n', encoding='utf-8')


class TensorStore:
    """Names, shapes and lazy loaders of checkpoint tensors from one or more files."""

    def __init__(self) -> None:
        """Create an empty store."""
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._loaders: dict[str, Callable[[], torch.Tensor]] = {}
        self._origins: dict[str, str] = {}

    def __contains__(self, name: object) -> bool:
        """True when the store holds `name`."""
        return name in self._shapes

    def __iter__(self) -> Iterator[str]:
        """Iterate over the tensor names in insertion order."""
        return iter(list(self._shapes))

    def __len__(self) -> int:
        """Return the number of tensors."""
        return len(self._shapes)

    def add(self, name: str, shape: tuple[int, ...], loader: Callable[[], torch.Tensor],
            origin: str) -> None:
        """Register (or replace) one tensor."""
        self._shapes[name] = tuple(shape)
        self._loaders[name] = loader
        self._origins[name] = origin

    def shape(self, name: str) -> tuple[int, ...]:
        """Return the stored shape of `name`."""
        return self._shapes[name]

    def origin(self, name: str) -> str:
        """Return the file `name` comes from."""
        return self._origins[name]

    def load(self, name: str) -> torch.Tensor:
        """Read tensor `name` (CPU); raises CheckpointError when the file cannot deliver it."""
        try:
            return self._loaders[name]()
        except CheckpointError:
            raise
        except Exception as exc:  # safetensors / torch raise various types for corrupt data
            raise CheckpointError(f'{self._origins[name]}: cannot read {name}: {exc}') from exc

    def renamed(self, rename: Callable[[str], str]) -> TensorStore:
        """Return a new store with every name passed through `rename`."""
        out = TensorStore()
        for name in self:
            out.add(rename(name), self._shapes[name], self._loaders[name], self._origins[name])
        return out

    @classmethod
    def from_mapping(cls, tensors: Mapping[str, torch.Tensor], origin: str) -> TensorStore:
        """Wrap in-memory tensors."""
        store = cls()
        for name, tensor in tensors.items():
            store.add(name, tuple(tensor.shape), lambda t=tensor: t, origin)
        return store


def _open_safetensors(path: Path) -> Any:
    """Open a safetensors file for lazy reads; raises CheckpointError when unreadable."""
    try:
        return safe_open(str(path), framework='pt', device='cpu')
    except FileNotFoundError:
        raise CheckpointError(f'{path} does not exist') from None
    except Exception as exc:
        raise CheckpointError(f'{path} is not a valid safetensors file: {exc}') from exc


def read_safetensors(path: Path, names: list[str] | None = None) -> TensorStore:
    """Return a lazy store of `path`'s tensors (only `names` if given; each must exist)."""
    handle = _open_safetensors(path)
    available = set(handle.keys())
    wanted = list(available) if names is None else names
    missing = [name for name in wanted if name not in available]
    if missing:
        raise CheckpointError(
            f'{path}: ' + format_names('tensors listed but absent', sorted(missing)))
    store = TensorStore()
    for name in sorted(wanted):
        shape = tuple(handle.get_slice(name).get_shape())
        store.add(name, shape, lambda n=name: handle.get_tensor(n), str(path))
    return store


def read_torch_bin(path: Path) -> TensorStore:
    """Read a torch-saved dict of tensors without executing pickles (weights_only=True)."""
    try:
        data = torch.load(str(path), map_location='cpu', weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f'{path} does not exist') from None
    except Exception as exc:
        raise CheckpointError(f'{path} is not a readable weights-only torch file: {exc}') from exc
    if not isinstance(data, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()):
        raise CheckpointError(f'{path} must hold a flat dict of name -> tensor')
    return TensorStore.from_mapping(data, str(path))


def read_weights_file(path: Path) -> TensorStore:
    """Read a `.safetensors` or `.bin`/`.pt` weights file."""
    if path.suffix == '.safetensors':
        return read_safetensors(path)
    return read_torch_bin(path)


def read_safetensors_dir(directory: Path) -> TensorStore:
    """Read HF-layout weights: `model.safetensors.index.json` + shards, or `model.safetensors`.

    Raises CheckpointError when neither exists, the index is malformed, a shard is missing or
    corrupt, or a tensor the index names is absent from its shard.
    """
    index_path = directory / 'model.safetensors.index.json'
    single = directory / 'model.safetensors'
    if index_path.exists():
        index = read_json(index_path)
        weight_map = index.get('weight_map')
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f'{index_path} has no weight_map')
        by_file: dict[str, list[str]] = {}
        for name, filename in weight_map.items():
            if not isinstance(filename, str) or '/' in filename or filename.startswith('.'):
                raise CheckpointError(f'{index_path}: bad shard name {filename!r} for {name}')
            by_file.setdefault(filename, []).append(name)
        store = TensorStore()
        for filename, names in sorted(by_file.items()):
            shard = read_safetensors(directory / filename, names)
            for name in shard:
                store.add(name, shard.shape(name), lambda n=name, s=shard: s.load(n),
                          shard.origin(name))
        return store
    if single.exists():
        return read_safetensors(single)
    raise CheckpointError(
        f'{directory} holds neither model.safetensors.index.json nor model.safetensors')


def write_safetensors_dir(directory: Path, tensors: Mapping[str, torch.Tensor],
                          max_shard_bytes: int | None = None) -> list[Path]:
    """Write tensors in HF layout: one `model.safetensors`, or shards + index past the size.

    Returns the written weight files.
    """
    directory.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    total = 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().to('cpu').contiguous().clone()
        nbytes = tensor.numel() * tensor.element_size()
        if max_shard_bytes is not None and shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
        total += nbytes
    if len(shards) == 1:
        path = directory / 'model.safetensors'
        save_file(shards[0], str(path), metadata={'format': 'pt'})
        return [path]
    paths: list[Path] = []
    weight_map: dict[str, str] = {}
    for number, shard in enumerate(shards, start=1):
        filename = f'model-{number:05d}-of-{len(shards):05d}.safetensors'
        save_file(shard, str(directory / filename), metadata={'format': 'pt'})
        weight_map.update({name: filename for name in shard})
        paths.append(directory / filename)
    write_json(directory / 'model.safetensors.index.json',
               {'metadata': {'total_size': total}, 'weight_map': weight_map})
    return paths
