"""Load VLM-3R from local files in the official layout, and write tiny checkpoints in it.

Official layout (what `load_pretrained_model` of VITA-Group/VLM-3R reads):
  base dir (lmms-lab/LLaVA-NeXT-Video-7B-Qwen2): config.json, model.safetensors.index.json +
      shards (or model.safetensors), tokenizer files. Keys: `model.embed_tokens.weight`,
      `model.layers.N.…`, `model.norm.weight`, `lm_head.weight`, `model.mm_projector.{0,2}.…`,
      `model.image_newline`, `model.vision_tower.vision_tower.vision_model.…`.
  adapter dir (the VLM-3R release): config.json (the model config the reference builds from:
      fusion_block, spatial_feature_dim, …), non_lora_trainables.bin with
      `base_model.model.model.fusion_block.…` / `…mm_projector.…`, adapter_config.json +
      adapter_model.safetensors (LoRA r=128, alpha=256 on every LLM Linear but lm_head).
The reference builds the base model, loads the non-LoRA trainables over it, applies the LoRA and
merges it; `load_vlm3r` does the same with an explicit name map and fails with a
`CheckpointError` listing every unmapped, missing or mis-shaped tensor.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from vlm3r_ros.models.profiles import Profile, get_profile
from vlm3r_ros.models.vlm3r.lora import (
    LoraAdapter, merge_lora_, read_lora_adapter, targets_module, write_lora_adapter)
from vlm3r_ros.models.vlm3r.model import Vlm3rModel
from vlm3r_ros.models.vlm3r.network import Vlm3rNet, build_network, torch_dtype
from vlm3r_ros.models.vlm3r.tokenizer import load_tokenizer
from vlm3r_ros.models.vlm3r.weights_io import (
    CheckpointError, TensorStore, format_names, read_json, read_safetensors_dir,
    read_weights_file, write_json, write_safetensors_dir)

__all__ = [
    'CheckpointError', 'load_vlm3r', 'official_to_local', 'local_to_official',
    'official_state_dict', 'llm_lora_target_modules', 'random_lora_pairs', 'profile_from_config',
    'save_base_checkpoint', 'save_vlm3r_adapter',
]

_VISION_PREFIX = 'model.vision_tower.vision_tower.vision_model.'
# Official name prefix -> local name prefix (first match wins; all prefixes are disjoint).
_PREFIX_MAP: tuple[tuple[str, str], ...] = (
    (_VISION_PREFIX, 'vision_tower.'),
    ('model.fusion_block.', 'fusion_block.'),
    ('model.mm_projector.', 'mm_projector.'),
    ('model.embed_tokens.', 'language_model.model.embed_tokens.'),
    ('model.layers.', 'language_model.model.layers.'),
    ('model.norm.', 'language_model.model.norm.'),
    ('lm_head.', 'language_model.lm_head.'),
)
_EXACT_MAP: dict[str, str] = {'model.image_newline': 'image_newline'}
_LAYER_INDEX = re.compile(r'^encoder\.layers\.(\d+)\.')
NON_LORA_FILES: tuple[str, ...] = ('non_lora_trainables.bin', 'non_lora_trainables.safetensors')


def official_to_local(name: str) -> str | None:
    """Return the local parameter name for an official checkpoint name, or None if unmapped."""
    if name in _EXACT_MAP:
        return _EXACT_MAP[name]
    for official, local in _PREFIX_MAP:
        if name.startswith(official):
            return local + name[len(official):]
    return None


def local_to_official(name: str) -> str:
    """Return the official checkpoint name of a local parameter; raises KeyError if none."""
    for official, local in _EXACT_MAP.items():
        if name == local:
            return official
    for official, local in _PREFIX_MAP:
        if name.startswith(local):
            return official + name[len(local):]
    raise KeyError(f'no official name for {name!r}')


def _dropped_vision_key(rest: str, kept_layers: int) -> bool:
    """True for SigLIP tensors the reference never uses.

    Its tower deletes the pooling head and the layers after the selected one, and reads the
    hidden state before post_layernorm; position_ids is a recomputed index buffer.
    """
    if rest.startswith(('head.', 'post_layernorm.')) or rest == 'embeddings.position_ids':
        return True
    match = _LAYER_INDEX.match(rest)
    return match is not None and int(match.group(1)) >= kept_layers


def _is_known_unused(name: str, kept_layers: int) -> bool:
    """True for official names deliberately not loaded (documented reference behaviour)."""
    if not name.startswith(_VISION_PREFIX):
        return False
    return _dropped_vision_key(name[len(_VISION_PREFIX):], kept_layers)


# ------------------------------------------------------------------------------------ config
def _config_int(config: Mapping[str, Any], key: str, default: int | None = None) -> int:
    """Return an int config value; raises CheckpointError when missing or not an int."""
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f'config.json: {key} must be an integer, got {value!r}')
    return value


def profile_from_config(profile: Profile, config: Mapping[str, Any]) -> Profile:
    """Return `profile` with the LLM sizes of a LLaVA-Qwen `config.json`, after consistency checks.

    `spatial_tower_select_feature` sets which geometry tokens are fused ('all' = camera token
    + patches). The vision tower, geometry and pooling numbers stay the profile's (the
    reference takes SigLIP's sizes from its own defaults and pooling from evaluation
    overrides). rope_scaling
    and tie_word_embeddings are ignored because the reference forces them to None / False.
    Raises CheckpointError when the config contradicts the profile.
    """
    theta = config.get('rope_theta')
    if theta is None and isinstance(config.get('rope_parameters'), Mapping):
        theta = config['rope_parameters'].get('rope_theta')
    heads = _config_int(config, 'num_attention_heads')
    updates: dict[str, Any] = {
        'llm_hidden_size': _config_int(config, 'hidden_size'),
        'llm_intermediate_size': _config_int(config, 'intermediate_size'),
        'llm_num_layers': _config_int(config, 'num_hidden_layers'),
        'llm_num_heads': heads,
        'llm_num_kv_heads': _config_int(config, 'num_key_value_heads', heads),
        'llm_vocab_size': _config_int(config, 'vocab_size'),
        'llm_max_position_embeddings': _config_int(
            config, 'max_position_embeddings', profile.llm_max_position_embeddings),
        'llm_rope_theta': float(theta if theta is not None else profile.llm_rope_theta),
        'llm_rms_norm_eps': float(config.get('rms_norm_eps', profile.llm_rms_norm_eps)),
    }
    select = config.get('spatial_tower_select_feature')
    if select is not None:
        parts = {part.strip() for part in str(select).split(',')}
        if parts <= {'all', 'all_tokens'} or parts == {'camera_tokens', 'patch_tokens'}:
            updates['geometry_select'] = 'all'
        elif parts in ({'patch_tokens'}, {'camera_tokens'}):
            updates['geometry_select'] = parts.pop()
        else:
            raise CheckpointError(f'config.json: unknown spatial_tower_select_feature {select!r}')
    problems: list[str] = []
    checks = (
        ('mm_hidden_size', profile.vision_hidden_size),
        ('mm_projector_type', profile.projector_type),
        ('mm_vision_select_layer', profile.vision_select_layer),
        ('spatial_feature_dim', profile.geometry_dim),
    )
    for key, expected in checks:
        if key in config and config[key] != expected:
            problems.append(f'{key}={config[key]!r} but the profile needs {expected!r}')
    fusion = config.get('fusion_block')
    if fusion is not None and fusion != 'cross_attention':
        problems.append(f'fusion_block={fusion!r} is not implemented (only cross_attention)')
    if fusion is not None and profile.fusion != 'cross_attention':
        problems.append(f'config has a {fusion} fusion block but profile fusion is '
                        f'{profile.fusion!r}')
    if problems:
        raise CheckpointError('config.json does not match the profile: ' + '; '.join(problems))
    try:
        return dataclasses.replace(profile, **updates)
    except ValueError as exc:
        raise CheckpointError(f'config.json gives invalid sizes: {exc}') from exc


def llava_config(profile: Profile, vocab_size: int, *, with_fusion: bool) -> dict[str, Any]:
    """Return a LLaVA-Qwen `config.json` dict for `profile` (as the official files hold)."""
    config: dict[str, Any] = {
        'architectures': ['LlavaQwenForCausalLM'], 'model_type': 'llava_qwen',
        'hidden_size': profile.llm_hidden_size, 'intermediate_size': profile.llm_intermediate_size,
        'num_hidden_layers': profile.llm_num_layers, 'num_attention_heads': profile.llm_num_heads,
        'num_key_value_heads': profile.llm_num_kv_heads, 'vocab_size': vocab_size,
        'max_position_embeddings': profile.llm_max_position_embeddings,
        'rope_theta': profile.llm_rope_theta, 'rms_norm_eps': profile.llm_rms_norm_eps,
        'hidden_act': 'silu', 'tie_word_embeddings': False, 'use_cache': True,
        'use_sliding_window': False,
        'mm_hidden_size': profile.vision_hidden_size, 'mm_projector_type': profile.projector_type,
        'mm_vision_select_layer': profile.vision_select_layer,
        'mm_vision_select_feature': 'patch',
        'mm_vision_tower': 'google/siglip-so400m-patch14-384',
        'mm_patch_merge_type': 'spatial_unpad', 'mm_newline_position': profile.newline_position,
        'mm_spatial_pool_mode': profile.spatial_pool_mode,
        'mm_spatial_pool_stride': profile.spatial_pool_stride,
        'mm_use_im_start_end': False, 'mm_use_im_patch_token': False,
        'image_aspect_ratio': 'anyres_max_9',
    }
    if with_fusion:
        config.update({'fusion_block': 'cross_attention', 'spatial_tower': 'cut3r',
                       'spatial_feature_dim': profile.geometry_dim,
                       'spatial_tower_select_feature': profile.geometry_select})
    return config


# ------------------------------------------------------------------------------------ reading
def _strip_non_lora_prefix(names: Iterable[str]) -> dict[str, str]:
    """Map non_lora_trainables names to model names exactly as the reference does.

    Strip 'base_model.'; then, if any name starts with 'model.model.', strip one 'model.'.
    """
    stripped = {name: name[len('base_model.'):] if name.startswith('base_model.') else name
                for name in names}
    if any(value.startswith('model.model.') for value in stripped.values()):
        stripped = {name: value[len('model.'):] if value.startswith('model.') else value
                    for name, value in stripped.items()}
    return stripped


def _non_lora_file(directory: Path) -> Path:
    """Return the non_lora_trainables file in `directory`; raises CheckpointError if none."""
    for filename in NON_LORA_FILES:
        if (directory / filename).exists():
            return directory / filename
    raise CheckpointError(f'{directory} holds no ' + ' or '.join(NON_LORA_FILES))


def _read_non_lora(path: Path) -> TensorStore:
    """Read non_lora_trainables (.bin or .safetensors) renamed to official model names."""
    store = read_weights_file(path)
    renames = _strip_non_lora_prefix(list(store))
    return store.renamed(lambda name: renames[name])


def _siglip_to_official(name: str) -> str | None:
    """Map a HF SigLIP checkpoint name to the official LLaVA name; None if not a vision weight."""
    if name.startswith('vision_model.'):
        return _VISION_PREFIX + name[len('vision_model.'):]
    if name.startswith(_VISION_PREFIX):
        return name
    return None


def _siglip_text_side(name: str) -> bool:
    """True for the text tower and logit scale of a full SigLIP checkpoint (not used)."""
    return name.startswith('text_model.') or name in ('logit_scale', 'logit_bias')


def _collect(target: TensorStore, source: TensorStore, rename: Callable[[str], str | None],
             kept_layers: int, unmapped: list[str],
             ignore: Callable[[str], bool] = lambda name: False) -> None:
    """Add `source` tensors to `target` under local names (later sources override earlier).

    Names for which `ignore` is true and vision weights the reference deletes are skipped;
    names without a mapping are appended to `unmapped`.
    """
    for name in source:
        if ignore(name):
            continue
        official = rename(name)
        local = official_to_local(official) if official is not None else None
        if official is not None and _is_known_unused(official, kept_layers):
            continue
        if local is None:
            unmapped.append(f'{name} ({source.origin(name)})')
            continue
        target.add(local, source.shape(name), lambda n=name, s=source: s.load(n),
                   source.origin(name))


def _check_lora(adapter: LoraAdapter, net: nn.Module) -> list[str]:
    """Return problems of an adapter against the network's LLM Linear layers."""
    modules = dict(net.named_modules())
    problems: list[str] = []
    unknown: list[str] = []
    bad_shape: list[str] = []
    for module, (lora_a, lora_b) in adapter.pairs.items():
        local = official_to_local(module + '.weight') or ''
        is_llm = local.startswith('language_model.')
        layer = modules.get(local[:-len('.weight')]) if is_llm else None
        if not isinstance(layer, nn.Linear):
            unknown.append(module)
        elif lora_a.shape[1] != layer.in_features or lora_b.shape[0] != layer.out_features:
            bad_shape.append(f'{module} A{tuple(lora_a.shape)} B{tuple(lora_b.shape)} '
                             f'vs weight {tuple(layer.weight.shape)}')
    targeted = [name for name in llm_linear_modules(net, include_lm_head=True)
                if targets_module(adapter.target_modules, name)]
    missing = sorted(set(targeted) - set(adapter.pairs))
    if unknown:
        problems.append(format_names('adapter modules that are not LLM Linear layers',
                                     sorted(unknown)))
    if bad_shape:
        problems.append(format_names('mis-shaped lora pairs', sorted(bad_shape)))
    if missing:
        problems.append(format_names('targeted modules without lora weights', missing))
    return problems


