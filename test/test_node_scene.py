"""Scene memory on the real graph: save -> restart the node -> load gives the same
keyframes and the same answer; bad files are refused; reset; autosave at shutdown."""
import subprocess
import sys
import time

import pytest

from ros_support import call, client_node, running_node, stream_into_node, wait_for
from std_srvs.srv import Trigger
from vlm3r_ros.eval.render import intrinsics, render
from vlm3r_ros.eval.scenes import make_scene, make_trajectory
from vlm3r_ros.msg import SceneStatus
from vlm3r_ros.pipeline.errors import ErrorCode
from vlm3r_ros.pipeline.scene_store import read_scene
from vlm3r_ros.srv import LoadScene, SaveScene, SpatialQuery

pytestmark = pytest.mark.ros
QUESTION = SpatialQuery.Request(question='How many chairs are in this room?',
                                keyframe_budget=6)
NODE = dict(model_profile='tiny', geometry_rate_hz=100.0, qos_reliability='reliable',
            qos_depth=100, publish_cloud=True)


@pytest.fixture(scope='module')
def frames():
    scene = make_scene(11)
    traj = make_trajectory(scene, seconds=8, rate_hz=2, seed=11)
    K = intrinsics(96, 72)
    return [(1_000_000_000 + i * 500_000_000, render(scene, pose, K, 96, 72)[0])
            for i, pose in enumerate(traj.poses)]


def srv(ns, name):
    return f'{ns}/vlm3r_node/{name}'


def ask(client, ns):
    res = call(client, SpatialQuery, srv(ns, 'spatial_query'), QUESTION, timeout=60)
    return res.error_code, res.answer, [(s.sec, s.nanosec) for s in res.keyframe_stamps]


def last_status(client, ns):
    statuses = []
    sub = client.create_subscription(SceneStatus, srv(ns, 'status'), statuses.append, 10)
    assert wait_for(lambda: bool(statuses), 10.0)
    client.destroy_subscription(sub)
    return statuses[-1]


def test_save_restart_load_gives_the_same_keyframes_and_answer(frames, tmp_path):
    path = str(tmp_path / 'room.safetensors')
    with running_node(**NODE) as (_node, ns), client_node() as client:
        statuses = stream_into_node(client, ns, frames)
        statuses.wait(lambda m: m.frames_received >= len(frames) and m.buffer_length
                      == len(frames), timeout=60)
        time.sleep(1.0)  # the geometry worker finishes the last frames
        before = ask(client, ns)
        assert before[0] == ErrorCode.OK and len(before[2]) >= 2
        saved = call(client, SaveScene, srv(ns, 'save_scene'), SaveScene.Request(path=path))
        assert saved.success, saved.message
        assert saved.frames == len(frames) and saved.size_bytes > 0 and saved.path == path
    # A new node (the restart) loads the file at activate (scene_path) ...
    with running_node(scene_path=path, **NODE) as (_node, ns), client_node() as client:
        statuses = stream_into_node(client, ns, [])
        statuses.wait(lambda m: m.buffer_length == len(frames) and m.keyframe_count > 0,
                      timeout=60)
        assert ask(client, ns) == before
        # ... and the service loads it again: results reused under the same model.
        loaded = call(client, LoadScene, srv(ns, 'load_scene'), LoadScene.Request(path=path))
        assert loaded.success and loaded.reused and loaded.frames == len(frames), loaded.message
        assert ask(client, ns) == before
        # Bad files: a clear error, the live scene untouched, the node keeps serving.
        (tmp_path / 'cut.safetensors').write_bytes(open(path, 'rb').read()[:5000])
        for bad, code in (('cut.safetensors', ErrorCode.INVALID_REQUEST),
                          ('absent.safetensors', ErrorCode.INVALID_REQUEST),
                          ('notes.txt', ErrorCode.INVALID_REQUEST)):
            res = call(client, LoadScene, srv(ns, 'load_scene'),
                       LoadScene.Request(path=str(tmp_path / bad)))
            assert not res.success and res.error_code == code and res.message
        assert ask(client, ns) == before
        # A robot entering a new place forgets the old one.
        reset = call(client, Trigger, srv(ns, 'reset_scene'), Trigger.Request())
        assert reset.success and str(len(frames)) in reset.message
        assert ask(client, ns)[0] == ErrorCode.NO_FRAMES
        assert wait_for(lambda: last_status(client, ns).buffer_length == 0, 5.0)


def test_autosave_at_shutdown_writes_a_loadable_scene(frames, tmp_path):
    path = tmp_path / 'auto' / 'scene.safetensors'
    with running_node(scene_path=str(path), scene_autosave=True, **NODE) as (_node, ns), \
            client_node() as client:
        statuses = stream_into_node(client, ns, frames[:6])
        statuses.wait(lambda m: m.buffer_length == 6 and m.keyframe_count > 0, timeout=60)
        time.sleep(0.5)
        no_path = call(client, SaveScene, srv(ns, 'save_scene'), SaveScene.Request())
        assert no_path.success and no_path.path == str(path)  # scene_path is the default
        path.unlink()
        # The operator CLI, as a separate process on the same graph.
        cli = tmp_path / 'cli.safetensors'
        out = subprocess.run([sys.executable, '-m', 'vlm3r_ros.tools.scene', 'save', str(cli),
                              '--node', f'{ns}/vlm3r_node', '--timeout', '30'],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and 'saved 6 frames' in out.stdout, out.stdout + out.stderr
        assert len(read_scene(cli).frames) == 6
    scene = read_scene(path)  # written again by the shutdown
    assert len(scene.frames) == 6 and scene.model['profile'] == 'tiny'
    assert all(f.pose is not None and f.tokens is not None for f in scene.frames)
    assert scene.stream and scene.graph['node_ids'].size > 0 and scene.cloud


def test_autosave_never_replaces_a_scene_file_it_could_not_load(frames, tmp_path):
    path = tmp_path / 'precious.safetensors'
    path.write_bytes(b'written by a newer node, say')  # unreadable here
    with running_node(scene_path=str(path), scene_autosave=True, **NODE) as (_node, ns), \
            client_node() as client:
        statuses = stream_into_node(client, ns, frames[:3])
        statuses.wait(lambda m: m.buffer_length == 3, timeout=60)
    assert path.read_bytes() == b'written by a newer node, say'
