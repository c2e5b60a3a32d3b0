"""Tests for the model size profiles."""

import dataclasses

import pytest

from vlm3r_ros.models.profiles import Profile, get_profile, profile_names


def test_known_profiles() -> None:
    assert set(profile_names()) == {'tiny', 'vlm3r-7b'}


def test_real_profile_matches_reference_shapes() -> None:
    prof = get_profile('vlm3r-7b')
    assert prof.vision_grid == 27  # 384 / 14 -> 27 x 27 = 729 SigLIP tokens
    assert prof.vision_hidden_size == 1152
    assert prof.vision_kept_layers == 26  # layer -2 of 27
    assert prof.pooled_grid == 14  # bilinear 2x2 pooling
    assert prof.tokens_per_frame == 14 * 15  # grid newline tokens
    assert 32 * prof.tokens_per_frame == 6720  # "about 6.7k visual tokens for 32 frames"
    assert prof.geometry_dim == 768
    assert prof.geometry_num_tokens == 730  # camera token + 27 x 27 patches
    assert prof.fusion_num_heads == 18
    assert (prof.llm_hidden_size, prof.llm_num_layers, prof.llm_vocab_size) == (3584, 28, 152064)
    assert prof.device == 'cuda' and prof.dtype == 'float16'
    # The reference's CUT3R input and numerics.
    assert prof.geometry_resize_mode == 'vlm3r' and prof.numerics == 'reference'


def test_tiny_profile_geometry_contract() -> None:
    prof = get_profile('tiny')
    assert (prof.geometry_dim, prof.geometry_image_size, prof.geometry_patch_size) == (64, 160, 16)
    assert prof.geometry_num_tokens == 101
    assert prof.vision_grid == 14 and prof.pooled_grid == 7
    assert prof.tokens_per_frame == 56
    assert prof.vision_kept_layers == 2
    assert prof.seed is not None and prof.device == 'cpu'
    # Fed as its small CUT3R was trained (raw frame stretched), with the precise numerics.
    assert prof.geometry_resize_mode == 'stretch' and prof.numerics == 'precise'


def test_pool_modes_change_token_counts() -> None:
    average = get_profile('vlm3r-7b', spatial_pool_mode='average')
    assert average.pooled_grid == 13 and average.tokens_per_frame == 13 * 14
    frame = get_profile('vlm3r-7b', newline_position='frame')
    assert frame.tokens_per_frame == 14 * 14 + 1
    none = get_profile('vlm3r-7b', newline_position='no_token')
    assert none.tokens_per_frame == 196


def test_overrides_and_validation() -> None:
    prof = get_profile('vlm3r-7b', base_model_dir='/models/base', lora_dir='/models/lora')
    assert prof.base_model_dir == '/models/base' and prof.lora_dir == '/models/lora'
    assert get_profile('vlm3r-7b').base_model_dir is None  # the stored profile is unchanged
    with pytest.raises(KeyError):
        get_profile('huge')
    with pytest.raises(TypeError):
        get_profile('tiny', no_such_field=1)
    with pytest.raises(ValueError, match='fusion'):
        get_profile('tiny', fusion='concat')
    with pytest.raises(ValueError, match='dtype'):
        get_profile('tiny', dtype='int8')
    with pytest.raises(ValueError, match='geometry_resize_mode'):
        get_profile('tiny', geometry_resize_mode='crop')
    with pytest.raises(ValueError, match='numerics'):
        get_profile('tiny', numerics='fast')
    with pytest.raises(ValueError, match='fusion_num_heads'):
        get_profile('tiny', fusion_num_heads=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        prof.device = 'cpu'  # type: ignore[misc]
    assert isinstance(prof, Profile)
