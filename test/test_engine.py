"""The engine without ROS: tiny model, streaming vs per_query, BUSY, depth voxels, resets."""
import threading
import time

import numpy as np
import pytest

from vlm3r_ros.eval.render import intrinsics, render
from vlm3r_ros.eval.scenes import make_scene, make_trajectory
from vlm3r_ros.models.loader import ModelSpec, load_bundle
from vlm3r_ros.pipeline.answers import build_prompt
from vlm3r_ros.pipeline.engine import EngineConfig, ModelState, SpatialEngine
from vlm3r_ros.pipeline.errors import ErrorCode
from vlm3r_ros.pipeline.rgb_odometry import rotation_angle_deg
from vlm3r_ros.pipeline.requests import QueryRequest, RouteRequest


@pytest.fixture(scope='module')
def bundle():
    return load_bundle(ModelSpec(profile='tiny'))


@pytest.fixture(scope='module')
def room():
    scene = make_scene(5)
    traj = make_trajectory(scene, seconds=6, rate_hz=2, seed=5)
    K = intrinsics(96, 72)
    return [(*render(scene, pose, K, 96, 72), K, pose) for pose in traj.poses]


def feed(engine, frames, start_ns=1_000_000_000, period_ns=500_000_000):
    done = engine.status().geometry_frames
    for i, (rgb, depth, K, pose) in enumerate(frames):
        engine.submit_pose(start_ns + i * period_ns, pose)
        engine.submit_frame(start_ns + i * period_ns, rgb, depth=depth, intrinsics=K)
        target = done + i + 1
        deadline = time.monotonic() + 10
        while engine.status().geometry_frames < target and time.monotonic() < deadline:
            time.sleep(0.002)


def make_engine(bundle, **cfg):
    engine = SpatialEngine(EngineConfig(geometry_rate_hz=0, points_source='depth', **cfg),
                           lambda: bundle)
    engine.load_models(blocking=True)
    engine.start()
    return engine


def test_streaming_and_per_query_use_the_same_keyframes(bundle, room):
    results = {}
    for mode in ('streaming', 'per_query'):
        engine = make_engine(bundle, cache_mode=mode)
        try:
            feed(engine, room)
            res = engine.ask(QueryRequest('How many chairs are in this room?',
                                          keyframe_budget=4)).result(30)
            assert res.code == ErrorCode.OK, res.message
            results[mode] = res
            records = engine.buffer.snapshot()
            cached = [r.tokens is not None for r in records]
            assert all(cached) if mode == 'streaming' else not any(cached)
        finally:
            engine.stop()
    assert results['streaming'].keyframe_stamps_ns == results['per_query'].keyframe_stamps_ns
    assert len(results['streaming'].keyframe_stamps_ns) == 4  # real depth -> real coverage
    assert 0 < results['streaming'].coverage < 1


def test_depth_voxels_drive_coverage(bundle, room):
    engine = make_engine(bundle)
    try:
        feed(engine, room)
        status = engine.status()
        assert status.voxels_observed > 1000
        sel = engine.select_keyframes(budget=64)
        assert sel.ratio >= 0.95 and len(sel.frame_ids) < len(room)
    finally:
        engine.stop()


def test_full_queue_answers_busy_and_every_request_completes(bundle, room):
    engine = make_engine(bundle, request_queue_size=1, max_new_tokens=64)
    try:
        feed(engine, room[:4])
        futures = [engine.ask(QueryRequest(f'Question number {i}?')) for i in range(12)]
        results = [f.result(60) for f in futures]
        codes = {r.code for r in results}
        assert ErrorCode.BUSY in codes and ErrorCode.OK in codes
        assert codes <= {ErrorCode.BUSY, ErrorCode.OK}
        busy = next(r for r in results if r.code == ErrorCode.BUSY)
        assert 'retry' in busy.message
    finally:
        engine.stop()


def test_backwards_time_resets_buffer_keyframes_and_trajectory(bundle, room):
    engine = make_engine(bundle)
    try:
        feed(engine, room[:5], start_ns=100_000_000_000)
        assert len(engine.coverage) == 5 and len(engine.graph) > 0
        feed(engine, room[5:7], start_ns=1_000_000_000)  # a looping bag starts over
        status = engine.status()
        assert status.buffer_resets == 1 and status.buffer_length == 2
        assert len(engine.coverage) == 2
        # The stream started a brand-new sequence (not the reference's state-only reset).
        assert engine._stream.frame_index == 2
    finally:
        engine.stop()


def test_route_plans_over_true_poses(bundle, room):
    engine = make_engine(bundle, up_axis=(0.0, 0.0, 1.0))
    try:
        feed(engine, room)
        res = engine.plan(RouteRequest('the door')).result(60)
        assert res.code == ErrorCode.OK, res.message
        assert res.positions and len(res.orientations) == len(res.positions)
        assert res.steps[-1] == 'You have reached the final destination.'
        goal = next(r for r in engine.buffer.snapshot() if r.stamp_ns == res.goal_stamp_ns)
        np.testing.assert_allclose(res.positions[-1][:2], goal.pose[:2, 3], atol=1e-6)
    finally:
        engine.stop()


def test_questions_while_loading_and_after_unload(bundle):
    gate = threading.Event()

    def slow_loader():
        gate.wait(10)
        return bundle

    engine = SpatialEngine(EngineConfig(), slow_loader)
    engine.start()
    try:
        engine.load_models()
        res = engine.ask(QueryRequest('q')).result(5)
        assert res.code == ErrorCode.MODEL_NOT_READY and 'loading' in res.message
        gate.set()
        assert engine.wait_loaded(10)
        res = engine.ask(QueryRequest('q')).result(10)
        assert res.code == ErrorCode.NO_FRAMES
        engine.unload_models()
        assert engine.status().model_state == ModelState.UNLOADED
        res = engine.ask(QueryRequest('q')).result(5)
        assert res.code == ErrorCode.MODEL_NOT_READY
    finally:
        engine.stop()