def load_vlm3r(base_dir: str | Path, lora_dir: str | Path | None = None, *,
               profile: Profile | None = None, vision_tower_dir: str | Path | None = None,
               tokenizer_dir: str | Path | None = None, non_lora_path: str | Path | None = None,
               device: str | None = None, dtype: str | None = None) -> Vlm3rModel:
    """Load a `Vlm3rModel` from local official-layout directories (never the hub).

    `base_dir`: the LLaVA-NeXT-Video-Qwen2 base. `lora_dir`: the VLM-3R release (config.json,
    non_lora_trainables, LoRA adapter, merged into the weights); None loads the base alone.
    `vision_tower_dir`: optional HF SigLIP checkpoint for vision weights the base lacks.
    `non_lora_path`: the non_lora_trainables file when it is not inside `lora_dir` (also
    usable without a LoRA). A base directory that itself holds `model.fusion_block.*` (a full
    checkpoint, see `save_base_checkpoint(include_fusion=True)`) needs neither.
    `tokenizer_dir` defaults to `base_dir`. `profile` defaults to 'vlm3r-7b'; `device`/`dtype`
    override it. Raises CheckpointError for missing/corrupt files, config contradictions, and
    any unmapped, missing or mis-shaped tensor (all listed).
    """
    base = Path(base_dir)
    adapter_dir = Path(lora_dir) if lora_dir is not None else None
    prof = profile if profile is not None else get_profile('vlm3r-7b')
    runtime = {k: v for k, v in (('device', device), ('dtype', dtype)) if v is not None}
    prof = dataclasses.replace(prof, **runtime) if runtime else prof
    config_path = base / 'config.json'
    if adapter_dir is not None and (adapter_dir / 'config.json').exists():
        config_path = adapter_dir / 'config.json'  # the reference builds from the adapter's config
    prof = profile_from_config(prof, read_json(config_path))
    try:
        tokenizer = load_tokenizer(Path(tokenizer_dir) if tokenizer_dir is not None else base)
    except Exception as exc:
        raise CheckpointError(f'cannot load the tokenizer: {exc}') from exc
    vocab = prof.llm_vocab_size or len(tokenizer)

    kept = prof.vision_kept_layers
    store = TensorStore()
    unmapped: list[str] = []
    if vision_tower_dir is not None:
        _collect(store, read_safetensors_dir(Path(vision_tower_dir)), _siglip_to_official, kept,
                 unmapped, ignore=_siglip_text_side)
    _collect(store, read_safetensors_dir(base), lambda n: n, kept, unmapped)
    adapter: LoraAdapter | None = None
    if non_lora_path is not None:
        _collect(store, _read_non_lora(Path(non_lora_path)), lambda n: n, kept, unmapped)
    elif adapter_dir is not None:
        _collect(store, _read_non_lora(_non_lora_file(adapter_dir)), lambda n: n, kept, unmapped)
    if adapter_dir is not None:
        adapter = read_lora_adapter(adapter_dir)

    with torch.device('meta'):  # shapes only: no memory, no init
        skeleton = Vlm3rNet(prof, vocab)
    expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    problems: list[str] = []
    if unmapped:
        problems.append(format_names('unmapped checkpoint tensors', sorted(unmapped)))
    missing = sorted(set(expected) - set(store))
    if missing:
        problems.append(format_names('model tensors missing from the checkpoint', missing))
    unexpected = sorted(set(store) - set(expected))
    if unexpected:
        problems.append(format_names('checkpoint tensors the model does not have',
                                     [f'{n} ({store.origin(n)})' for n in unexpected]))
    mis_shaped = sorted(f'{n}: checkpoint {store.shape(n)} vs model {expected[n]}'
                        for n in set(store) & set(expected) if store.shape(n) != expected[n])
    if mis_shaped:
        problems.append(format_names('mis-shaped tensors', mis_shaped))
    if problems:
        raise CheckpointError('checkpoint does not match the model: ' + '; '.join(problems))
    if adapter is not None:
        lora_problems = _check_lora(adapter, skeleton)
        if lora_problems:
            raise CheckpointError(f'{adapter_dir}: ' + '; '.join(lora_problems))

    # Only now, with everything validated, allocate the real weights on the target device.
    net = build_network(prof, vocab, device=prof.device, dtype=torch_dtype(prof.dtype),
                        init='empty')
    targets = net.state_dict(keep_vars=True)
    with torch.no_grad():
        for name in expected:
            targets[name].copy_(store.load(name))
        if adapter is not None:
            modules = dict(net.named_modules())
            for module, (lora_a, lora_b) in adapter.pairs.items():
                local = official_to_local(module + '.weight')
                assert local is not None
                layer = modules[local[:-len('.weight')]]
                merge_lora_(layer.weight, lora_a, lora_b, adapter.scale)
    return Vlm3rModel(net, tokenizer, prof)


