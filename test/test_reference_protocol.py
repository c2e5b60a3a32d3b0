"""The 'reference' protocol preset: parameters, linspace keyframes, fresh CUT3R, official parse."""
import time

import numpy as np
import pytest
import torch

from vlm3r_ros.eval.render import intrinsics, render
from vlm3r_ros.eval.scenes import make_scene, make_trajectory
from vlm3r_ros.models.loader import ModelSpec, load_bundle
from vlm3r_ros.node import params
from vlm3r_ros.pipeline.answers import parse_answer, parse_answer_official, parse_answer_with
from vlm3r_ros.pipeline.coverage import reference_sample
from vlm3r_ros.pipeline.engine import EngineConfig, SpatialEngine
from vlm3r_ros.pipeline.errors import ErrorCode
from vlm3r_ros.pipeline.requests import QueryRequest


def defaults(**changes):
    values = {spec.name: spec.default for spec in params.SPECS}
    values.update(changes)
    return values


def test_reference_preset_fixes_the_official_evaluation_path():
    product = params.validate(defaults())
    assert (product.keyframe_selection, product.cache_mode, product.option_decoding,
            product.answer_parser) == ('coverage', 'streaming', 'constrained', 'lenient')
    cfg = params.validate(defaults(protocol='reference', keyframe_budget=8, dtype='bfloat16',
                                   keyframe_selection='coverage'))
    assert cfg.keyframe_selection == 'linspace' and cfg.keyframe_budget == 32
    assert cfg.cache_mode == 'per_query' and cfg.option_decoding == 'generate'
    assert cfg.max_new_tokens == 16 and cfg.answer_parser == 'official'
    assert cfg.numerics == 'reference' and cfg.dtype == 'auto' and cfg.store_max_side == 0
    engine = cfg.engine_config()
    assert (engine.selection, engine.keyframe_budget, engine.answer_parser) == (
        'linspace', 32, 'official')
    # fp16 on a GPU, float32 on CPU (logged by the node).
    spec = ModelSpec.from_config(cfg)
    assert spec.resolved_dtype('cuda') == 'float16' and spec.resolved_dtype('cpu') == 'float32'
    overrides = params.protocol_overrides(defaults(protocol='reference', keyframe_budget=8))
    assert overrides['keyframe_budget'] == (8, 32) and 'max_new_tokens' not in overrides
    # Live changes of what the preset fixes are refused; others still apply.
    reason = params.check_change({'keyframe_budget': 8}, True, protocol='reference')
    assert reason and 'fixed at 32 by protocol reference' in reason
    assert params.check_change({'keyframe_budget': 32}, True, protocol='reference') is None
    assert params.check_change({'request_timeout_s': 5.0}, True, protocol='reference') is None
    assert params.check_change({'keyframe_budget': 8}, True) is None
    assert 'read-only' in params.check_change({'protocol': 'reference'}, False)


def test_reference_sample_is_the_official_linspace():
    ids = list(range(100, 400))
    expected = np.linspace(0, 299, 32, dtype=int)
    assert reference_sample(ids, 32) == [ids[i] for i in expected]
    # Fewer frames than the budget: the reference repeats frames, 32 entries still.
    short = reference_sample([7, 8, 9], 32)
    assert len(short) == 32 and short[0] == 7 and short[-1] == 9 and set(short) == {7, 8, 9}
    assert reference_sample([], 32) == []
    with pytest.raises(ValueError):
        reference_sample(ids, 0)


@pytest.mark.parametrize('text, letter, value', [
    # The model's text is stripped first, as the reference strips its decoded output.
    ('B', 'B', None), ('b.', 'B', None), (' B', 'B', None), ('B..', 'B', None),
    ('3.5 meters', '', 3.5), ('3.5.', '', 3.5), ('A.\nB', '', None), ('  4  ', '', 4.0)])
def test_official_node_parse(text, letter, value):
    parsed = parse_answer_official(text, ['A. a', 'B. b'])
    assert parsed.option_letter == letter
    assert (np.isnan(parsed.value) if value is None else parsed.value == value)
    assert parse_answer_with('lenient', text, ['A. a', 'B. b']) == parse_answer(
        text, ['A. a', 'B. b'])
    with pytest.raises(ValueError):
        parse_answer_with('bogus', text)


@pytest.fixture(scope='module')
def bundle():
    return load_bundle(ModelSpec(profile='tiny'))


@pytest.fixture(scope='module')
def frames():
    scene = make_scene(5)
    traj = make_trajectory(scene, seconds=5, rate_hz=2, seed=5)  # 10 frames
    K = intrinsics(64, 48)
    return [render(scene, pose, K, 64, 48)[0] for pose in traj.poses]


def reference_engine(bundle, **cfg):
    config = params.validate(defaults(protocol='reference', geometry_rate_hz=120.0,
                                      **cfg)).engine_config()
    engine = SpatialEngine(config, lambda: bundle)
    engine.load_models(blocking=True)
    return engine


def test_linspace_keyframes_fresh_cut3r_and_official_parse(bundle, frames):
    engine = reference_engine(bundle)
    start, period = 1_000_000_000, 100_000_000
    for i, rgb in enumerate(frames):
        engine.submit_frame(start + i * period, rgb)
    # Selection needs no geometry: every buffered frame counts (workers not started yet).
    sel = engine.select_keyframes(8)
    ids = [r.frame_id for r in engine.buffer.snapshot()]
    assert sel.frame_ids == [ids[i] for i in np.linspace(0, len(ids) - 1, 8, dtype=int)]
    window = engine.select_keyframes(4, (start + 2 * period, start + 7 * period))
    assert window.frame_ids == [ids[i] for i in (2, 3, 5, 7)]
    assert len(engine.select_keyframes().frame_ids) == 32  # the budget, frames repeated
    # The tokens are CUT3R run fresh over exactly the selected frames, in order.
    records, tokens, key = engine._keyframe_inputs(sel.frame_ids)
    assert key is None
    stream = bundle.new_geometry_stream()
    for record, got in zip(records, tokens):
        geom = stream.step(record.image)
        want = bundle.spatial.encode_frame(record.image, geom.tokens, geom.pts_world)
        assert torch.equal(torch.as_tensor(got), torch.as_tensor(want))
    again = engine._keyframe_inputs(sel.frame_ids)[1]  # same frames: reused, not recomputed
    assert all(a is b for a, b in zip(again, tokens))
    engine.start()
    try:
        res = engine.ask(QueryRequest('How many chairs are in this room?',
                                      answer_type='number')).result(60)
        assert res.code == ErrorCode.OK, res.message
        assert len(res.keyframe_stamps_ns) == 32  # 10 frames, repeated as the reference does
        expected = parse_answer_official(res.answer)
        assert res.answer == expected.text
        assert (np.isnan(res.value) and np.isnan(expected.value)) or res.value == expected.value
    finally:
        engine.stop()
        engine.unload_models()
        time.sleep(0.01)