def test_reload_starts_a_new_world_but_keeps_frames(bundle, room):
    engine = make_engine(bundle)
    try:
        feed(engine, room[:4])
        assert len(engine.coverage) == 4
        engine.unload_models()
        engine.load_models(blocking=True)
        # The new geometry stream has a new origin: old voxels/poses are not mixed in.
        assert len(engine.coverage) == 0 and len(engine.graph) == 0
        assert len(engine.buffer) == 4 and all(r.voxels is None for r in engine.buffer.snapshot())
        feed(engine, room[4:6], start_ns=10_000_000_000)
        assert len(engine.coverage) >= 1 and len(engine.buffer) == 6
    finally:
        engine.stop()


@pytest.mark.parametrize('decoding', ['constrained', 'generate'])
def test_option_decoding_modes(bundle, room, decoding):
    engine = make_engine(bundle, option_decoding=decoding)
    try:
        feed(engine, room[:3])
        options = ('the sofa', 'the tv', 'the lamp')
        res = engine.ask(QueryRequest('Which is closest to the door?', options)).result(30)
        assert res.code == ErrorCode.OK
        if decoding == 'constrained':
            assert 0 <= res.option_index < 3  # always one of the options
            assert res.answer == f'{"ABC"[res.option_index]}. {options[res.option_index]}'
        else:
            assert res.option_index in (-1, 0, 1, 2)  # whatever the free text names
    finally:
        engine.stop()


def test_goal_not_localised_clearly_enough_is_goal_not_found(bundle, room):
    engine = make_engine(bundle, up_axis=(0.0, 0.0, 1.0), route_min_goal_probability=0.99)
    try:
        feed(engine, room[:6])
        res = engine.plan(RouteRequest('the door')).result(60)
        assert res.code == ErrorCode.GOAL_NOT_FOUND
        assert 'route_min_goal_probability' in res.message and not res.positions
    finally:
        engine.stop()


@pytest.mark.parametrize('mode', ['median', 'expected'])
def test_numeric_decoding_answers_with_the_models_number_distribution(bundle, room, mode):
    engine = make_engine(bundle, numeric_decoding=mode)
    try:
        feed(engine, room[:3])
        question = 'How many chairs are in this room?'
        res = engine.ask(QueryRequest(question)).result(60)
        assert res.code == ErrorCode.OK
        # The same value as the model's own estimate over the same keyframes.
        selection = engine.select_keyframes(engine.config.keyframe_budget)
        _, tokens, key = engine._keyframe_inputs(selection.frame_ids)
        want = bundle.spatial.estimate_number(build_prompt(question), tokens, mode,
                                              prefix_key=key)
        assert res.value == pytest.approx(float(f'{want:.4g}'))
        assert res.answer == f'{want:.4g}'
    finally:
        engine.stop()


def test_rgb_pose_source_tracks_by_default_on_tiny_and_can_keep_the_encoders(bundle):
    """auto = tracked poses on tiny: the trajectory follows the true turn of the camera; the
    encoder's own poses stay one parameter away (and in the per-query stream)."""
    from vlm3r_ros.pipeline.tracked_stream import TrackedStream
    from vlm3r_ros.train.dataset import SPLIT_SEED_BASE
    from vlm3r_ros.train.scene_sampling import sample_sequence
    spec = sample_sequence(SPLIT_SEED_BASE['test'] + 902, seconds=3.0, rate_hz=5.0)
    room = [(render(spec.scene, pose, spec.K, spec.width, spec.height)[0], None, spec.K, pose)
            for pose in spec.trajectory.poses]
    rotations = {}
    for source in ('auto', 'encoder'):
        engine = SpatialEngine(EngineConfig(geometry_rate_hz=0, rgb_pose_source=source,
                                            store_max_side=0), lambda: bundle)
        engine.load_models(blocking=True)
        engine.start()
        try:
            frames = room
            for i, (rgb, _, K, _) in enumerate(frames):  # RGB + camera_info only
                engine.submit_frame(1_000_000_000 + i * 500_000_000, rgb, intrinsics=K)
                deadline = time.monotonic() + 10
                while engine.status().geometry_frames < i + 1 and time.monotonic() < deadline:
                    time.sleep(0.002)
            status = engine.status()
            assert status.geometry_frames == len(frames)
            assert status.pose_source == ('tracking' if source == 'auto' else 'encoder')
            assert isinstance(engine._stream, TrackedStream) == (source == 'auto')
            poses = [r.pose for r in engine.buffer.snapshot()]
        finally:
            engine.stop()
        true_rel = np.linalg.inv(room[0][3]) @ room[-1][3]
        pred_rel = np.linalg.inv(poses[0]) @ poses[-1]
        err = pred_rel[:3, :3] @ true_rel[:3, :3].T
        rotations[source] = rotation_angle_deg(err)
    turned = rotation_angle_deg(true_rel)
    print(f'camera turned {turned:.1f} deg; end-to-end rotation error (deg):', rotations)
    # Measured: turned 89 deg; tracked 3.6 deg off (3.8 before the joint refinement), the
    # encoder's 121 deg off.
    assert rotations['auto'] < 0.1 * turned and rotations['auto'] < 0.2 * rotations['encoder']
