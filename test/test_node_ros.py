"""The node on a real ROS graph: frames over DDS, status, diagnostics, lifecycle, errors."""
import math
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import State
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage

from ros_support import (Collector, call, client_node, publish_frames, running_node,
                         synthetic_frame, wait_for)
from vlm3r_ros.ingest.image_codec import encode_compressed
from vlm3r_ros.msg import SceneStatus
from vlm3r_ros.node.ros_convert import ns_to_stamp
from vlm3r_ros.pipeline.errors import ErrorCode
from vlm3r_ros.srv import PlanRoute, SpatialQuery

pytestmark = pytest.mark.ros


def test_error_codes_match_the_service_constants():
    for code in ErrorCode:
        assert getattr(SpatialQuery.Response, code.name) == code.value
        assert getattr(PlanRoute.Response, code.name) == code.value


def test_raw_frames_flow_and_status_reports_them():
    with running_node(model_profile='none') as (node, ns), client_node() as client:
        statuses = Collector(client, SceneStatus, f'{ns}/vlm3r_node/status')
        first = statuses.wait()
        assert first.stream_state == SceneStatus.STREAM_WAITING
        assert first.model_state == SceneStatus.MODEL_NOT_CONFIGURED
        publish_frames(client, f'{ns}/camera/image_raw', 12)
        status = statuses.wait(lambda m: m.frames_received >= 12)
        assert status.buffer_length == 12
        assert status.stream_state == SceneStatus.STREAM_OK
        assert status.buffer_span_s == pytest.approx(1.1, abs=1e-3)
        assert 'best_effort' in status.input_topic and ns in status.input_topic
        # Buffered frames are the published ones, in time order.
        frames = node.engine.buffer.snapshot()
        np.testing.assert_array_equal(frames[3].image, synthetic_frame(3))


def test_compressed_frames_flow():
    with running_node(model_profile='none', image_transport='compressed') as (node, ns), \
            client_node() as client:
        topic = f'{ns}/camera/image_raw/compressed'
        pub = client.create_publisher(CompressedImage, topic, qos_profile_sensor_data)
        assert wait_for(lambda: pub.get_subscription_count() > 0, 5)
        for i in range(5):
            msg = CompressedImage(format='jpeg', data=encode_compressed(synthetic_frame(i)))
            msg.header.stamp = ns_to_stamp(2_000_000_000 + i * 50_000_000)
            pub.publish(msg)
            time.sleep(0.02)
        bad = CompressedImage(format='jpeg', data=b'\xff\xd8\xff\xe0garbage')
        bad.header.stamp = ns_to_stamp(3_000_000_000)
        pub.publish(bad)
        statuses = Collector(client, SceneStatus, f'{ns}/vlm3r_node/status')
        status = statuses.wait(lambda m: m.frames_received >= 5 and m.frames_rejected >= 1)
        assert status.buffer_length == 5
        assert node.engine.buffer.latest().image.shape == (48, 64, 3)


def test_question_without_model_says_model_not_ready():
    with running_node(model_profile='none') as (_node, ns), client_node() as client:
        req = SpatialQuery.Request(question='How many chairs are in this room?')
        res = call(client, SpatialQuery, f'{ns}/vlm3r_node/spatial_query', req)
        assert not res.success and res.error_code == SpatialQuery.Response.MODEL_NOT_READY
        assert 'no model configured' in res.message
        assert res.answer == '' and math.isnan(res.value) and res.option_index == -1
        res = call(client, PlanRoute, f'{ns}/vlm3r_node/plan_route',
                   PlanRoute.Request(goal='the fridge'))
        assert res.error_code == PlanRoute.Response.MODEL_NOT_READY


