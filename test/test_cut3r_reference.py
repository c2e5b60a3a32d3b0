"""CUT3R as the reference feeds and runs it: VLM-3R's input, fp16 RoPE rounding, resets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vlm3r_ros.models.cut3r.blocks import Attention
from vlm3r_ros.models.cut3r.config import Cut3rConfig
from vlm3r_ros.models.cut3r.model import Cut3rModel
from vlm3r_ros.models.cut3r.preprocess import VLM3R_VISION_SIZE, preprocess_image
from vlm3r_ros.models.cut3r.rope import RoPE2D
from vlm3r_ros.models.cut3r.stream import RESET_MODES, Cut3rStream


@pytest.fixture(scope='module')
def tiny_model() -> Cut3rModel:
    """A seeded tiny DPT model."""
    torch.manual_seed(0)
    return Cut3rModel(Cut3rConfig.tiny('dpt')).eval()


def _edgy_frame(h: int = 480, w: int = 640, seed: int = 0) -> np.ndarray:
    """A frame with hard edges (blocks of random colour) where resizes differ most."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.repeat(np.repeat(blocks, 16, axis=0), 16, axis=1))


def _frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(n)]


# ------------------------------------------------------------------- VLM-3R's input
def _reference_vlm3r_input(frame: np.ndarray, size: int) -> np.ndarray:
    """The reference chain written out: PIL bicubic 384, /255, (x-0.5)/0.5, F.interpolate."""
    small = Image.fromarray(frame).resize((VLM3R_VISION_SIZE,) * 2, Image.Resampling.BICUBIC)
    pixels = np.asarray(small).astype(np.float64) / 255.0
    pixels = ((pixels.astype(np.float32) - 0.5) / 0.5).transpose(2, 0, 1)[None]
    out = F.interpolate(torch.from_numpy(np.ascontiguousarray(pixels)), size=(size, size),
                        mode='bilinear', align_corners=False)
    return out.numpy()


@pytest.mark.parametrize('src_hw', [(480, 640), (384, 384), (200, 150)])
def test_vlm3r_mode_is_the_siglip_frame_resized_to_432(src_hw: tuple[int, int]) -> None:
    frame = _edgy_frame(*src_hw, seed=sum(src_hw))
    arr, transform = preprocess_image(frame, (432, 432), 'vlm3r')
    assert arr.shape == (1, 3, 432, 432) and arr.dtype == np.float32
    assert transform.out_size == (432, 432) and transform.offset == (0.0, 0.0)
    # Float32 summation order differs slightly; 1e-4 is 1/78 of one 8-bit grey level.
    assert np.abs(arr - _reference_vlm3r_input(frame, 432)).max() < 1e-4


def test_vlm3r_mode_differs_from_stretching_the_raw_frame() -> None:
    frame = _edgy_frame()
    vlm3r, _ = preprocess_image(frame, (432, 432), 'vlm3r')
    stretch, _ = preprocess_image(frame, (432, 432), 'stretch')
    grey = np.abs(vlm3r - stretch) * 127.5  # [-1, 1] back to grey levels
    assert grey.max() > 10  # edges: the 8-bit bicubic detour is visible
    assert 0.1 < grey.mean() < 5


def test_vlm3r_mode_keeps_intrinsics_consistent() -> None:
    k = np.array([[500.0, 0.0, 320.0], [0.0, 480.0, 240.0], [0.0, 0.0, 1.0]])
    _, transform = preprocess_image(_edgy_frame(), (432, 432), 'vlm3r')
    k2 = transform.apply_to_intrinsics(k)
    assert k2[0, 0] == pytest.approx(500.0 * 432 / 640)
    assert k2[1, 1] == pytest.approx(480.0 * 432 / 480)
    assert k2[0, 2] == pytest.approx((320.5) * 432 / 640 - 0.5)


