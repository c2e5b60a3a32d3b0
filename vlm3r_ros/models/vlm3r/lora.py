"""LoRA adapters in the PEFT file layout, merged into base weights (no peft dependency).

Released VLM-3R adapter: `adapter_config.json` (r=128, lora_alpha=256, target_modules = every
Linear of the LLM except lm_head) and `adapter_model.safetensors` (or `.bin`) with keys
`base_model.model.<module>.lora_A.weight` (r, in) and `...lora_B.weight` (out, r).
Merge: W += (B @ A) * scale with scale = alpha / r (alpha / sqrt(r) with rsLoRA).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from vlm3r_ros.models.vlm3r.weights_io import (
    CheckpointError, TensorStore, format_names, read_json, read_weights_file, write_json)

ADAPTER_PREFIX = 'base_model.model.'
_LORA_KEY = re.compile(r'^(?P<module>.+)\.lora_(?P<part>[AB])\.weight$')


@dataclass(frozen=True)
class LoraAdapter:
    """A parsed adapter: scale and (A, B) per target module (official module names)."""

    r: int
    alpha: float
    scale: float
    target_modules: tuple[str, ...] | str
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]]


def targets_module(target_modules: tuple[str, ...] | str, module: str) -> bool:
    """PEFT matching: a string is a full regex; a list matches exact names or name suffixes."""
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, module) is not None
    return any(module == t or module.endswith('.' + t) for t in target_modules)


def _adapter_weights_path(directory: Path) -> Path:
    """Return adapter_model.safetensors or adapter_model.bin; raises CheckpointError if none."""
    for name in ('adapter_model.safetensors', 'adapter_model.bin'):
        if (directory / name).exists():
            return directory / name
    raise CheckpointError(
        f'{directory} holds neither adapter_model.safetensors nor adapter_model.bin')


def read_lora_adapter(directory: Path) -> LoraAdapter:
    """Parse `adapter_config.json` and the adapter weights in `directory`.

    Raises CheckpointError for unsupported settings (DoRA, fan_in_fan_out, trained biases,
    modules_to_save), unrecognised keys, unpaired A/B, rank or shape mismatches, or modules
    outside target_modules.
    """
    config = read_json(directory / 'adapter_config.json')
    peft_type = config.get('peft_type', 'LORA')
    if peft_type != 'LORA':
        raise CheckpointError(f'adapter peft_type {peft_type!r} is not LORA')
    for flag in ('use_dora', 'fan_in_fan_out'):
        if config.get(flag):
            raise CheckpointError(f'adapter setting {flag}=true is not supported')
    if config.get('bias', 'none') != 'none':
        raise CheckpointError(f"adapter bias={config.get('bias')!r} is not supported (only 'none')")
    if config.get('modules_to_save'):
        raise CheckpointError('adapter modules_to_save is not supported')
    try:
        rank = int(config['r'])
        alpha = float(config['lora_alpha'])
        raw_targets = config['target_modules']
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f'adapter_config.json lacks a valid r / lora_alpha / target_modules: {exc}') from exc
    if rank <= 0:
        raise CheckpointError(f'adapter rank must be positive, got {rank}')
    targets: tuple[str, ...] | str = \
        raw_targets if isinstance(raw_targets, str) else tuple(raw_targets)
    scale = alpha / math.sqrt(rank) if config.get('use_rslora') else alpha / rank

    store: TensorStore = read_weights_file(_adapter_weights_path(directory))
    parts: dict[str, dict[str, torch.Tensor]] = {}
    unknown: list[str] = []
    for key in store:
        match = None
        if key.startswith(ADAPTER_PREFIX):
            match = _LORA_KEY.match(key[len(ADAPTER_PREFIX):])
        if match is None:
            unknown.append(key)
            continue
        parts.setdefault(match['module'], {})[match['part']] = store.load(key)
    problems: list[str] = []
    if unknown:
        problems.append(format_names('unrecognised adapter keys', sorted(unknown)))
    unpaired = sorted(m for m, p in parts.items() if set(p) != {'A', 'B'})
    if unpaired:
        problems.append(format_names('modules without both lora_A and lora_B', unpaired))
    untargeted = sorted(m for m in parts if not targets_module(targets, m))
    if untargeted:
        problems.append(format_names('adapter modules outside target_modules', untargeted))
    bad_shape = sorted(m for m, p in parts.items() if set(p) == {'A', 'B'} and (
        p['A'].ndim != 2 or p['B'].ndim != 2 or p['A'].shape[0] != rank or p['B'].shape[1] != rank))
    if bad_shape:
        problems.append(format_names(f'lora pairs whose rank is not r={rank}', bad_shape))
    if problems:
        raise CheckpointError(f'{directory}: ' + '; '.join(problems))
    pairs = {module: (p['A'], p['B']) for module, p in parts.items()}
    return LoraAdapter(r=rank, alpha=alpha, scale=scale, target_modules=targets, pairs=pairs)


@torch.no_grad()
def merge_lora_(weight: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor,
                scale: float) -> None:
    """In place: weight += (B @ A) * scale, computed in float32 on the weight's device."""
    a = lora_a.to(device=weight.device, dtype=torch.float32)
    b = lora_b.to(device=weight.device, dtype=torch.float32)
    merged = weight.float() + (b @ a) * scale
    weight.copy_(merged.to(weight.dtype))


def write_lora_adapter(directory: Path, pairs: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
                       r: int, alpha: float, target_modules: Iterable[str] | None = None,
                       fmt: str = 'safetensors') -> None:
    """Write a PEFT-layout adapter (config + weights) for official module names in `pairs`.

    `target_modules` defaults to the module names themselves (as the reference's
    find_all_linear_names produces). fmt is 'safetensors' or 'bin'.
    """
    directory.mkdir(parents=True, exist_ok=True)
    targets = sorted(pairs) if target_modules is None else sorted(target_modules)
    write_json(directory / 'adapter_config.json', {
        'peft_type': 'LORA', 'task_type': 'CAUSAL_LM', 'r': r, 'lora_alpha': alpha,
        'lora_dropout': 0.05, 'bias': 'none', 'target_modules': targets, 'use_rslora': False,
        'use_dora': False, 'fan_in_fan_out': False, 'modules_to_save': None,
        'base_model_name_or_path': 'lmms-lab/LLaVA-NeXT-Video-7B-Qwen2'})
    tensors: dict[str, torch.Tensor] = {}
    for module, (lora_a, lora_b) in pairs.items():
        for part, tensor in (('A', lora_a), ('B', lora_b)):
            key = f'{ADAPTER_PREFIX}{module}.lora_{part}.weight'
            tensors[key] = tensor.detach().cpu().contiguous().clone()
    if fmt == 'safetensors':
        save_file(tensors, str(directory / 'adapter_model.safetensors'), metadata={'format': 'pt'})
    elif fmt == 'bin':
        torch.save(tensors, str(directory / 'adapter_model.bin'))
    else:
        raise ValueError(f'unknown adapter format {fmt!r}')