# ------------------------------------------------------------------------------------ writing
def official_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    """Return the network's persistent tensors under official checkpoint names."""
    return {local_to_official(name): tensor for name, tensor in net.state_dict().items()}


def llm_linear_modules(net: nn.Module, include_lm_head: bool = False) -> list[str]:
    """Official names of the LLM's Linear layers (e.g. 'model.layers.0.self_attn.q_proj')."""
    names: list[str] = []
    for local, module in net.named_modules():
        if isinstance(module, nn.Linear) and local.startswith('language_model.'):
            official = local_to_official(local + '.weight')[:-len('.weight')]
            if official != 'lm_head' or include_lm_head:
                names.append(official)
    return names


def llm_lora_target_modules(model: Vlm3rModel) -> list[str]:
    """The reference's LoRA targets: every LLM Linear except lm_head (official names)."""
    return llm_linear_modules(model.net)


def random_lora_pairs(model: Vlm3rModel, r: int, seed: int, std: float = 0.02,
                      zero_b: bool = False) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Return seeded random float32 LoRA (A, B) pairs for every reference target module.

    zero_b=True gives B = 0, as PEFT initialises it (the merge is then the identity).
    """
    generator = torch.Generator().manual_seed(seed)
    modules = dict(model.net.named_modules())
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name in llm_lora_target_modules(model):
        local = official_to_local(name + '.weight')
        assert local is not None
        layer = modules[local[:-len('.weight')]]
        lora_a = torch.randn(r, layer.in_features, generator=generator) * std
        lora_b = torch.zeros(layer.out_features, r) if zero_b else \
            torch.randn(layer.out_features, r, generator=generator) * std
        pairs[name] = (lora_a, lora_b)
    return pairs


def save_base_checkpoint(model: Vlm3rModel, directory: str | Path,
                         max_shard_bytes: int | None = None, include_fusion: bool = False) -> None:
    """Write the base (LLaVA-NeXT-Video) layout: config.json, safetensors, tokenizer files.

    Holds every weight except the fusion block (the base model has none; `include_fusion`
    writes a single full checkpoint instead), plus the SigLIP post_layernorm that official
    files carry but the reference never applies. Sharded with an index when `max_shard_bytes`
    is given and exceeded.
    """
    path = Path(directory)
    tensors = {k: v for k, v in official_state_dict(model.net).items()
               if include_fusion or not k.startswith('model.fusion_block.')}
    width = model.profile.vision_hidden_size
    tensors[_VISION_PREFIX + 'post_layernorm.weight'] = torch.ones(width, dtype=model.dtype)
    tensors[_VISION_PREFIX + 'post_layernorm.bias'] = torch.zeros(width, dtype=model.dtype)
    write_safetensors_dir(path, tensors, max_shard_bytes)
    vocab = model.net.language_model.get_input_embeddings().weight.shape[0]
    with_fusion = include_fusion and model.net.fusion_block is not None
    write_json(path / 'config.json', llava_config(model.profile, vocab, with_fusion=with_fusion))
    model.tokenizer.save_pretrained(str(path))


def save_vlm3r_adapter(model: Vlm3rModel, directory: str | Path,
                       lora_pairs: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
                       r: int = 128, alpha: float = 256.0, non_lora_format: str = 'bin',
                       adapter_format: str = 'safetensors') -> None:
    """Write the VLM-3R release layout: config.json, non_lora_trainables, LoRA adapter.

    non_lora_trainables holds the fusion block and projector under
    'base_model.model.model.…' names. `lora_pairs` (official module -> (A, B)) defaults to
    zero-B pairs of rank `r` (an identity merge). Formats: 'bin' or 'safetensors'.
    """
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    vocab = model.net.language_model.get_input_embeddings().weight.shape[0]
    write_json(path / 'config.json', llava_config(model.profile, vocab,
                                                  with_fusion=model.net.fusion_block is not None))
    trainables = {f'base_model.model.{k}': v.detach().cpu().contiguous().clone()
                  for k, v in official_state_dict(model.net).items()
                  if k.startswith(('model.fusion_block.', 'model.mm_projector.'))}
    if non_lora_format == 'bin':
        torch.save(trainables, str(path / 'non_lora_trainables.bin'))
    elif non_lora_format == 'safetensors':
        save_file(trainables, str(path / 'non_lora_trainables.safetensors'),
                  metadata={'format': 'pt'})
    else:
        raise ValueError(f'unknown non_lora_format {non_lora_format!r}')
    pairs = lora_pairs if lora_pairs is not None else \
        random_lora_pairs(model, r, seed=0, zero_b=True)
    write_lora_adapter(path, pairs, r=r, alpha=alpha,
                       target_modules=llm_lora_target_modules(model), fmt=adapter_format)
