"""Scene memory without ROS: save -> new engine -> load, recompute on another model, bad files."""
import dataclasses
import time

import numpy as np
import pytest

from vlm3r_ros.eval.render import intrinsics, render
from vlm3r_ros.eval.scenes import make_scene, make_trajectory
from vlm3r_ros.models.loader import ModelSpec, load_bundle
from vlm3r_ros.pipeline.engine import EngineConfig, SpatialEngine
from vlm3r_ros.pipeline.errors import ErrorCode
from vlm3r_ros.pipeline.requests import QueryRequest, RouteRequest
from vlm3r_ros.pipeline.scene_memory import SceneNotReady
from vlm3r_ros.pipeline.scene_store import SceneFileError, read_scene

QUESTION = 'How many chairs are in this room?'
PERIOD_NS = 500_000_000


@pytest.fixture(scope='module')
def bundle():
    return load_bundle(ModelSpec(profile='tiny'))


@pytest.fixture(scope='module')
def frames():
    scene = make_scene(7)
    traj = make_trajectory(scene, seconds=8, rate_hz=2, seed=7)
    K = intrinsics(96, 72)
    return [render(scene, pose, K, 96, 72)[0] for pose in traj.poses]


def make_engine(bundle, **cfg):
    """An RGB-only engine (the encoder's poses and pointmaps), processing every frame."""
    engine = SpatialEngine(EngineConfig(geometry_rate_hz=0, reconstruction=True, **cfg),
                           lambda: bundle)
    engine.load_models(blocking=True)
    engine.start()
    return engine


def wait_geometry(engine, target, timeout_s=20.0):
    deadline = time.monotonic() + timeout_s
    while engine.status().geometry_frames < target and time.monotonic() < deadline:
        time.sleep(0.005)
    assert engine.status().geometry_frames >= target


def feed(engine, images, first=0):
    done = engine.status().geometry_frames
    for i, rgb in enumerate(images):
        engine.submit_frame(1_000_000_000 + (first + i) * PERIOD_NS, rgb)
        wait_geometry(engine, done + i + 1)


def scene_view(engine):
    """What a user sees of a scene: keyframes, an answer, the trajectory, a route."""
    answer = engine.ask(QueryRequest(QUESTION, keyframe_budget=4)).result(30)
    assert answer.code == ErrorCode.OK, answer.message
    route = engine.plan(RouteRequest('the chair')).result(30)
    return (answer.keyframe_stamps_ns, answer.answer, answer.coverage,
            engine.trajectory().round(6).tolist(), route.code, route.steps,
            engine.cloud.snapshot().total, len(engine.graph))


@pytest.fixture(scope='module')
def saved(bundle, frames, tmp_path_factory):
    engine = make_engine(bundle)
    try:
        feed(engine, frames[:-1])
        path = tmp_path_factory.mktemp('scene') / 'scene.safetensors'
        summary = engine.save_scene(str(path))
        view = scene_view(engine)
        feed(engine, frames[-1:], first=len(frames) - 1)
        next_pose = engine.buffer.latest().pose.copy()
        return path, summary, view, next_pose
    finally:
        engine.stop()


def test_save_then_load_in_a_new_engine_gives_the_same_scene_and_answers(bundle, frames,
                                                                         saved):
    path, summary, view, next_pose = saved
    assert summary.frames == len(frames) - 1 and summary.nbytes == path.stat().st_size
    engine = make_engine(bundle)
    try:
        loaded = engine.load_scene(str(path))
        assert loaded.reused and loaded.frames == len(frames) - 1
        assert engine.status().geometry_frames == len(frames) - 1
        assert scene_view(engine) == view
        # The stream continues from the saved recurrent state: the next frame lands exactly
        # where it did in the engine that saved the scene.
        feed(engine, frames[-1:], first=len(frames) - 1)
        np.testing.assert_allclose(engine.buffer.latest().pose, next_pose, atol=1e-6)
    finally:
        engine.stop()


