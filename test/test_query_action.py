"""The question action on a real ROS graph: streamed feedback, result, cancel, queue slot."""
import re
import subprocess
import sys
import threading
import time

import pytest
from action_msgs.msg import GoalStatus

from ros_support import (ActionClient, Collector, call, client_node, publish_frames,
                         running_node, wait_for)
from vlm3r_ros.action import SpatialQuery as SpatialQueryAction
from vlm3r_ros.msg import SceneStatus
from vlm3r_ros.node.query_action import FEEDBACK_QOS
from vlm3r_ros.node.services import SERVICE_QOS
from vlm3r_ros.pipeline.errors import ErrorCode
from vlm3r_ros.srv import SpatialQuery

pytestmark = pytest.mark.ros
TINY = dict(model_profile='tiny', geometry_rate_hz=100.0)
QUESTION = 'How many chairs are in this room?'


class Goal:
    """One goal sent over DDS with every feedback message kept (with its arrival time)."""

    def __init__(self, action: ActionClient, goal: SpatialQueryAction.Goal) -> None:
        self.feedback: list[tuple[float, SpatialQueryAction.Feedback]] = []
        self.done = threading.Event()
        future = action.send_goal_async(goal, feedback_callback=lambda f: self.feedback.append(
            (time.monotonic(), f.feedback)))
        accepted = threading.Event()
        future.add_done_callback(lambda _f: accepted.set())
        assert accepted.wait(10), 'goal not accepted'
        self.handle = future.result()
        assert self.handle.accepted
        self.result_future = self.handle.get_result_async()
        self.result_future.add_done_callback(lambda _f: self.done.set())

    def result(self, timeout: float = 60.0):
        assert self.done.wait(timeout), 'no result'
        return self.result_future.result()

    def text(self) -> str:
        return ''.join(f.text for _t, f in self.feedback)

    def tokens(self) -> int:
        return max((f.tokens for _t, f in self.feedback), default=0)


def action_client(client, ns):
    action = ActionClient(client, SpatialQueryAction, f'{ns}/vlm3r_node/spatial_query_action',
                          goal_service_qos_profile=SERVICE_QOS,
                          result_service_qos_profile=SERVICE_QOS,
                          cancel_service_qos_profile=SERVICE_QOS,
                          feedback_sub_qos_profile=FEEDBACK_QOS)
    assert action.wait_for_server(timeout_sec=10)
    return action


def ready(client, ns, frames=8):
    publish_frames(client, f'{ns}/camera/image_raw', frames, pause_s=0.05)
    Collector(client, SceneStatus, f'{ns}/vlm3r_node/status').wait(
        lambda m: m.model_state == SceneStatus.MODEL_READY and m.keyframe_count > 0
        and m.frames_received >= frames, timeout=60)


