"""Tests for CUT3R checkpoint reading/writing in the official layout."""

from __future__ import annotations

import argparse
import sys
import types
import typing
from collections import defaultdict
from pathlib import Path
from typing import Iterator

import pytest
import torch

from vlm3r_ros.models.cut3r.checkpoint import (
    CheckpointError,
    load_cut3r,
    read_checkpoint,
    save_official_layout,
)
from vlm3r_ros.models.cut3r.config import Cut3rConfig
from vlm3r_ros.models.cut3r.model import Cut3rModel


@pytest.fixture(scope='module')
def tiny() -> Cut3rModel:
    """A seeded tiny DPT model."""
    torch.manual_seed(0)
    return Cut3rModel(Cut3rConfig.tiny('dpt')).eval()


def _outputs(model: Cut3rModel) -> torch.Tensor:
    """Return the world points of one fixed frame."""
    torch.manual_seed(5)
    img = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        out = model.step(img, model.init_state(1), model.init_mem(1),
                         torch.tensor([True]), torch.tensor([True]))
    return out.pts_world


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k].float(), sb[k].float()), k


@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
def test_round_trip_official_layout(tiny: Cut3rModel, tmp_path: Path, suffix: str) -> None:
    path = save_official_layout(tiny, tmp_path / f'tiny{suffix}')
    loaded = load_cut3r(path)
    assert loaded.config == tiny.config
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    _assert_same_weights(tiny, loaded)
    # Same weights; allow for kernel differences due to memory alignment.
    assert torch.allclose(_outputs(tiny), _outputs(loaded), atol=1e-6)


def test_pth_layout_matches_official(tiny: Cut3rModel, tmp_path: Path) -> None:
    path = save_official_layout(tiny, tmp_path / 'tiny.pth',
                                args_string=tiny.config.to_official_string())
    # Loadable with weights_only=True when argparse.Namespace alone is allow-listed.
    with torch.serialization.safe_globals([argparse.Namespace]):
        raw = torch.load(path, weights_only=True)
    assert set(raw) == {'model', 'args', 'epoch'}
    assert isinstance(raw['args'], argparse.Namespace)
    assert raw['args'].model.startswith('ARCroco3DStereo(ARCroco3DStereoConfig(')
    assert 'downstream_head.dpt_self.scratch.layer_rn.0.weight' in raw['model']


def test_dtype_and_device(tiny: Cut3rModel, tmp_path: Path) -> None:
    path = save_official_layout(tiny, tmp_path / 'tiny.pth')
    model = load_cut3r(path, dtype=torch.bfloat16, device='cpu')
    assert model.compute_dtype == torch.bfloat16
    assert model.downstream_head.dpt_self.head[4].weight.dtype == torch.float32


def test_plain_state_dict_needs_config(tiny: Cut3rModel, tmp_path: Path) -> None:
    path = tmp_path / 'plain.pth'
    torch.save(tiny.state_dict(), path)
    with pytest.raises(CheckpointError, match='no model constructor string'):
        load_cut3r(path)
    _assert_same_weights(tiny, load_cut3r(path, config=tiny.config))


def test_module_prefix_is_stripped(tiny: Cut3rModel, tmp_path: Path) -> None:
    path = tmp_path / 'ddp.pth'
    torch.save({'model': {f'module.{k}': v for k, v in tiny.state_dict().items()}}, path)
    _assert_same_weights(tiny, load_cut3r(path, config=tiny.config))


def test_conflicting_config_is_reported(tiny: Cut3rModel, tmp_path: Path) -> None:
    path = save_official_layout(tiny, tmp_path / 'tiny.pth')
    other = Cut3rConfig.tiny('linear')
    with pytest.raises(CheckpointError, match='head_type'):
        load_cut3r(path, config=other)


def test_key_mismatches_are_listed(tiny: Cut3rModel, tmp_path: Path) -> None:
    state = dict(tiny.state_dict())
    del state['pose_retriever.mem']
    state['downstream_head.extra.weight'] = torch.zeros(3)
    state['register_tokens.weight'] = torch.zeros(5, tiny.config.enc_embed_dim)
    path = tmp_path / 'bad.pth'
    args = argparse.Namespace(model=tiny.config.to_official_string())
    torch.save({'model': state, 'args': args}, path)
    with pytest.raises(CheckpointError) as info:
        load_cut3r(path)
    message = str(info.value)
    assert '1 missing: pose_retriever.mem' in message
    assert '1 unexpected: downstream_head.extra.weight' in message
    assert 'register_tokens.weight (checkpoint (5, 64) vs model (16, 64))' in message


def _without_state_decoder(tiny: Cut3rModel, tmp_path: Path, name: str,
                           drop: tuple[str, ...] = ()) -> Path:
    """Write ``tiny`` in the official .pth layout minus every dec_blocks_state key."""
    state = {k: v.clone() for k, v in tiny.state_dict().items()
             if not k.startswith('dec_blocks_state') and k not in drop}
    path = tmp_path / name
    args = argparse.Namespace(model=tiny.config.to_official_string())
    torch.save({'model': state, 'args': args, 'epoch': 0}, path)
    return path


