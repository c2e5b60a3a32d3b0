"""Tests for the CUT3R port: official structure, RoPE, the recurrent step and streaming."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from vlm3r_ros.models.cut3r.config import (
    OFFICIAL_224_LINEAR_ARGS,
    OFFICIAL_512_DPT_ARGS,
    ConfigParseError,
    Cut3rConfig,
    parse_official_model_string,
)
from vlm3r_ros.models.cut3r.model import Cut3rModel
from vlm3r_ros.models.cut3r.preprocess import (
    output_size,
    pose_encoding_to_matrix,
    preprocess_image,
    ray_map,
)
from vlm3r_ros.models.cut3r.rope import RoPE2D
from vlm3r_ros.models.cut3r.stream import Cut3rStream, FrameGeometry, GeometryEncoder

# Parameter counts of the official architectures (identical to ARCroco3DStereo built
# from the official code with the same constructor strings).
PARAMS_512_DPT = 793_307_858
PARAMS_224_LINEAR = 748_443_655
_BLOCK_LISTS = r'(enc_blocks|dec_blocks|dec_blocks_state|enc_blocks_ray_map)\.\d+\.'


def _meta_model(config: Cut3rConfig) -> Cut3rModel:
    """Build a model without allocating weights."""
    with torch.device('meta'):
        return Cut3rModel(config)


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Return key -> shape of the model's state dict."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _modulo_blocks(keys: set[str]) -> set[str]:
    """Replace transformer block indices by N."""
    return {re.sub(_BLOCK_LISTS, r'\1.N.', k) for k in keys}


@pytest.fixture(scope='module')
def tiny_model() -> Cut3rModel:
    """A seeded tiny DPT model."""
    torch.manual_seed(0)
    return Cut3rModel(Cut3rConfig.tiny('dpt')).eval()


# ------------------------------------------------------------------ official structure
def test_official_512_dpt_structure() -> None:
    model = _meta_model(Cut3rConfig.official_512_dpt())
    shapes = _shapes(model)
    assert sum(p.numel() for p in model.parameters()) == PARAMS_512_DPT
    assert len(shapes) == 1248
    prefixes = {k.split('.')[0] for k in shapes}
    assert prefixes == {
        'patch_embed', 'patch_embed_ray_map', 'enc_blocks', 'enc_norm', 'decoder_embed',
        'dec_blocks', 'dec_norm', 'enc_blocks_ray_map', 'enc_norm_ray_map', 'pose_token',
        'pose_retriever', 'register_tokens', 'masked_img_token', 'masked_ray_map_token',
        'decoder_embed_state', 'dec_blocks_state', 'dec_norm_state', 'downstream_head',
    }
    expected = {
        'patch_embed.proj.weight': (1024, 3, 16, 16),
        'patch_embed_ray_map.proj.weight': (1024, 6, 16, 16),
        'enc_blocks.23.attn.qkv.weight': (3072, 1024),
        'enc_blocks_ray_map.1.mlp.fc2.weight': (1024, 4096),
        'dec_blocks.11.cross_attn.projk.weight': (768, 768),
        'dec_blocks.11.norm_y.weight': (768,),
        'dec_blocks_state.11.attn.qkv.weight': (2304, 768),
        'decoder_embed_state.weight': (768, 1024),
        'register_tokens.weight': (768, 1024),
        'pose_token': (1, 1, 768),
        'masked_img_token': (1, 1024),
        'pose_retriever.mem': (1, 256, 1536),
        'pose_retriever.masked_token': (1, 1, 768),
        'pose_retriever.proj_q.weight': (768, 1024),
        'pose_retriever.write_blocks.1.attn.qkv.weight': (4608, 1536),
        'pose_retriever.read_blocks.0.norm_y.bias': (1536,),
        'downstream_head.dpt_self.act_postprocess.0.0.weight': (96, 1024, 1, 1),
        'downstream_head.dpt_self.act_postprocess.0.1.weight': (96, 96, 4, 4),
        'downstream_head.dpt_self.act_postprocess.3.1.weight': (768, 768, 3, 3),
        'downstream_head.dpt_self.scratch.layer1_rn.weight': (256, 96, 3, 3),
        'downstream_head.dpt_self.scratch.layer_rn.0.weight': (256, 96, 3, 3),
        'downstream_head.dpt_self.scratch.refinenet4.resConfUnit2.conv1.bias': (256,),
        'downstream_head.dpt_self.head.4.weight': (4, 128, 1, 1),
        'downstream_head.dpt_cross.head.4.weight': (4, 128, 1, 1),
        'downstream_head.dpt_rgb.head.4.weight': (3, 128, 1, 1),
        'downstream_head.final_transform.1.norm1.mlp.1.weight': (1536, 768),
        'downstream_head.final_transform.0.attn.qkv.weight': (2304, 768),
        'downstream_head.pose_head.mlp.fc2.weight': (7, 3072),
    }
    for key, shape in expected.items():
        assert shapes[key] == shape, key
    # Per-block counts follow the official depths.
    for name, depth in (('enc_blocks', 24), ('dec_blocks', 12), ('dec_blocks_state', 12),
                        ('enc_blocks_ray_map', 2)):
        indices = {int(k.split('.')[1]) for k in shapes if k.startswith(name + '.')}
        assert indices == set(range(depth)), name
    # The DPT adapters keep no stray act_N_postprocess modules (deleted upstream).
    assert not any('act_1_postprocess' in k for k in shapes)


def test_official_224_linear_structure() -> None:
    model = _meta_model(Cut3rConfig.official_224_linear())
    shapes = _shapes(model)
    assert sum(p.numel() for p in model.parameters()) == PARAMS_224_LINEAR
    assert len(shapes) == 1056
    head = {k for k in shapes if k.startswith('downstream_head.')}
    assert {k.split('.')[1] for k in head} == {
        'proj', 'rgb_proj', 'pose_head', 'final_transform', 'cross_proj'
    }
    assert shapes['downstream_head.proj.fc2.weight'] == (4 * 16 * 16, 3072)
    assert shapes['downstream_head.rgb_proj.fc2.weight'] == (3 * 16 * 16, 3072)
    assert shapes['downstream_head.cross_proj.fc1.weight'] == (3072, 768)


@pytest.mark.parametrize('head_type', ['dpt', 'linear'])
def test_tiny_keys_are_official_keys_modulo_block_counts(head_type: str) -> None:
    full = (Cut3rConfig.official_512_dpt() if head_type == 'dpt'
            else Cut3rConfig.official_224_linear())
    full_keys = set(_meta_model(full).state_dict())
    tiny_keys = set(_meta_model(Cut3rConfig.tiny(head_type)).state_dict())
    assert _modulo_blocks(tiny_keys) == _modulo_blocks(full_keys)
    assert tiny_keys < full_keys  # same names, fewer blocks


# ------------------------------------------------------------------------ config parsing
def test_official_strings_parse_to_expected_fields() -> None:
    dpt = Cut3rConfig.official_512_dpt()
    assert (dpt.head_type, dpt.state_size, dpt.local_mem_size, dpt.state_dec_num_heads) == (
        'dpt', 768, 256, 16)
    assert dpt.img_size == (512, 512) and dpt.rope_freq == 100.0
    assert dpt.depth_mode == ('exp', -math.inf, math.inf)
    assert dpt.conf_mode == ('exp', 1.0, math.inf)
    assert dpt.hook_layers == (0, 6, 9, 12)
    lin = Cut3rConfig.official_224_linear()
    assert lin.head_type == 'linear' and lin.img_size == (224, 224) and lin.landscape_only
    kwargs = parse_official_model_string(OFFICIAL_512_DPT_ARGS)
    assert kwargs['patch_embed_cls'] == 'ManyAR_PatchEmbed'
    assert parse_official_model_string(OFFICIAL_224_LINEAR_ARGS)['dec_depth'] == 12


def test_config_string_round_trip() -> None:
    for cfg in (Cut3rConfig.tiny('dpt'), Cut3rConfig.tiny('linear'),
                Cut3rConfig.official_512_dpt()):
        assert Cut3rConfig.from_official_string(cfg.to_official_string()) == cfg


@pytest.mark.parametrize('text', [
    "__import__('os').system('echo pwned')",
    "ARCroco3DStereo(ARCroco3DStereoConfig(state_size=__import__('os').getpid()))",
    "ARCroco3DStereo(ARCroco3DStereoConfig(state_size=(lambda: 3)()))",
    "ARCroco3DStereo(ARCroco3DStereoConfig(**{'state_size': 3}))",
    "ARCroco3DStereo(ARCroco3DStereoConfig(head_type=os.name))",
    "ARCroco3DStereo(ARCroco3DStereoConfig(state_size=1+2))",
    "ARCroco3DStereo(Other(state_size=3))",
    'ARCroco3DStereo(ARCroco3DStereoConfig(state_size=3)',
])
def test_model_string_parser_rejects_code(text: str) -> None:
    with pytest.raises(ConfigParseError):
        parse_official_model_string(text)


def test_unknown_constructor_argument_is_rejected() -> None:
    with pytest.raises(ConfigParseError, match='unknown'):
        Cut3rConfig.from_official_string('ARCroco3DStereo(ARCroco3DStereoConfig(warp_drive=True))')


# -------------------------------------------------------------------------------- RoPE
def _reference_rope(t: torch.Tensor, pos: torch.Tensor, base: float) -> torch.Tensor:
    """Per-element statement of the official CUDA kernel (pairs (i, i + D/4) per half)."""
    out = t.clone()
    d = t.shape[-1]
    q = d // 4
    for axis in (0, 1):
        for i in range(q):
            angle = pos[:, :, axis].double()[:, None, :] / base ** (i / q)
            cos, sin = torch.cos(angle), torch.sin(angle)
            a, b = axis * d // 2 + i, axis * d // 2 + i + q
            u, v = t[..., a].double(), t[..., b].double()
            out[..., a] = (u * cos - v * sin).to(t.dtype)
            out[..., b] = (v * cos + u * sin).to(t.dtype)
    return out


def test_rope_matches_kernel_formula_including_negative_positions() -> None:
    torch.manual_seed(0)
    tokens = torch.randn(2, 3, 5, 16)
    pos = torch.tensor([[[-1, -1], [0, 0], [0, 3], [7, 2], [13, 13]]] * 2)
    got = RoPE2D(100.0)(tokens, pos)
    assert torch.allclose(got, _reference_rope(tokens, pos, 100.0), atol=1e-5)
    # Position -1 is not the last table row (what a wrapped lookup would give).
    assert not torch.allclose(got[:, :, 0], RoPE2D(100.0)(tokens, pos.roll(-1, 1))[:, :, 3])


def test_rope_scores_depend_only_on_relative_position() -> None:
    torch.manual_seed(1)
    rope = RoPE2D(100.0)
    q, k = torch.randn(1, 1, 1, 32), torch.randn(1, 1, 1, 32)

    def score(pq: tuple[int, int], pk: tuple[int, int]) -> float:
        rq = rope(q, torch.tensor([[pq]]))
        rk = rope(k, torch.tensor([[pk]]))
        return float((rq * rk).sum())

    assert score((3, 5), (1, 2)) == pytest.approx(score((-1, 0), (-3, -3)), abs=1e-4)
    assert score((3, 5), (1, 2)) != pytest.approx(score((3, 5), (2, 1)), abs=1e-3)


def test_rope_rejects_bad_head_dim() -> None:
    with pytest.raises(ValueError, match='multiple of 4'):
        RoPE2D()(torch.zeros(1, 1, 2, 6), torch.zeros(1, 2, 2))


# ---------------------------------------------------------------------------- the step
def _step(model: Cut3rModel, img: torch.Tensor, state: torch.Tensor, mem: torch.Tensor,
          first: bool, update: bool = True):
    with torch.inference_mode():
        return model.step(img, state, mem, torch.tensor([first]), torch.tensor([update]))


def test_step_shapes_and_432_token_count(tiny_model: Cut3rModel) -> None:
    cfg = tiny_model.config
    img = torch.randn(1, 3, 432, 432)
    out = _step(tiny_model, img, tiny_model.init_state(1), tiny_model.init_mem(1), True)
    assert out.tokens.shape == (1, 1 + 729, cfg.dec_embed_dim)
    assert out.pts_world.shape == (1, 432, 432, 3) and out.pts_self.shape == (1, 432, 432, 3)
    assert out.conf.shape == (1, 432, 432) and bool((out.conf >= 1).all())
    assert out.state.shape == (1, cfg.state_size, cfg.dec_embed_dim)
    assert out.mem.shape == (1, cfg.local_mem_size, 2 * cfg.dec_embed_dim)
    quat = out.camera_pose[0, 3:]
    assert float(quat.norm()) == pytest.approx(1.0, abs=1e-5) and float(quat[0]) >= 0


def test_step_non_square_linear_head() -> None:
    torch.manual_seed(0)
    model = Cut3rModel(Cut3rConfig.tiny('linear')).eval()
    out = _step(model, torch.randn(1, 3, 160, 224), model.init_state(1), model.init_mem(1), True)
    assert out.pts_world.shape == (1, 160, 224, 3)
    assert out.tokens.shape[1] == 1 + 10 * 14


def test_first_frame_ignores_incoming_state(tiny_model: Cut3rModel) -> None:
    img = torch.randn(1, 3, 224, 224)
    a = _step(tiny_model, img, tiny_model.init_state(1), tiny_model.init_mem(1), True)
    garbage_state = torch.randn_like(a.state) * 100
    garbage_mem = torch.randn_like(a.mem) * 100
    b = _step(tiny_model, img, garbage_state, garbage_mem, True)
    assert torch.equal(a.pts_world, b.pts_world) and torch.equal(a.state, b.state)
    # Later frames do depend on the incoming state.
    c = _step(tiny_model, img, garbage_state, garbage_mem, False)
    d = _step(tiny_model, img, a.state, a.mem, False)
    assert not torch.allclose(c.tokens, d.tokens)


def test_update_gate_keeps_state(tiny_model: Cut3rModel) -> None:
    img0, img1 = torch.randn(1, 3, 224, 224), torch.randn(1, 3, 224, 224)
    first = _step(tiny_model, img0, tiny_model.init_state(1), tiny_model.init_mem(1), True)
    frozen = _step(tiny_model, img1, first.state, first.mem, False, update=False)
    assert torch.equal(frozen.state, first.state) and torch.equal(frozen.mem, first.mem)
    written = _step(tiny_model, img1, first.state, first.mem, False, update=True)
    assert not torch.allclose(written.state, first.state)
    assert not torch.allclose(written.mem, first.mem)


def test_ray_map_changes_features(tiny_model: Cut3rModel) -> None:
    img = torch.randn(1, 3, 224, 224)
    first = _step(tiny_model, img, tiny_model.init_state(1), tiny_model.init_mem(1), True)
    k = np.array([[200.0, 0, 112], [0, 200.0, 112], [0, 0, 1]])
    rays = torch.from_numpy(ray_map(k, np.eye(4), (224, 224)))[None]
    with torch.inference_mode():
        plain = tiny_model.step(img, first.state, first.mem, torch.tensor([False]),
                                torch.tensor([True]))
        with_rays = tiny_model.step(img, first.state, first.mem, torch.tensor([False]),
                                    torch.tensor([True]), ray_map=rays)
        gated_off = tiny_model.step(img, first.state, first.mem, torch.tensor([False]),
                                    torch.tensor([True]), ray_map=rays, use_ray=torch.zeros(1))
    assert not torch.allclose(plain.tokens, with_rays.tokens)
    assert torch.allclose(plain.tokens, gated_off.tokens, atol=1e-6)


def test_bfloat16_backbone_keeps_float32_head() -> None:
    torch.manual_seed(0)
    ref = Cut3rModel(Cut3rConfig.tiny('dpt')).eval()
    half = Cut3rModel(Cut3rConfig.tiny('dpt')).eval()
    half.load_state_dict(ref.state_dict())
    half.to_inference_dtype(torch.bfloat16)
    assert half.compute_dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in half.downstream_head.parameters())
    img = torch.randn(1, 3, 224, 224)
    a = _step(ref, img, ref.init_state(1), ref.init_mem(1), True)
    b = _step(half, img, half.init_state(1), half.init_mem(1), True)
    assert b.pts_world.dtype == torch.float32 and b.tokens.dtype == torch.bfloat16
    assert torch.allclose(a.tokens, b.tokens.float(), atol=0.15)


# --------------------------------------------------------------------------- streaming
def _frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(n)]


def test_stream_outputs_reset_and_bounded_state(tiny_model: Cut3rModel) -> None:
    stream = Cut3rStream(tiny_model, image_size=224, resize_mode='crop')
    assert isinstance(stream, GeometryEncoder)
    frames = _frames(4)
    first_run = [stream.step(f) for f in frames]
    geo = first_run[-1]
    assert isinstance(geo, FrameGeometry)
    assert geo.image_size == (224, 224) and geo.frame_index == 3
    assert geo.pts_world.shape == (224, 224, 3) and geo.pts_world.dtype == np.float32
    assert geo.conf.shape == (224, 224)
    assert geo.pose.shape == (4, 4) and geo.pose.dtype == np.float64
    assert np.allclose(geo.pose[:3, :3] @ geo.pose[:3, :3].T, np.eye(3), atol=1e-5)
    assert geo.tokens.shape == (1 + 196, tiny_model.config.dec_embed_dim)
    nbytes = stream.state_nbytes
    for f in _frames(6, seed=1):
        stream.step(f)
    assert stream.state_nbytes == nbytes  # constant memory, however long the stream
    stream.reset()
    assert stream.frame_index == 0 and stream.state_nbytes == 0
    second_run = [stream.step(f) for f in frames]
    for a, b in zip(first_run, second_run):
        assert np.array_equal(a.pts_world, b.pts_world) and torch.equal(a.tokens, b.tokens)
    # History matters: the same frame gives different output at a different position.
    assert not np.allclose(first_run[0].pts_world, first_run[1].pts_world)


def test_stream_uses_ray_map_only_after_first_frame(tiny_model: Cut3rModel) -> None:
    stream = Cut3rStream(tiny_model, image_size=224)
    k = np.array([[250.0, 0, 160], [0, 250.0, 120], [0, 0, 1]])
    pose = np.eye(4)
    frames = _frames(3)
    assert not stream.step(frames[0], intrinsics=k, cam_to_world=pose).used_ray_map
    pose[0, 3] = 0.2
    assert stream.step(frames[1], intrinsics=k, cam_to_world=pose).used_ray_map
    assert not stream.step(frames[2], intrinsics=k).used_ray_map  # pose unknown


# ------------------------------------------------------------------------ preprocessing
@pytest.mark.parametrize('src_hw, size, expected', [
    ((480, 640), 512, (384, 512)),
    ((1080, 1920), 512, (288, 512)),
    ((500, 500), 512, (384, 512)),  # square images are cropped to 4:3 like upstream
    ((640, 480), 512, (512, 384)),
    ((480, 640), 224, (224, 224)),
])
def test_crop_mode_output_sizes(
    src_hw: tuple[int, int], size: int, expected: tuple[int, int]
) -> None:
    assert output_size(src_hw, size, 'crop') == expected
    img = np.zeros((*src_hw, 3), dtype=np.uint8)
    arr, transform = preprocess_image(img, size, 'crop')
    assert arr.shape == (1, 3, *expected) and transform.out_size == expected
    assert arr.dtype == np.float32 and float(arr.min()) == -1.0  # ImgNorm maps 0 to -1


@pytest.mark.parametrize('mode, size', [('crop', 512), ('crop', 224), ('stretch', (432, 432))])
def test_intrinsics_follow_the_pixels(mode: str, size) -> None:
    src = np.zeros((480, 640, 3), dtype=np.uint8)
    k = np.array([[500.0, 0, 330.0], [0, 500.0, 250.0], [0, 0, 1]])
    point = np.array([0.3, -0.2, 2.0])
    u, v, _ = (k @ point) / point[2]
    src[int(round(v)) - 3:int(round(v)) + 4, int(round(u)) - 3:int(round(u)) + 4] = 255
    arr, transform = preprocess_image(src, size, mode)
    k2 = transform.apply_to_intrinsics(k)
    u2, v2, _ = (k2 @ point) / point[2]
    img = arr[0, 0]
    ys, xs = np.nonzero(img > 0.5 * img.max())
    assert abs(xs.mean() - u2) < 1.0 and abs(ys.mean() - v2) < 1.0


@pytest.mark.parametrize('src_hw, out_hw', [((384, 384), (432, 432)), ((480, 640), (224, 224)),
                                            ((240, 320), (240, 320))])
def test_stretch_matches_torch_bilinear(src_hw: tuple[int, int], out_hw: tuple[int, int]) -> None:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (*src_hw, 3), dtype=np.uint8)
    arr, _ = preprocess_image(img, out_hw, 'stretch')
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0, size=out_hw,
        mode='bilinear', align_corners=False)
    # Float32 summation order differs slightly; 1e-4 is 1/78 of one 8-bit grey level.
    assert np.abs(arr - ((ref - 0.5) / 0.5).numpy()).max() < 1e-4


def test_ray_map_geometry() -> None:
    k = np.array([[100.0, 0, 31.5], [0, 100.0, 15.5], [0, 0, 1]])
    rays = ray_map(k, np.eye(4), (32, 64))
    assert rays.shape == (6, 32, 64)
    assert np.allclose(rays[:3], 0.0)
    assert np.allclose(np.linalg.norm(rays[3:], axis=0), 1.0, atol=1e-6)
    assert rays[5, 15, 31] > 0.99 and rays[3, 15, 63] > 0  # forward at centre, +x to the right
    pose = np.eye(4)
    pose[:3, 3] = [1.0, 2.0, 3.0]
    moved = ray_map(k, pose, (32, 64))
    assert np.allclose(moved[:3, 0, 0], [1.0, 2.0, 3.0])


def test_pose_encoding_to_matrix() -> None:
    angle = 0.3
    enc = np.array([1.0, 2.0, 3.0, math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2)])
    mat = pose_encoding_to_matrix(enc)
    c, s = math.cos(angle), math.sin(angle)
    expected = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    assert np.allclose(mat[:3, :3], expected) and np.allclose(mat[:3, 3], [1, 2, 3])


def test_bad_inputs_are_rejected(tiny_model: Cut3rModel) -> None:
    stream = Cut3rStream(tiny_model, image_size=224)
    with pytest.raises(ValueError, match='uint8'):
        stream.step(np.zeros((240, 320, 3), dtype=np.float32))
    with pytest.raises(ValueError, match='resize_mode'):
        preprocess_image(np.zeros((64, 64, 3), np.uint8), 224, 'zoom')
    with pytest.raises(ValueError, match='patch size'):
        preprocess_image(np.zeros((64, 64, 3), np.uint8), (100, 100), 'stretch')
