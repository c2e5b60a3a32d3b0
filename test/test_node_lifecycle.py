"""Lifecycle transitions over DDS while clients are waiting: every call gets a response.

The node runs in this process with the tiny model; clients call its services and action
over Fast DDS and an operator-like client drives ``~/change_state``. A deactivate must
answer every call in flight or queued (SHUTTING_DOWN) before the services go away, and
the node must keep running (it used to die in the executor with ``InvalidHandle``).
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState

from ros_support import (ActionClient, Collector, call, client_node, publish_frames,
                         running_node, wait_for)
from vlm3r_ros.action import PlanRoute as PlanRouteAction
from vlm3r_ros.msg import SceneStatus
from vlm3r_ros.pipeline.errors import ErrorCode
from vlm3r_ros.srv import SpatialQuery

pytestmark = pytest.mark.ros
SHUTTING_DOWN = SpatialQuery.Response.SHUTTING_DOWN
CALL_TIMEOUT_S = 20.0  # a call without a response by then counts as lost
LOST = -1
# Open questions decoded to the full length: each answer keeps the worker busy a while,
# so calls are waiting in the engine queue when the transition comes.
SLOW = dict(model_profile='tiny', geometry_rate_hz=100.0, max_new_tokens=64,
            request_queue_size=4, tiny_weights_path='random')  # the random LMM never stops early


class Caller(threading.Thread):
    """Call ``~/spatial_query`` again and again; record each error code (LOST: none)."""

    def __init__(self, client: Any, service: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.cli = client.create_client(SpatialQuery, service)
        self.stop = stop
        self.codes: list[int] = []

    def run(self) -> None:
        while not self.stop.is_set():
            done = threading.Event()
            future = self.cli.call_async(SpatialQuery.Request(question='Describe the room.',
                                                              answer_type='text'))
            future.add_done_callback(lambda _f: done.set())
            if not done.wait(CALL_TIMEOUT_S):
                self.codes.append(LOST)
                return
            code = int(future.result().error_code)
            self.codes.append(code)
            if code == SHUTTING_DOWN:
                return  # the service is going away
            if code == ErrorCode.BUSY:
                time.sleep(0.02)


def change_state(client: Any, ns: str, transition: int) -> bool:
    """Request a lifecycle transition over DDS; return whether it succeeded."""
    return call(client, ChangeState, f'{ns}/vlm3r_node/change_state',
                ChangeState.Request(transition=Transition(id=transition))).success


def test_deactivate_with_calls_in_flight_answers_every_call_and_node_lives():
    with running_node(**SLOW) as (_node, ns), client_node() as client:
        publish_frames(client, f'{ns}/camera/image_raw', 6, pause_s=0.05)
        statuses = Collector(client, SceneStatus, f'{ns}/vlm3r_node/status')
        statuses.wait(lambda m: m.model_state == SceneStatus.MODEL_READY
                      and m.keyframe_count > 0, timeout=60)
        stop = threading.Event()
        callers = [Caller(client, f'{ns}/vlm3r_node/spatial_query', stop) for _ in range(8)]
        assert all(c.cli.wait_for_service(timeout_sec=10) for c in callers)
        action = ActionClient(client, PlanRouteAction, f'{ns}/vlm3r_node/plan_route_action')
        assert action.wait_for_server(timeout_sec=10)
        for caller in callers:
            caller.start()
        # The engine queue is full and calls wait on it when the operator deactivates.
        assert wait_for(lambda: any(m.queued_requests >= 2 for m in list(statuses.messages)),
                        20), 'no call was ever waiting in the queue'
        goal = action.send_goal_async(PlanRouteAction.Goal(goal='the fridge'))
        assert wait_for(goal.done, 10) and goal.result().accepted
        result = goal.result().get_result_async()
        assert change_state(client, ns, Transition.TRANSITION_DEACTIVATE)
        stop.set()
        for caller in callers:
            caller.join(CALL_TIMEOUT_S + 5)
        assert wait_for(result.done, CALL_TIMEOUT_S), 'the route goal got no result'
        codes = Counter(code for c in callers for code in c.codes)
        assert codes[LOST] == 0, f'{codes[LOST]} calls got no response: {codes}'
        assert set(codes) <= {ErrorCode.OK, ErrorCode.BUSY, SHUTTING_DOWN}, codes
        assert codes[SHUTTING_DOWN] >= 1, codes  # some were waiting
        route = result.result().result
        assert route.error_code != ErrorCode.INTERNAL_ERROR, route.message
        # The node still runs: it answers its lifecycle services and comes back.
        state = call(client, GetState, f'{ns}/vlm3r_node/get_state', GetState.Request())
        assert state.current_state.id == State.PRIMARY_STATE_INACTIVE
        assert change_state(client, ns, Transition.TRANSITION_ACTIVATE)
        again = call(client, SpatialQuery, f'{ns}/vlm3r_node/spatial_query',
                     SpatialQuery.Request(question='How many chairs?'))
        assert again.error_code in (ErrorCode.OK, ErrorCode.MODEL_NOT_READY), again.message