@pytest.mark.parametrize('fields,match', [
    (dict(question=''), 'question is empty'),
    (dict(question='x' * 100_001), 'characters; the limit'),
    (dict(question='how\x07 many'), 'control character'),
    (dict(question='q', options=['a'] * 27), 'at most 26'),
    (dict(question='q', answer_type='colour'), 'answer_type'),
    (dict(question='q', answer_type='option'), 'needs at least one option'),
    (dict(question='q', keyframe_budget=65), 'keyframe_budget'),
])
def test_invalid_requests_get_invalid_request(fields, match):
    with running_node(model_profile='none') as (_node, ns), client_node() as client:
        res = call(client, SpatialQuery, f'{ns}/vlm3r_node/spatial_query',
                   SpatialQuery.Request(**fields))
        assert res.error_code == SpatialQuery.Response.INVALID_REQUEST
        assert match in res.message


def test_diagnostics_warn_naming_topic_when_no_frames():
    with running_node(model_profile='none', stale_timeout_s=0.3) as (_node, ns), \
            client_node() as client:
        diags = Collector(client, DiagnosticArray, '/diagnostics')

        def camera_warn(msg):
            return any(s.name.endswith('camera input') and ns in s.name
                       and s.level == DiagnosticStatus.WARN for s in msg.status)

        msg = diags.wait(camera_warn)
        status = next(s for s in msg.status if s.name.endswith('camera input'))
        assert f'{ns}/camera/image_raw' in status.message and 'best_effort' in status.message
        publish_frames(client, f'{ns}/camera/image_raw', 3)
        statuses = Collector(client, SceneStatus, f'{ns}/vlm3r_node/status')
        statuses.wait(lambda m: m.stream_state == SceneStatus.STREAM_STALE
                      and m.frames_received == 3, timeout=5)


def test_lifecycle_deactivate_and_reactivate():
    with running_node(model_profile='none') as (node, ns), client_node() as client:
        assert node._state_machine.current_state[1] == 'active'
        publish_frames(client, f'{ns}/camera/image_raw', 4)
        assert wait_for(lambda: len(node.engine.buffer) == 4)
        node.trigger_deactivate()
        assert node._state_machine.current_state[0] == State.PRIMARY_STATE_INACTIVE
        publish_frames(client, f'{ns}/camera/image_raw', 3, start_ns=9_000_000_000,
                       pause_s=0.0, expect_subscriber=False)
        time.sleep(0.3)
        assert len(node.engine.buffer) == 4  # not subscribed while inactive
        node.trigger_activate()
        res = call(client, SpatialQuery, f'{ns}/vlm3r_node/spatial_query',
                   SpatialQuery.Request(question='q'))
        assert res.error_code == SpatialQuery.Response.MODEL_NOT_READY
        node.trigger_deactivate()
        node.trigger_cleanup()
        assert node.engine is None
        assert node._state_machine.current_state[0] == State.PRIMARY_STATE_UNCONFIGURED


def test_tf_pose_source_without_tf2_is_reported():
    pytest.importorskip('rclpy')
    try:
        import tf2_ros  # noqa: F401
        pytest.skip('tf2_ros is installed: the wheel-only failure path does not apply')
    except ImportError:
        pass
    with running_node(model_profile='none', tf_camera_frame='camera_optical_frame') as \
            (_node, ns), client_node() as client:
        statuses = Collector(client, SceneStatus, f'{ns}/vlm3r_node/status')
        status = statuses.wait(lambda m: 'tf2_ros is not installed' in m.last_error)
        assert 'pose_topic' in status.last_error


def test_transform_to_matrix():
    from geometry_msgs.msg import TransformStamped
    from vlm3r_ros.node.ros_convert import transform_to_matrix
    t = TransformStamped()
    t.transform.translation.x, t.transform.translation.z = 1.0, 2.0
    t.transform.rotation.z, t.transform.rotation.w = math.sin(math.pi / 4), math.cos(math.pi / 4)
    m = transform_to_matrix(t)
    np.testing.assert_allclose(m[:3, 3], [1, 0, 2])
    np.testing.assert_allclose(m[:3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-12)