# ------------------------------------------------------------------ fp16 RoPE rounding
def test_rope_fp16_rounding_rounds_q_and_k_as_the_official_encoder() -> None:
    torch.manual_seed(1)
    attn = Attention(64, 4, qkv_bias=True, rope=RoPE2D(100.0)).eval()
    x = torch.randn(2, 30, 64) * 3
    pos = torch.cartesian_prod(torch.arange(5), torch.arange(6))[None].expand(2, -1, -1)
    with torch.no_grad():
        precise = attn(x, pos)
        attn.rope_fp16_rounding = True
        rounded = attn(x, pos)
        # Written out: fp16 in, float32 rotation, fp16 out, back to the model dtype.
        q, k, v = attn.qkv(x).reshape(2, 30, 3, 4, 16).permute(2, 0, 3, 1, 4).unbind(0)
        q = attn.rope(q.half(), pos).half().float()
        k = attn.rope(k.half(), pos).half().float()
        ref = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
        ref = attn.proj(ref.transpose(1, 2).reshape(2, 30, 64))
    torch.testing.assert_close(rounded, ref, atol=1e-6, rtol=0)
    assert not torch.equal(rounded, precise)
    assert (rounded - precise).abs().max() < 1e-2


def test_model_switch_touches_only_the_image_encoder(tiny_model: Cut3rModel) -> None:
    model = tiny_model
    assert not model.rope_fp16_rounding  # default: today's float32 RoPE
    img = torch.from_numpy(preprocess_image(_frames(1)[0], 224, 'crop')[0])
    args = (model.init_state(1), model.init_mem(1), torch.tensor([True]), torch.tensor([True]))
    try:
        with torch.inference_mode():
            before = model.step(img, *args)
            model.set_rope_fp16_rounding(True)
            after = model.step(img, *args)
        assert model.rope_fp16_rounding
        assert all(b.attn.rope_fp16_rounding for b in model.enc_blocks)
        others = [*model.enc_blocks_ray_map, *model.dec_blocks, *model.dec_blocks_state]
        assert not any(b.attn.rope_fp16_rounding for b in others)
        assert not torch.equal(before.tokens, after.tokens)
        assert torch.allclose(before.tokens, after.tokens, atol=1e-2)
    finally:
        model.set_rope_fp16_rounding(False)


# ------------------------------------------------------------------------------ resets
def _manual(model: Cut3rModel, img: np.ndarray, state: torch.Tensor, mem: torch.Tensor,
            first: bool):
    with torch.inference_mode():
        return model.step(torch.from_numpy(img), state, mem, torch.tensor([first]),
                          torch.tensor([True]))


def test_reference_reset_reads_the_pose_from_the_reinitialised_memory(
    tiny_model: Cut3rModel,
) -> None:
    model = tiny_model
    frames = _frames(4, seed=3)
    imgs = [preprocess_image(f, 224, 'crop')[0] for f in frames]
    # The official rollout with reset=True on view 1: after that view, state and memory
    # go back to their initial values; view 2 is not i == 0, so it reads the memory.
    out0 = _manual(model, imgs[0], model.init_state(1), model.init_mem(1), True)
    _manual(model, imgs[1], out0.state, out0.mem, False)
    ref2 = _manual(model, imgs[2], model.init_state(1), model.init_mem(1), False)
    ref3 = _manual(model, imgs[3], ref2.state, ref2.mem, False)
    fresh2 = _manual(model, imgs[2], model.init_state(1), model.init_mem(1), True)

    stream = Cut3rStream(model, image_size=224, resize_mode='crop')
    stream.step(frames[0])
    stream.step(frames[1])
    stream.reset(mode='reference')
    got2, got3 = stream.step(frames[2]), stream.step(frames[3])
    assert got2.frame_index == 2 and got3.frame_index == 3  # the sequence goes on
    torch.testing.assert_close(got2.tokens, ref2.tokens[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(got3.tokens, ref3.tokens[0], atol=1e-6, rtol=0)
    # ... which is not a brand-new sequence (learnt pose token).
    assert not torch.allclose(got2.tokens, fresh2.tokens[0], atol=1e-4)

    stream.reset(mode='new_sequence')
    new2 = stream.step(frames[2])
    assert new2.frame_index == 0
    torch.testing.assert_close(new2.tokens, fresh2.tokens[0], atol=1e-6, rtol=0)


def test_reset_modes_are_named_and_checked(tiny_model: Cut3rModel) -> None:
    assert RESET_MODES == ('new_sequence', 'reference')
    stream = Cut3rStream(tiny_model, image_size=224)
    stream.reset(mode='reference')  # before any frame: nothing to reset
    assert stream.frame_index == 0 and stream.state_nbytes == 0
    stream.step(_frames(1)[0])
    with pytest.raises(ValueError, match='reset mode'):
        stream.reset(mode='soft')
    stream.reset(mode='reference')
    assert stream.frame_index == 1 and stream.state_nbytes > 0
