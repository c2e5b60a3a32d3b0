"""The node's model loader on official-layout checkpoints written here (no downloads)."""
import numpy as np
import pytest
import torch

from vlm3r_ros.models.cut3r.checkpoint import save_official_layout
from vlm3r_ros.models.cut3r.config import Cut3rConfig
from vlm3r_ros.models.cut3r.model import Cut3rModel
from vlm3r_ros.models.cut3r.stream import Cut3rStream
from vlm3r_ros.models.loader import ModelConfigError, ModelSpec, load_bundle
from vlm3r_ros.models.profiles import get_profile
from vlm3r_ros.models.vlm3r.checkpoint import save_base_checkpoint, save_vlm3r_adapter
from vlm3r_ros.models.vlm3r.model import Vlm3rModel

FRAME = (np.random.default_rng(3).random((60, 80, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """Tiny CUT3R .pth + LLaVA base + VLM-3R adapter, with weights unlike the defaults."""
    root = tmp_path_factory.mktemp('weights')
    torch.manual_seed(123)
    cut3r = Cut3rModel(Cut3rConfig.small()).eval()
    save_official_layout(cut3r, root / 'cut3r_small.pth')
    lmm = Vlm3rModel.random(get_profile('tiny', seed=7), seed=7)
    save_base_checkpoint(lmm, root / 'base')
    save_vlm3r_adapter(lmm, root / 'vlm3r')  # zero-B LoRA: the merge is the identity
    return root, cut3r, lmm


def test_bundle_loads_official_layout_and_reproduces_the_writer(checkpoints):
    root, cut3r, lmm = checkpoints
    bundle = load_bundle(ModelSpec(profile='tiny', cut3r_weights=str(root / 'cut3r_small.pth'),
                                   tiny_weights_path=str(root / 'base'),
                                   lora_path=str(root / 'vlm3r')))
    geom = bundle.new_geometry_stream().step(FRAME)
    ref = Cut3rStream(cut3r, image_size=(160, 160), resize_mode='stretch').step(FRAME)
    assert torch.equal(geom.tokens, ref.tokens)
    np.testing.assert_array_equal(geom.pts_world, ref.pts_world)
    tokens = bundle.spatial.encode_frame(FRAME, geom.tokens, geom.pts_world)
    assert torch.equal(tokens, lmm.encode_frame(FRAME, ref.tokens, ref.pts_world))
    prompt = 'These are frames of a video.\nHow many chairs are in this room?'
    assert bundle.spatial.answer(prompt, [tokens] * 3) == lmm.answer(prompt, [tokens] * 3)
    # ...and it differs from the seeded default, so the files were really used.
    default = load_bundle(ModelSpec(profile='tiny'))
    assert not torch.equal(default.new_geometry_stream().step(FRAME).tokens, geom.tokens)


@pytest.mark.parametrize('spec,match', [
    (ModelSpec(profile='vlm3r-7b'), 'vlm3r_base_path is not set'),
    (ModelSpec(profile='tiny', tiny_weights_path='/nonexistent/tiny'), 'tiny_weights_path'),
    (ModelSpec(profile='tiny', lora_path='/nope', tiny_weights_path='/'), 'vlm3r_lora_path'),
    (ModelSpec(profile='tiny', device='cuda'), 'no CUDA GPU'),
])
def test_bad_model_settings_fail_naming_the_parameter(spec, match):
    if spec.device == 'cuda' and torch.cuda.is_available():
        pytest.skip('a GPU is present')
    with pytest.raises(ModelConfigError, match=match):
        load_bundle(spec)


@pytest.mark.slow
def test_onnx_geometry_backend_matches_torch_and_reuses_its_export(tmp_path):
    torch_bundle = load_bundle(ModelSpec(profile='tiny'))
    onnx_bundle = load_bundle(ModelSpec(profile='tiny', geometry_backend='onnx',
                                        onnx_cache_dir=str(tmp_path)))
    exports = list(tmp_path.glob('cut3r_*.onnx'))
    assert len(exports) == 1
    a, b = torch_bundle.new_geometry_stream(), onnx_bundle.new_geometry_stream()
    for i in range(3):
        frame = np.roll(FRAME, 7 * i, axis=1)
        ga, gb = a.step(frame), b.step(frame)
        assert (ga.tokens - gb.tokens).abs().max().item() < 1e-4
        np.testing.assert_allclose(ga.pts_world, gb.pts_world, atol=1e-4)
    mtime = exports[0].stat().st_mtime_ns
    load_bundle(ModelSpec(profile='tiny', geometry_backend='onnx', onnx_cache_dir=str(tmp_path)))
    assert exports[0].stat().st_mtime_ns == mtime  # cached, not exported again


def test_each_profile_feeds_cut3r_its_own_way(checkpoints):
    """7B: VLM-3R's input (SigLIP frame -> 432); tiny: the stretch its CUT3R was trained on."""
    from vlm3r_ros.models.loader import _stream_factory
    _, cut3r, _ = checkpoints
    assert get_profile('vlm3r-7b').geometry_resize_mode == 'vlm3r'
    assert get_profile('tiny').geometry_resize_mode == 'stretch'
    assert load_bundle(ModelSpec(profile='tiny')).new_geometry_stream().resize_mode == 'stretch'
    spec = ModelSpec(profile='vlm3r-7b')
    mode = get_profile('vlm3r-7b').geometry_resize_mode
    stream = _stream_factory(spec, cut3r, (432, 432), mode)()
    assert stream.resize_mode == 'vlm3r'
    got = stream.step(FRAME)
    ref = Cut3rStream(cut3r, image_size=(432, 432), resize_mode='vlm3r').step(FRAME)
    stretched = Cut3rStream(cut3r, image_size=(432, 432), resize_mode='stretch').step(FRAME)
    assert torch.equal(got.tokens, ref.tokens)
    assert not torch.equal(got.tokens, stretched.tokens)


def test_numerics_follow_the_profile_unless_set():
    assert ModelSpec(profile='vlm3r-7b').resolved_numerics() == 'reference'
    assert ModelSpec(profile='tiny').resolved_numerics() == 'precise'
    assert ModelSpec(profile='tiny', numerics='reference').resolved_numerics() == 'reference'
    assert ModelSpec(profile='vlm3r-7b', numerics='precise').resolved_numerics() == 'precise'
    # dtype auto: the reference runs float16 on GPU; precise keeps bfloat16; CPU float32.
    assert ModelSpec(profile='vlm3r-7b').resolved_dtype('cuda') == 'float16'
    assert ModelSpec(profile='vlm3r-7b', numerics='precise').resolved_dtype('cuda') == 'bfloat16'
    assert ModelSpec(profile='tiny').resolved_dtype('cuda') == 'bfloat16'
    assert ModelSpec(profile='vlm3r-7b').resolved_dtype('cpu') == 'float32'
    assert ModelSpec(profile='vlm3r-7b', dtype='float32').resolved_dtype('cuda') == 'float32'
    with pytest.raises(ModelConfigError, match='numerics'):
        ModelSpec(profile='tiny', numerics='fast').resolved_numerics()


def test_reference_numerics_switch_rope_rounding_and_tf32():
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        precise = load_bundle(ModelSpec(profile='tiny')).new_geometry_stream()
        assert not precise.model.rope_fp16_rounding
        assert torch.backends.cuda.matmul.allow_tf32 is False
        reference = load_bundle(ModelSpec(profile='tiny', numerics='reference'))
        stream = reference.new_geometry_stream()
        assert stream.model.rope_fp16_rounding
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        # Same weights, slightly different numbers.
        a, b = precise.step(FRAME).tokens, stream.step(FRAME).tokens
        assert not torch.equal(a, b) and torch.allclose(a, b, atol=5e-2)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
