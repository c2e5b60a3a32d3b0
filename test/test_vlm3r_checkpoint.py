"""Tests for loading VLM-3R from official-layout checkpoints (tiny checkpoints written here)."""

import copy
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from vlm3r_ros.models.profiles import get_profile
from vlm3r_ros.models.vlm3r import checkpoint as ck
from vlm3r_ros.models.vlm3r.checkpoint import CheckpointError, load_vlm3r
from vlm3r_ros.models.vlm3r.model import Vlm3rModel

TINY = get_profile('tiny')
Inputs = tuple[np.ndarray, torch.Tensor, list[torch.Tensor]]
QUESTION = 'These are frames of a video.\nWhat is the distance between the bed and the tv?'


class NotATensor:
    """A picklable object that a weights-only load must refuse."""


@pytest.fixture(scope='module')
def source() -> Vlm3rModel:
    return Vlm3rModel.from_profile('tiny')


@pytest.fixture(scope='module')
def inputs(source: Vlm3rModel) -> Inputs:
    image = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    geometry = torch.randn(101, 64, generator=torch.Generator().manual_seed(0))
    flipped = image[::-1].copy()
    frames = [source.encode_frame(image, geometry), source.encode_frame(flipped, geometry)]
    return image, geometry, frames


def _write(model: Vlm3rModel, root: Path, **adapter_kwargs: object) -> tuple[Path, Path]:
    base, lora = root / 'base', root / 'lora'
    ck.save_base_checkpoint(model, base, max_shard_bytes=150_000)
    ck.save_vlm3r_adapter(model, lora, r=8, alpha=16, **adapter_kwargs)  # type: ignore[arg-type]
    return base, lora