def test_another_model_identity_recomputes_everything_from_the_images(bundle, saved):
    path, summary, view, _ = saved
    other = dataclasses.replace(bundle, identity={**bundle.identity, 'weights.cut3r': 'other'})
    engine = make_engine(other)
    try:
        loaded = engine.load_scene(str(path))
        assert not loaded.reused and 'weights.cut3r' in loaded.message
        wait_geometry(engine, summary.frames)
        # Same weights underneath, so the recomputation reproduces the saved results.
        assert scene_view(engine)[:4] == view[:4]
    finally:
        engine.stop()


def test_bad_files_are_refused_and_leave_the_live_scene_untouched(bundle, frames, saved,
                                                                  tmp_path):
    path = saved[0]
    data = path.read_bytes()
    flipped = bytearray(data)
    flipped[-100] ^= 0xFF
    cases = {
        'missing.safetensors': None,
        'truncated.safetensors': data[:len(data) // 2],
        'flipped.safetensors': bytes(flipped),
        'text.safetensors': b'not a scene at all',
        'empty.safetensors': b'',
        # One digit of a stamp in the JSON manifest (same length: the header still parses).
        'manifest.safetensors': data.replace(b'"stamp_ns\\": 1500000000',
                                             b'"stamp_ns\\": 1500000001', 1),
    }
    assert cases['manifest.safetensors'] != data
    engine = make_engine(bundle)
    try:
        feed(engine, frames[:3])
        before = engine.buffer.snapshot(), engine.status().keyframe_count
        for name, content in cases.items():
            target = tmp_path / name
            if content is not None:
                target.write_bytes(content)
            with pytest.raises(SceneFileError) as err:
                engine.load_scene(str(target))
            assert name in str(err.value) or 'digest' in str(err.value)
            assert engine.buffer.snapshot() == before[0]
            assert engine.status().keyframe_count == before[1]
        answer = engine.ask(QueryRequest(QUESTION, keyframe_budget=4)).result(30)
        assert answer.code == ErrorCode.OK  # still serving
    finally:
        engine.stop()


def test_a_newer_format_version_is_refused(saved, tmp_path):
    import json
    data = saved[0].read_bytes()
    n = int.from_bytes(data[:8], 'little')
    header = json.loads(data[8:8 + n])
    manifest = json.loads(header['__metadata__']['vlm3r_scene'])
    manifest['version'] = 99
    header['__metadata__']['vlm3r_scene'] = json.dumps(manifest)
    raw = json.dumps(header).encode()
    raw += b' ' * (-len(raw) % 8)
    target = tmp_path / 'future.safetensors'
    target.write_bytes(len(raw).to_bytes(8, 'little') + raw + data[8 + n:])
    with pytest.raises(SceneFileError, match='version 99'):
        read_scene(target)


def test_load_waits_for_the_model_and_reset_forgets_the_place(bundle, frames, saved):
    engine = SpatialEngine(EngineConfig(geometry_rate_hz=0), lambda: bundle)
    with pytest.raises(SceneNotReady):
        engine.load_scene(str(saved[0]))  # configured model, not loaded yet
    results = []
    engine.load_models()
    engine.start()
    try:
        engine.load_scene_when_ready(str(saved[0]), done=lambda s, e: results.append((s, e)))
        deadline = time.monotonic() + 30
        while not results and time.monotonic() < deadline:
            time.sleep(0.01)
        summary, error = results[0]
        assert error is None and summary.reused
        assert engine.reset_scene() == summary.frames
        status = engine.status()
        assert status.buffer_length == 0 and status.keyframe_count == 0
        assert len(engine.graph) == 0
        answer = engine.ask(QueryRequest(QUESTION)).result(30)
        assert answer.code == ErrorCode.NO_FRAMES
        feed(engine, frames[:2])  # a new place: a fresh stream, as in a new engine
        fresh = make_engine(bundle)
        try:
            feed(fresh, frames[:2])
            for a, b in zip(engine.buffer.snapshot(), fresh.buffer.snapshot()):
                np.testing.assert_allclose(a.pose, b.pose, atol=1e-6)
        finally:
            fresh.stop()
    finally:
        engine.stop()


def test_frames_arriving_during_a_load_are_kept_after_the_restored_ones(bundle, frames, saved):
    engine = make_engine(bundle)
    try:
        before = 1_000_000_000 + 100 * PERIOD_NS  # newer than every saved frame
        engine.submit_frame(before, frames[0])  # the live scene that the load replaces
        wait_geometry(engine, 1)
        load_began = engine.buffer.next_id
        late = before + PERIOD_NS  # arrives while the file is read (as if after the call)
        engine.submit_frame(late, frames[1])
        wait_geometry(engine, 2)
        summary = engine.load_scene(str(saved[0]), keep_from_id=load_began)
        stamps = [r.stamp_ns for r in engine.buffer.snapshot()]
        assert len(stamps) == summary.frames + 1 and stamps[-1] == late
        wait_geometry(engine, summary.frames + 3)  # 2 before the load, saved ones, then it
        assert engine.buffer.latest().pose is not None
        # A frame from the saved world continues the restored sequence; an answer works.
        answer = engine.ask(QueryRequest(QUESTION, keyframe_budget=4)).result(30)
        assert answer.code == ErrorCode.OK
    finally:
        engine.stop()


def test_malformed_contents_are_refused_before_anything_is_applied(saved, tmp_path):
    """Files that are well-formed safetensors with a valid digest but bad contents."""
    from vlm3r_ros.pipeline import scene_store
    scene = read_scene(saved[0])
    bad_tokens = dataclasses.replace(scene.frames[1], tokens=scene.frames[1].tokens[:3])
    bad_dtype = dataclasses.replace(scene.frames[1], tokens_dtype='nn')
    bad_width = dataclasses.replace(scene.frames[1], tokens=scene.frames[1].tokens[:, :3])
    cases = {
        'tokens of another shape': (dict(frames=[scene.frames[0], bad_tokens]), 'shape'),
        'unknown token dtype': (dict(frames=[scene.frames[0], bad_dtype]), 'dtype'),
        'tokens of another width': (dict(frames=[scene.frames[0], bad_width]), 'shape'),
        'graph self-loop': (dict(graph={**scene.graph, 'edges': np.array([[0, 0, 0]])}), None),
    }
    for name, (change, match) in cases.items():
        target = tmp_path / f'{name.replace(" ", "_")}.safetensors'
        scene_store.write_scene(target, dataclasses.replace(scene, **change))
        if match is None:  # read fine; the graph import refuses it (rebuilt from poses)
            graph = read_scene(target).graph
            from vlm3r_ros.planning.trajectory_graph import TrajectoryGraph
            with pytest.raises(ValueError, match='self-loop'):
                TrajectoryGraph().import_state(graph)
            continue
        with pytest.raises(SceneFileError, match=match):
            read_scene(target)


@pytest.mark.parametrize('dtype', ['float32', 'float16', 'bfloat16'])
def test_tokens_round_trip_bit_for_bit_in_the_models_precision(frames, tmp_path, dtype):
    import torch
    from vlm3r_ros.pipeline import scene_memory, scene_store
    tokens = torch.randn(5, 7).to(getattr(torch, dtype))
    array, name = scene_memory._tokens_to_numpy(tokens)
    assert name == dtype and array.nbytes == tokens.numel() * tokens.element_size()
    frame = scene_store.SavedFrame(0, 1, frames[0], tokens=array, tokens_dtype=name)
    scene_store.write_scene(tmp_path / 's.safetensors', scene_store.Scene(frames=[frame]))
    back = read_scene(tmp_path / 's.safetensors').frames[0]
    restored = scene_memory._tokens_to_torch(back.tokens, back.tokens_dtype, 'cpu')
    assert restored.dtype == tokens.dtype and torch.equal(restored, tokens)
    bad = tokens.clone()
    bad[0, 0] = float('nan')
    nan_frame = dataclasses.replace(frame, tokens=scene_memory._tokens_to_numpy(bad)[0])
    scene_store.write_scene(tmp_path / 'nan.safetensors', scene_store.Scene(frames=[nan_frame]))
    with pytest.raises(SceneFileError, match='non-finite'):
        read_scene(tmp_path / 'nan.safetensors')
