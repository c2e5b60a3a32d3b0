"""One-shot service calls for the operator CLIs (no `ros2` command needed)."""
from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any, Callable

import rclpy
from rclpy.node import Node

from vlm3r_ros.node.services import SERVICE_QOS
from vlm3r_ros.pipeline.errors import ErrorCode

EXIT_OK, EXIT_ERROR, EXIT_UNAVAILABLE = 0, 1, 2


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Add --node, --timeout and --json to a CLI parser."""
    parser.add_argument('--node', default='/vlm3r_node',
                        help='fully qualified node name (default: /vlm3r_node)')
    parser.add_argument('--timeout', type=float, default=60.0,
                        help='seconds to wait for the service and its answer (default: 60)')
    parser.add_argument('--json', action='store_true', help='print the response as JSON')


def call_once(srv_type: Any, service: str, request: Any, timeout: float) -> Any | None:
    """Call ``service`` once and return the response, or None when it is unavailable.

    Raises TimeoutError when the service exists but does not answer in time.
    """
    rclpy.init(args=[])  # our argv is argparse's, not rcl's
    node: Node = rclpy.create_node('vlm3r_cli')
    try:
        # Deep response history, as the node's services: see SERVICE_QOS.
        client = node.create_client(srv_type, service, qos_profile=SERVICE_QOS)
        if not client.wait_for_service(timeout_sec=min(timeout, 10.0)):
            return None
        future = client.call_async(request)
        rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
        if not future.done():
            raise TimeoutError(f'no answer from {service} within {timeout:g} s')
        return future.result()
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def run_action_once(action_type: Any, name: str, goal: Any, timeout: float,
                    on_feedback: Callable[[Any], None]) -> Any | None:
    """Send one action goal, pass each feedback message on, return the result message.

    Returns None when the action server is unavailable; raises TimeoutError when the goal
    gets no result in time (the goal is then canceled).
    """
    from rclpy.action import ActionClient

    from vlm3r_ros.node.query_action import FEEDBACK_QOS
    rclpy.init(args=[])
    node: Node = rclpy.create_node('vlm3r_cli')
    try:
        client = ActionClient(node, action_type, name, goal_service_qos_profile=SERVICE_QOS,
                              result_service_qos_profile=SERVICE_QOS,
                              cancel_service_qos_profile=SERVICE_QOS,
                              feedback_sub_qos_profile=FEEDBACK_QOS)
        if not client.wait_for_server(timeout_sec=min(timeout, 10.0)):
            return None
        deadline = time.monotonic() + timeout
        sent = client.send_goal_async(goal, feedback_callback=lambda m: on_feedback(m.feedback))
        rclpy.spin_until_future_complete(node, sent, timeout_sec=timeout)
        if not sent.done():
            raise TimeoutError(f'{name} did not accept the goal within {timeout:g} s')
        handle = sent.result()
        if not handle.accepted:
            raise TimeoutError(f'{name} rejected the goal')
        result = handle.get_result_async()
        try:
            rclpy.spin_until_future_complete(node, result,
                                             timeout_sec=max(deadline - time.monotonic(), 0.0))
        except KeyboardInterrupt:  # Ctrl-C: cancel the goal, show what it had produced
            handle.cancel_goal_async()
            rclpy.spin_until_future_complete(node, result, timeout_sec=2.0)
            if not result.done():
                raise
        if not result.done():
            handle.cancel_goal_async()
            raise TimeoutError(f'no result from {name} within {timeout:g} s')
        return result.result().result
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def to_jsonable(value: Any) -> Any:
    """Return a ROS message (or field) as plain JSON-compatible data (NaN -> null)."""
    if hasattr(value, 'get_fields_and_field_types'):
        return {name: to_jsonable(getattr(value, name))
                for name in value.get_fields_and_field_types()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == 'array':
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def report(response: Any, as_json: bool, text: str) -> int:
    """Print the response (JSON or ``text``/the error) and return the exit code."""
    code = ErrorCode(response.error_code)
    if as_json:
        data = to_jsonable(response)
        data['error_name'] = code.name
        print(json.dumps(data, indent=2))
    elif response.success:
        print(text)
    else:
        print(f'error {code.name} ({int(code)}): {response.message}')
    return EXIT_OK if response.success else EXIT_ERROR


def unavailable(service: str) -> int:
    """Print why nothing answered and return the exit code for it."""
    print(f'error: service {service} is not available (is vlm3r_node running and active, '
          'in this ROS_DOMAIN_ID?)')
    return EXIT_UNAVAILABLE