def _edit_base(base: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    """Apply `edit(dict)` to the union of all shards and rewrite shards + index."""
    index_path = base / 'model.safetensors.index.json'
    index = json.loads(index_path.read_text())
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(set(index['weight_map'].values())):
        tensors.update(load_file(str(base / shard)))
        (base / shard).unlink()
    edit(tensors)
    save_file(tensors, str(base / 'model-00001-of-00001.safetensors'))
    index['weight_map'] = {name: 'model-00001-of-00001.safetensors' for name in tensors}
    index_path.write_text(json.dumps(index))


# --------------------------------------------------------------------------- name mapping
def test_official_names_map_explicitly(source: Vlm3rModel) -> None:
    assert ck.official_to_local('model.embed_tokens.weight') == \
        'language_model.model.embed_tokens.weight'
    assert ck.official_to_local('model.layers.3.self_attn.q_proj.bias') == \
        'language_model.model.layers.3.self_attn.q_proj.bias'
    assert ck.official_to_local('lm_head.weight') == 'language_model.lm_head.weight'
    assert ck.official_to_local('model.norm.weight') == 'language_model.model.norm.weight'
    assert ck.official_to_local('model.mm_projector.2.weight') == 'mm_projector.2.weight'
    assert ck.official_to_local('model.image_newline') == 'image_newline'
    assert ck.official_to_local('model.fusion_block.clip_query_proj.weight') == \
        'fusion_block.clip_query_proj.weight'
    assert ck.official_to_local(
        'model.vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight') == \
        'vision_tower.encoder.layers.0.mlp.fc1.weight'
    assert ck.official_to_local('model.vision_resampler.pool.weight') is None
    for name in source.net.state_dict():
        assert ck.official_to_local(ck.local_to_official(name)) == name


# --------------------------------------------------------------------------- round trips
def test_official_layout_round_trip_is_bit_identical(source: Vlm3rModel, inputs: Inputs,
        tmp_path: Path) -> None:
    image, geometry, frames = inputs
    base, lora = _write(source, tmp_path)  # zero-B LoRA: merge is exact
    assert (base / 'model.safetensors.index.json').exists()
    assert (lora / 'non_lora_trainables.bin').exists()
    assert (lora / 'adapter_model.safetensors').exists()
    loaded = load_vlm3r(base, lora, profile=TINY)
    assert torch.equal(loaded.encode_frame(image, geometry), frames[0])
    assert torch.equal(loaded.next_token_logits(QUESTION, frames),
                       source.next_token_logits(QUESTION, frames))
    assert loaded.answer(QUESTION, frames) == source.answer(QUESTION, frames)
    for name, tensor in source.net.state_dict().items():
        assert torch.equal(tensor, loaded.net.state_dict()[name]), name


def test_non_lora_trainables_override_base_projector(source: Vlm3rModel, inputs: Inputs,
        tmp_path: Path) -> None:
    image, geometry, frames = inputs
    other_net = copy.deepcopy(source.net)
    with torch.no_grad():
        for param in other_net.mm_projector.parameters():
            param.add_(1.0)
    other = Vlm3rModel(other_net, source.tokenizer, source.profile)
    ck.save_base_checkpoint(other, tmp_path / 'base')
    ck.save_vlm3r_adapter(source, tmp_path / 'lora', r=4, alpha=8, non_lora_format='safetensors',
                          adapter_format='bin')
    loaded = load_vlm3r(tmp_path / 'base', tmp_path / 'lora', profile=TINY)
    assert torch.equal(loaded.encode_frame(image, geometry), frames[0])


def test_lora_merge_equals_unmerged_forward(source: Vlm3rModel, inputs: Inputs,
        tmp_path: Path) -> None:
    _, _, frames = inputs
    pairs = ck.random_lora_pairs(source, r=8, seed=5)
    assert len(pairs) == 7 * TINY.llm_num_layers and 'lm_head' not in pairs
    base, lora = _write(source, tmp_path, lora_pairs=pairs)
    merged = load_vlm3r(base, lora, profile=TINY)
    # Unmerged reference: y = W x + (B A x) * alpha / r, as hooks on the source model.
    modules = dict(source.net.named_modules())
    hooks = []
    for name, (lora_a, lora_b) in pairs.items():
        local = ck.official_to_local(name + '.weight')
        assert local is not None
        layer = modules[local[:-len('.weight')]]
        hooks.append(layer.register_forward_hook(
            lambda mod, args, out, a=lora_a, b=lora_b: out + (args[0] @ a.T @ b.T) * (16 / 8)))
    try:
        reference = source.next_token_logits(QUESTION, frames)
    finally:
        for hook in hooks:
            hook.remove()
    got = merged.next_token_logits(QUESTION, frames)
    assert torch.allclose(got, reference, atol=1e-5)
    assert (got - source.next_token_logits(QUESTION, frames)).abs().max() > 1e-3


def test_vision_weights_from_separate_siglip_dir(source: Vlm3rModel, inputs: Inputs,
        tmp_path: Path) -> None:
    image, geometry, frames = inputs
    base, lora = _write(source, tmp_path)
    vision = {}

    def split_vision(tensors: dict[str, torch.Tensor]) -> None:
        prefix = 'model.vision_tower.vision_tower.vision_model.'
        for name in [n for n in tensors if n.startswith(prefix)]:
            vision['vision_model.' + name[len(prefix):]] = tensors.pop(name)

    _edit_base(base, split_vision)
    # A full SigLIP checkpoint also holds what the reference drops: text tower, head, last layer.
    layer = {k.replace('layers.1.', 'layers.2.'): v.clone()
             for k, v in vision.items() if '.layers.1.' in k}
    extras = {'text_model.embeddings.token_embedding.weight': torch.zeros(4, 4),
              'logit_scale': torch.zeros(1), 'vision_model.head.probe': torch.zeros(1, 1, 64),
              'vision_model.embeddings.position_ids': torch.arange(196)[None]}
    assert 'vision_model.post_layernorm.weight' in vision  # official files carry it, unused
    siglip = tmp_path / 'siglip'
    siglip.mkdir()
    save_file({**vision, **layer, **extras}, str(siglip / 'model.safetensors'))
    with pytest.raises(CheckpointError, match='missing'):
        load_vlm3r(base, lora, profile=TINY)
    loaded = load_vlm3r(base, lora, profile=TINY, vision_tower_dir=siglip)
    assert torch.equal(loaded.encode_frame(image, geometry), frames[0])


# --------------------------------------------------------------------------- failures
def test_truncated_shard_fails_clearly(source: Vlm3rModel, tmp_path: Path) -> None:
    base, lora = _write(source, tmp_path)
    shard = sorted(base.glob('model-*.safetensors'))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match=shard.name):
        load_vlm3r(base, lora, profile=TINY)


def test_corrupt_or_unsafe_non_lora_file_fails(source: Vlm3rModel, tmp_path: Path) -> None:
    base, lora = _write(source, tmp_path)
    path = lora / 'non_lora_trainables.bin'
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 3])
    with pytest.raises(CheckpointError, match='non_lora_trainables.bin'):
        load_vlm3r(base, lora, profile=TINY)
    torch.save({'base_model.model.model.mm_projector.0.weight': NotATensor()}, str(path))
    with pytest.raises(CheckpointError, match='weights-only'):
        load_vlm3r(base, lora, profile=TINY)