def test_missing_state_decoder_is_copied_from_the_image_decoder(
    tiny: Cut3rModel, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    path = _without_state_decoder(tiny, tmp_path, 'no_state_dec.pth')
    with caplog.at_level('WARNING', logger='vlm3r_ros.models.cut3r.checkpoint'):
        loaded = load_cut3r(path)
    assert 'no state decoder (dec_blocks_state)' in caplog.text
    assert 'as the official loader does' in caplog.text
    state = loaded.state_dict()
    image_keys = [k for k in state if k.startswith('dec_blocks.')]
    assert image_keys
    for key in image_keys:
        copy = 'dec_blocks_state.' + key[len('dec_blocks.'):]
        assert torch.equal(state[copy], state[key]), copy
        assert state[copy].data_ptr() != state[key].data_ptr()  # a copy, not tied
    # The network is the official one with the image decoder in both places.
    expected = Cut3rModel(tiny.config).eval()
    expected.load_state_dict({**tiny.state_dict(), **{
        'dec_blocks_state.' + k[len('dec_blocks.'):]: v
        for k, v in tiny.state_dict().items() if k.startswith('dec_blocks.')}})
    assert torch.equal(_outputs(loaded), _outputs(expected))


def test_anything_else_missing_still_fails_loudly(tiny: Cut3rModel, tmp_path: Path) -> None:
    path = _without_state_decoder(tiny, tmp_path, 'worse.pth', drop=('dec_norm.weight',))
    with pytest.raises(CheckpointError, match='1 missing: dec_norm.weight'):
        load_cut3r(path)
    # A partial state decoder is not the official case: its missing keys are reported.
    state = dict(tiny.state_dict())
    del state['dec_blocks_state.0.mlp.fc1.weight']
    partial = tmp_path / 'partial.pth'
    torch.save({'model': state, 'args': argparse.Namespace(
        model=tiny.config.to_official_string())}, partial)
    with pytest.raises(CheckpointError, match='missing: dec_blocks_state.0.mlp.fc1.weight'):
        load_cut3r(partial)
    # And a mis-shaped image decoder (copied or not) is reported.
    state = {k: v for k, v in tiny.state_dict().items() if not k.startswith('dec_blocks_state')}
    state['dec_blocks.0.mlp.fc1.weight'] = torch.zeros(3, 3)
    shaped = tmp_path / 'shaped.pth'
    torch.save({'model': state, 'args': argparse.Namespace(
        model=tiny.config.to_official_string())}, shaped)
    with pytest.raises(CheckpointError, match='mis-shaped: dec_blocks.0.mlp.fc1.weight'):
        load_cut3r(shaped)


def test_rope_fp16_rounding_is_a_load_option(tiny: Cut3rModel, tmp_path: Path) -> None:
    path = save_official_layout(tiny, tmp_path / 'tiny.safetensors')
    assert not load_cut3r(path).rope_fp16_rounding
    rounded = load_cut3r(path, rope_fp16_rounding=True)
    assert rounded.rope_fp16_rounding
    assert not torch.equal(_outputs(rounded), _outputs(tiny))
    assert torch.allclose(_outputs(rounded), _outputs(tiny), atol=1e-2)


def test_wrong_architecture_is_reported(tmp_path: Path) -> None:
    torch.manual_seed(0)
    linear = Cut3rModel(Cut3rConfig.tiny('linear'))
    path = tmp_path / 'linear.pth'
    torch.save(linear.state_dict(), path)
    with pytest.raises(CheckpointError, match='missing: downstream_head.dpt_self'):
        load_cut3r(path, config=Cut3rConfig.tiny('dpt'))


def test_truncated_pth(tiny: Cut3rModel, tmp_path: Path) -> None:
    path = save_official_layout(tiny, tmp_path / 'tiny.pth')
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 100, 10):
        broken = tmp_path / f'cut{cut}.pth'
        broken.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match='truncated or corrupt'):
            load_cut3r(broken)


def test_corrupted_pth_payload(tiny: Cut3rModel, tmp_path: Path) -> None:
    path = save_official_layout(tiny, tmp_path / 'tiny.pth')
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    broken = tmp_path / 'flipped.pth'
    broken.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match='corrupt'):
        load_cut3r(broken)


def test_truncated_and_corrupted_safetensors(tiny: Cut3rModel, tmp_path: Path) -> None:
    path = save_official_layout(tiny, tmp_path / 'tiny.safetensors')
    data = path.read_bytes()
    cut = tmp_path / 'cut.safetensors'
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match='truncated or corrupt'):
        load_cut3r(cut)
    # safetensors has no checksum; NaN/inf bit patterns are still caught.
    flipped = bytearray(data)
    flipped[-4000:-3000] = b'\xff' * 1000
    bad = tmp_path / 'nan.safetensors'
    bad.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match='non-finite'):
        load_cut3r(bad)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match='not found'):
        load_cut3r(tmp_path / 'nope.pth')