def test_streamed_feedback_concatenates_to_the_answer_and_matches_the_service():
    with running_node(max_new_tokens=24, **TINY) as (_node, ns), client_node() as client:
        ready(client, ns)
        action = action_client(client, ns)
        goal = Goal(action, SpatialQueryAction.Goal(question=QUESTION))
        wrapped = goal.result()
        result = wrapped.result
        assert wrapped.status == GoalStatus.STATUS_SUCCEEDED
        assert result.success and result.error_code == ErrorCode.OK, result.message
        # Feedback (a topic) and the result (a service) are separate DDS channels: the last
        # feedback message may land just after the result, so give it a moment.
        wait_for(lambda: goal.text() == result.answer, 5.0)
        assert goal.text() == result.answer and result.answer
        stages = [f.stage for _t, f in goal.feedback]
        firsts = [s for i, s in enumerate(stages) if s not in stages[:i]]
        assert firsts == ['queued', 'selecting_keyframes', 'prefill', 'decoding']
        counts = [f.tokens for _t, f in goal.feedback if f.stage == 'decoding' and f.text]
        assert counts == sorted(counts) and len(counts) >= 1
        # The result is the service's response for the same request.
        res = call(client, SpatialQuery, f'{ns}/vlm3r_node/spatial_query',
                   SpatialQuery.Request(question=QUESTION))
        assert res.success and res.answer == result.answer
        assert list(res.keyframe_stamps) == list(result.keyframe_stamps)
        assert res.coverage == pytest.approx(result.coverage)
        # Options (constrained decoding) arrive as one piece; invalid goals are aborted.
        options = ['the sofa', 'the tv']
        opt = Goal(action, SpatialQueryAction.Goal(question='Which is closer?', options=options))
        opt_result = opt.result().result
        wait_for(lambda: opt.text() == opt_result.answer, 5.0)
        assert opt_result.success and opt.text() == opt_result.answer
        assert opt_result.option_index in (0, 1)
        # vlm3r-ask --stream prints the same answer (from another process).
        cli = subprocess.run(
            [sys.executable, '-m', 'vlm3r_ros.tools.ask', QUESTION, '--stream',
             '--node', f'{ns}/vlm3r_node', '--timeout', '30'],
            capture_output=True, text=True, timeout=90)
        assert cli.returncode == 0, cli.stdout + cli.stderr
        assert cli.stdout.startswith(result.answer), cli.stdout
        assert 'keyframes, coverage' in cli.stdout
        bad = Goal(action, SpatialQueryAction.Goal(question=''))
        wrapped = bad.result()
        assert wrapped.status == GoalStatus.STATUS_ABORTED
        assert wrapped.result.error_code == ErrorCode.INVALID_REQUEST


def test_cancel_stops_decoding_within_one_token_and_frees_the_queue_slot():
    with running_node(max_new_tokens=512, request_queue_size=1, tiny_weights_path='random',
                      **TINY) as (node, ns), \
            client_node() as client:
        ready(client, ns)
        action = action_client(client, ns)
        running = Goal(action, SpatialQueryAction.Goal(question=QUESTION))
        start = time.monotonic()
        while running.tokens() < 8 and not running.done.is_set():
            time.sleep(0.005)
        assert not running.done.is_set(), 'the answer ended before it could be canceled'
        decode_step_s = (time.monotonic() - start) / max(running.tokens(), 1)
        # One more request waits in the (single) queue slot; canceling it frees the slot.
        queued = Goal(action, SpatialQueryAction.Goal(question='How big is the room?'))
        time.sleep(0.2)
        assert node.engine.status().queued_requests == 1
        cancel = queued.handle.cancel_goal_async()
        queued_result = queued.result(10)
        assert queued_result.status == GoalStatus.STATUS_CANCELED
        assert queued_result.result.error_code == ErrorCode.CANCELED
        assert cancel.done() and node.engine.status().queued_requests == 0
        # The running answer stops at its next token step.
        tokens_at_cancel = running.tokens()
        canceled_at = time.monotonic()
        running.handle.cancel_goal_async()
        wrapped = running.result(10)
        latency = time.monotonic() - canceled_at
        result = wrapped.result
        assert wrapped.status == GoalStatus.STATUS_CANCELED
        assert result.error_code == ErrorCode.CANCELED and not result.success
        after = int(re.search(r'\((\d+) decoded after the cancel request\)',
                              result.message).group(1))
        total = int(re.search(r'after (\d+) answer tokens', result.message).group(1))
        assert after <= 1, result.message  # the token step in progress, no more
        assert total < 512 and total >= tokens_at_cancel
        assert goal_text_is_prefix(running.text(), result.answer)
        print(f'decode step {decode_step_s * 1000:.1f} ms, cancel->result {latency * 1000:.0f} '
              f'ms, {total - tokens_at_cancel} tokens between the client cancel and the stop')
        assert latency < 2.0
        # The worker is free again: a new question is answered at once.
        res = call(client, SpatialQuery, f'{ns}/vlm3r_node/spatial_query',
                   SpatialQuery.Request(question=QUESTION), timeout=60)
        assert res.error_code in (ErrorCode.OK,), res.message


def goal_text_is_prefix(streamed: str, answer: str) -> bool:
    """Streamed pieces (some may still be in flight) form a prefix of the partial answer."""
    return answer.startswith(streamed.strip()) or streamed.startswith(answer)