def test_missing_unmapped_and_misshaped_keys_are_listed(source: Vlm3rModel, tmp_path: Path) -> None:
    base, lora = _write(source, tmp_path)

    def corrupt(tensors: dict[str, torch.Tensor]) -> None:
        del tensors['model.layers.1.mlp.up_proj.weight']
        tensors['model.faster_token'] = torch.zeros(64)
        tensors['model.norm.weight'] = torch.zeros(65)

    _edit_base(base, corrupt)
    with pytest.raises(CheckpointError) as info:
        load_vlm3r(base, lora, profile=TINY)
    message = str(info.value)
    assert 'language_model.model.layers.1.mlp.up_proj.weight' in message
    assert 'unmapped' in message and 'model.faster_token' in message
    assert 'mis-shaped' in message and 'language_model.model.norm.weight' in message


def test_bad_lora_adapter_fails(source: Vlm3rModel, tmp_path: Path) -> None:
    pairs = ck.random_lora_pairs(source, r=8, seed=1)
    pairs.pop('model.layers.0.self_attn.q_proj')
    base, lora = _write(source, tmp_path, lora_pairs=pairs)
    config = json.loads((lora / 'adapter_config.json').read_text())
    config['target_modules'] = ck.llm_lora_target_modules(source)
    (lora / 'adapter_config.json').write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match='targeted modules without lora weights'):
        load_vlm3r(base, lora, profile=TINY)
    config['r'] = 4
    (lora / 'adapter_config.json').write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match='rank'):
        load_vlm3r(base, lora, profile=TINY)
    (lora / 'adapter_model.safetensors').unlink()
    with pytest.raises(CheckpointError, match='adapter_model'):
        load_vlm3r(base, lora, profile=TINY)


def test_config_must_match_profile(source: Vlm3rModel, tmp_path: Path) -> None:
    base, lora = _write(source, tmp_path)
    config = json.loads((lora / 'config.json').read_text())
    config['spatial_feature_dim'] = 768
    (lora / 'config.json').write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match='spatial_feature_dim'):
        load_vlm3r(base, lora, profile=TINY)
    with pytest.raises(CheckpointError, match='does not exist'):
        load_vlm3r(tmp_path / 'nowhere', None, profile=TINY)


def test_base_alone_needs_a_fusion_free_profile(source: Vlm3rModel, tmp_path: Path) -> None:
    base, _ = _write(source, tmp_path)
    with pytest.raises(CheckpointError, match='fusion_block'):
        load_vlm3r(base, None, profile=TINY)
    pe_model = load_vlm3r(base, None, profile=get_profile('tiny', fusion='position_encoding'))
    assert pe_model.net.fusion_block is None
    assert torch.equal(pe_model.net.mm_projector[0].weight, source.net.mm_projector[0].weight)


def test_from_profile_loads_local_dirs(source: Vlm3rModel, inputs: Inputs,
        tmp_path: Path) -> None:
    image, geometry, frames = inputs
    base, lora = _write(source, tmp_path)
    loaded = Vlm3rModel.from_profile('tiny', base_model_dir=str(base), lora_dir=str(lora))
    assert torch.equal(loaded.encode_frame(image, geometry), frames[0])


def test_config_selects_geometry_tokens(source: Vlm3rModel, tmp_path: Path) -> None:
    base, lora = _write(source, tmp_path)
    config = json.loads((lora / 'config.json').read_text())
    assert config['spatial_tower_select_feature'] == 'all'
    config['spatial_tower_select_feature'] = 'patch_tokens'
    (lora / 'config.json').write_text(json.dumps(config))
    assert load_vlm3r(base, lora, profile=TINY).profile.geometry_select == 'patch_tokens'
    config['spatial_tower_select_feature'] = 'depth_tokens'
    (lora / 'config.json').write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match='spatial_tower_select_feature'):
        load_vlm3r(base, lora, profile=TINY)


def test_full_single_dir_and_separate_non_lora_file(source: Vlm3rModel, inputs: Inputs,
                                                     tmp_path: Path) -> None:
    image, geometry, frames = inputs
    ck.save_base_checkpoint(source, tmp_path / 'full', include_fusion=True)
    full = load_vlm3r(tmp_path / 'full', None, profile=TINY)
    assert torch.equal(full.encode_frame(image, geometry), frames[0])
    base, lora = _write(source, tmp_path / 'split')
    moved = tmp_path / 'trainables.bin'
    (lora / 'non_lora_trainables.bin').rename(moved)
    with pytest.raises(CheckpointError, match='non_lora_trainables'):
        load_vlm3r(base, lora, profile=TINY)
    loaded = Vlm3rModel.from_profile('tiny', base_model_dir=str(base), lora_dir=str(lora),
                                     non_lora_path=str(moved))
    assert torch.equal(loaded.encode_frame(image, geometry), frames[0])
