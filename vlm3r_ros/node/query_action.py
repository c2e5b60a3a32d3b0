"""The ``~/spatial_query_action`` action: a question with streamed stages, text and cancel.

Same request and result as the ``~/spatial_query`` service. While the goal runs, feedback
says the stage ('queued', 'selecting_keyframes', 'prefill', 'decoding') and carries the
answer text piece by piece as the model decodes it (the pieces of one goal concatenate to
the result's ``answer``). A cancel reaches the answer worker through
:meth:`SpatialEngine.cancel`: a queued goal leaves the queue at once (its slot is free for
the next request), a running one stops decoding after the token step in progress; the
result then has error_code CANCELED and the text generated until then.

Every ROS call happens in the execute callback's thread: the answer worker only puts
stages and text pieces on a queue that this thread publishes from.
"""
from __future__ import annotations

import queue
import time
from typing import Any

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from vlm3r_ros.action import SpatialQuery as SpatialQueryAction
from vlm3r_ros.node.ros_convert import query_from_msg
from vlm3r_ros.pipeline.call_gate import CallGate
from vlm3r_ros.pipeline.errors import ErrorCode, RequestError
from vlm3r_ros.pipeline.requests import QueryResult

# Feedback is one message per answer token: a deep reliable history so a client that
# reads a little late still gets every piece (the client should subscribe as deep).
FEEDBACK_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000,
                          reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.VOLATILE)
# How often the execute loop looks at cancel requests and the gate while nothing arrives.
POLL_S = 0.01
# A canceled goal whose worker does not stop this soon (a hung model) is answered anyway.
CANCEL_GRACE_S = 5.0
# rclpy's ActionClient forgets a goal's feedback callback once its result arrives, and the
# feedback topic and the result service are separate DDS channels: a last piece published
# just before the result can land after it and be dropped. Holding the result this long after
# the last text piece lets it arrive first (measured: a lost tail once in ~650 CI runs without).
FEEDBACK_SETTLE_S = 0.2
SHUTTING_DOWN_MESSAGE = 'the node is deactivating or shutting down; retry when it is active'


class QueryActionServer:
    """The question action of one activation (created and retired by RequestServer)."""

    def __init__(self, node: Any, gate: CallGate, callback_group: Any, service_qos: Any,
                 fill_result: Any) -> None:
        """Offer ``~/spatial_query_action`` on ``node``; ``fill_result(result, out)`` fills
        a SpatialQuery response or action result from a QueryResult."""
        self._node = node
        self._gate = gate
        self._fill = fill_result
        self.server = ActionServer(
            node, SpatialQueryAction, '~/spatial_query_action',
            execute_callback=self._execute, goal_callback=lambda _goal: GoalResponse.ACCEPT,
            cancel_callback=lambda _handle: CancelResponse.ACCEPT,
            goal_service_qos_profile=service_qos, result_service_qos_profile=service_qos,
            cancel_service_qos_profile=service_qos, feedback_pub_qos_profile=FEEDBACK_QOS,
            callback_group=callback_group)

    def _execute(self, goal_handle: Any) -> SpatialQueryAction.Result:
        started = time.monotonic()
        self._gate.enter()
        try:
            result = self._run(goal_handle)
        except Exception as exc:  # noqa: BLE001 - every goal gets a result
            self._node.get_logger().error(f'query action failed: {exc!r}')
            result = QueryResult(ErrorCode.INTERNAL_ERROR, f'{type(exc).__name__}: {exc}')
        finally:
            self._gate.leave()  # the result goes out on a task the executor runs next
        out = SpatialQueryAction.Result()
        self._fill(result, out)
        out.elapsed_s = time.monotonic() - started
        if result.code == ErrorCode.OK:
            goal_handle.succeed()
        elif result.code == ErrorCode.CANCELED and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        else:
            goal_handle.abort()
        return out

    def _run(self, goal_handle: Any) -> QueryResult:
        engine, cfg = self._node.engine, self._node.config
        if not self._gate.is_open:
            return QueryResult(ErrorCode.SHUTTING_DOWN, SHUTTING_DOWN_MESSAGE)
        if engine is None or cfg is None:
            return QueryResult(ErrorCode.MODEL_NOT_READY, 'the node is not configured')
        goal = goal_handle.request
        try:
            query = query_from_msg(goal, cfg.max_question_chars)
        except RequestError as exc:
            return QueryResult(exc.code, exc.message)
        events: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._publish(goal_handle, 'queued', '', 0)
        future = engine.ask(query, feedback=lambda stage, _p: events.put(('stage', stage)),
                            on_token=lambda piece: events.put(('text', piece)))
        future.add_done_callback(lambda _f: events.put(('done', '')))
        deadline = time.monotonic() + cfg.request_timeout_s
        tokens, canceled_at = 0, None
        while True:
            try:
                kind, value = events.get(timeout=POLL_S)
            except queue.Empty:
                kind, value = '', ''
            if kind == 'stage':
                self._publish(goal_handle, value, '', tokens)
            elif kind == 'text':
                tokens += 1
                if value:
                    self._publish(goal_handle, 'decoding', value, tokens)
            elif kind == 'done':  # put after the worker's last stage or piece
                if tokens:
                    time.sleep(FEEDBACK_SETTLE_S)
                return future.result()
            now = time.monotonic()
            if goal_handle.is_cancel_requested and canceled_at is None:
                canceled_at = now
                engine.cancel(future)  # done within one token step; its result follows
            elif canceled_at is not None and now - canceled_at > CANCEL_GRACE_S:
                return QueryResult(ErrorCode.CANCELED, 'canceled; the answer worker did not '
                                   f'stop within {CANCEL_GRACE_S:g} s')
            elif not self._gate.is_open:
                engine.cancel(future)
                return QueryResult(ErrorCode.SHUTTING_DOWN, SHUTTING_DOWN_MESSAGE)
            elif now > deadline:
                engine.cancel(future)
                return QueryResult(ErrorCode.TIMEOUT, 'no answer within request_timeout_s='
                                   f'{cfg.request_timeout_s:g} s')

    @staticmethod
    def _publish(goal_handle: Any, stage: str, text: str, tokens: int) -> None:
        goal_handle.publish_feedback(SpatialQueryAction.Feedback(stage=stage, text=text,
                                                                 tokens=tokens))
