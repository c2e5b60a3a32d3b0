"""Run-time parameter changes through the real ``~/set_parameters`` service.

Every value is validated when it is set; budgets, decoding and limits apply at once; a
parameter read at configure is refused while the node is configured, with a reason that
says how to make it take effect, and accepted (and used) after cleanup.
"""
from __future__ import annotations

import pytest
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.parameter import Parameter

from ros_support import call, client_node, publish_frames, running_node, wait_for
from vlm3r_ros.srv import SpatialQuery

pytestmark = pytest.mark.ros
Q = SpatialQuery.Response


def set_param(client, ns: str, name: str, value) -> tuple[bool, str]:
    """Set one parameter of the node over its service; return (successful, reason)."""
    msg: ParameterMsg = Parameter(name, value=value).to_parameter_msg()
    res = call(client, SetParameters, f'{ns}/vlm3r_node/set_parameters',
               SetParameters.Request(parameters=[msg]))
    return res.results[0].successful, res.results[0].reason


def get_param(client, ns: str, name: str):
    """Return the node's value of one parameter, read over its service."""
    res = call(client, GetParameters, f'{ns}/vlm3r_node/get_parameters',
               GetParameters.Request(names=[name]))
    return Parameter.from_parameter_msg(ParameterMsg(name=name, value=res.values[0])).value


def test_live_changes_apply_and_bad_or_configure_time_ones_are_refused():
    with running_node(model_profile='none') as (node, ns), client_node() as client:
        ask = lambda q: call(client, SpatialQuery, f'{ns}/vlm3r_node/spatial_query',  # noqa: E731
                             SpatialQuery.Request(question=q))
        assert ask('x' * 30).error_code == Q.MODEL_NOT_READY  # 30 chars are allowed
        # Live: the next request already uses the new limit.
        assert set_param(client, ns, 'max_question_chars', 20) == (True, '')
        res = ask('x' * 30)
        assert res.error_code == Q.INVALID_REQUEST and 'the limit is 20' in res.message
        for name, value in (('keyframe_budget', 4), ('option_decoding', 'generate'),
                            ('coverage_ratio', 0.5), ('max_new_tokens', 3),
                            ('geometry_rate_hz', 2.0), ('stamp_reset_threshold_s', 5.0)):
            assert set_param(client, ns, name, value) == (True, ''), name
        cfg = node.engine.config
        assert (cfg.keyframe_budget, cfg.option_decoding, cfg.coverage_ratio,
                cfg.max_new_tokens, cfg.geometry_rate_hz) == (4, 'generate', 0.5, 3, 2.0)
        assert node.engine.buffer._reset_ns == 5_000_000_000
        assert node.config.keyframe_budget == 4

        # Invalid values are refused at set time and leave the value as it was.
        for name, value, why in (
                ('qos_reliability', 'bogus', 'not one of best_effort, reliable'),
                ('option_decoding', 'sampling', 'not one of constrained, generate'),
                ('up_axis', '1,2', "up_axis must be 'auto' or 'x,y,z'"),
                ('image_topic', ' ', 'must not be empty'),
                ('keyframe_budget', 100, '')):  # outside its range (rclpy's own check)
            ok, reason = set_param(client, ns, name, value)
            assert not ok and why in reason, (name, reason)
        assert get_param(client, ns, 'option_decoding') == 'generate'
        assert get_param(client, ns, 'keyframe_budget') == 4

        # Read at configure: refused while configured, with when it takes effect.
        new_topic = f'{ns}/other/image_raw'
        ok, reason = set_param(client, ns, 'image_topic', new_topic)
        assert not ok and 'read at configure' in reason and 'takes effect' in reason
        ok, reason = set_param(client, ns, 'model_profile', 'tiny')
        assert not ok and 'read-only' in reason
        assert get_param(client, ns, 'image_topic') == f'{ns}/camera/image_raw'

        # After deactivate + cleanup it is accepted, and configure uses it.
        node.trigger_deactivate()
        node.trigger_cleanup()
        assert set_param(client, ns, 'image_topic', new_topic) == (True, '')
        node.trigger_configure()
        node.trigger_activate()
        assert node.config.image_topic == new_topic
        assert node.engine.config.keyframe_budget == 4  # the live change survived
        # Sensor-data QoS is best effort: on a loaded machine a sample can drop, so publish
        # again (later stamps) until three arrived on the new topic.
        for attempt in range(3):
            publish_frames(client, new_topic, 3, start_ns=(1 + 10 * attempt) * 1_000_000_000)
            if wait_for(lambda: len(node.engine.buffer) >= 3, 5):
                break
        assert len(node.engine.buffer) >= 3