_SIDE_EFFECTS: list[str] = []


def _record(tag: str) -> str:
    """A callable a hostile pickle would like to run."""
    _SIDE_EFFECTS.append(tag)
    return tag


class _Hostile:
    """Pickles as a call to ``_record`` (stands in for os.system and friends)."""

    def __reduce__(self) -> tuple:
        return (_record, ('pwned',))


def test_unsafe_pickle_is_refused(tiny: Cut3rModel, tmp_path: Path) -> None:
    path = tmp_path / 'hostile.pth'
    torch.save({'model': tiny.state_dict(), 'args': _Hostile()}, path)
    _SIDE_EFFECTS.clear()
    with pytest.raises(CheckpointError, match='refusing to unpickle.*_record'):
        load_cut3r(path)
    assert _SIDE_EFFECTS == []


def test_bad_model_string_is_refused(tiny: Cut3rModel, tmp_path: Path) -> None:
    path = tmp_path / 'evil_args.pth'
    evil = "ARCroco3DStereo(ARCroco3DStereoConfig(state_size=__import__('os').getpid()))"
    torch.save({'model': tiny.state_dict(), 'args': argparse.Namespace(model=evil)}, path)
    with pytest.raises(CheckpointError, match='bad model constructor string'):
        load_cut3r(path)


@pytest.fixture
def fake_omegaconf() -> Iterator[dict[str, type]]:
    """Register stand-in ``omegaconf`` modules so a DictConfig-shaped pickle can be written.

    The real training script saves a Hydra ``DictConfig`` as ``args``; the pickle names
    ``omegaconf.dictconfig.DictConfig``, ``omegaconf.base.ContainerMetadata``,
    ``omegaconf.base.Metadata``, ``omegaconf.nodes.AnyNode``, ``typing.Any``,
    ``collections.defaultdict`` and builtins. The modules are removed before loading,
    proving that the loader never imports or runs them.
    """
    names = {
        'omegaconf.dictconfig': 'DictConfig',
        'omegaconf.listconfig': 'ListConfig',
        'omegaconf.base': 'ContainerMetadata',
        'omegaconf.nodes': 'AnyNode',
    }
    created: dict[str, type] = {}
    root = types.ModuleType('omegaconf')
    sys.modules['omegaconf'] = root
    for module_name, cls_name in names.items():
        module = types.ModuleType(module_name)
        cls = type(cls_name, (), {'__module__': module_name})
        setattr(module, cls_name, cls)
        sys.modules[module_name] = module
        created[cls_name] = cls
    meta_cls = type('Metadata', (), {'__module__': 'omegaconf.base'})
    sys.modules['omegaconf.base'].Metadata = meta_cls
    created['Metadata'] = meta_cls
    try:
        yield created
    finally:
        for module_name in list(names) + ['omegaconf']:
            sys.modules.pop(module_name, None)


def _node(cls: dict[str, type], value: object) -> object:
    node = cls['AnyNode']()
    meta = cls['Metadata']()
    meta.__dict__.update(ref_type=typing.Any, object_type=None, optional=True, key=None,
                         flags=defaultdict(dict))
    node.__dict__.update(_val=value, _metadata=meta, _parent=None)
    return node


def test_hydra_dictconfig_args_are_read_without_omegaconf(
    tiny: Cut3rModel, tmp_path: Path, fake_omegaconf: dict[str, type]
) -> None:
    cls = fake_omegaconf
    cfg = cls['DictConfig']()
    meta = cls['ContainerMetadata']()
    meta.__dict__.update(ref_type=typing.Any, object_type=dict, key_type=typing.Any,
                         element_type=typing.Any, flags=defaultdict(dict))
    resolution = cls['ListConfig']()
    resolution.__dict__.update(_content=[_node(cls, [512, 384])], _metadata=meta, _parent=None)
    cfg.__dict__.update(
        _metadata=meta, _parent=None,
        _content={'model': _node(cls, tiny.config.to_official_string()),
                  'resolution': resolution, 'lr': _node(cls, 1e-6)},
    )
    path = tmp_path / 'hydra.pth'
    torch.save({'model': tiny.state_dict(), 'args': cfg, 'epoch': 10}, path)
    for module_name in [m for m in sys.modules if m == 'omegaconf' or m.startswith('omegaconf.')]:
        del sys.modules[module_name]
    state, model_string = read_checkpoint(path)
    assert model_string == tiny.config.to_official_string()
    assert 'omegaconf' not in sys.modules
    _assert_same_weights(tiny, load_cut3r(path))
