"""The node's services and action: validate, queue on the engine, wait, answer every call.

:class:`RequestServer` offers ``~/spatial_query``, ``~/plan_route``,
``~/plan_route_action``, ``~/spatial_query_action`` (:mod:`.query_action`) and the scene
memory services ``~/save_scene``, ``~/load_scene`` and ``~/reset_scene`` while the node is
active. Every call taken gets a response: the
answer, an error code, or SHUTTING_DOWN when the node deactivates or stops while the call
waits (see :mod:`vlm3r_ros.pipeline.call_gate`); the services are destroyed only after
those responses went out.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_srvs.srv import Trigger

from vlm3r_ros.action import PlanRoute as PlanRouteAction
from vlm3r_ros.node.query_action import QueryActionServer
from vlm3r_ros.node.ros_convert import finite_or_nan, ns_to_stamp, query_from_msg, route_to_path
from vlm3r_ros.pipeline.call_gate import CallGate, Wait
from vlm3r_ros.pipeline.errors import ErrorCode, RequestError, bound_message, echo
from vlm3r_ros.pipeline.requests import QueryResult, RouteResult, validate_route
from vlm3r_ros.pipeline.scene_memory import SceneNotReady
from vlm3r_ros.pipeline.scene_store import SceneFileError
from vlm3r_ros.srv import LoadScene, PlanRoute, SaveScene, SpatialQuery

# Requests the middleware keeps for a service before its callbacks take them. The rclpy
# default (depth 10) silently dropped the oldest requests when 16+ clients called at once
# (11 of 24 first calls in test_load.py never got a response). The node answers BUSY as
# soon as a call is taken and the engine queue is full, so a deep middleware queue only
# holds calls that are about to be answered. Clients need the same depth for their
# responses (with depth 10, 10 of 880 responses were lost at 24 clients in one process):
# the CLIs use this profile, and README.md tells other clients to.
SERVICE_QUEUE_DEPTH = 1000
SERVICE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=SERVICE_QUEUE_DEPTH,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
# Time for the executor to rebuild its wait set after the action server left the node.
ACTION_SETTLE_S = 0.2
SHUTTING_DOWN_MESSAGE = 'the node is deactivating or shutting down; retry when it is active'


def track_responses(service: Any, on_sent: Callable[[], None]) -> None:
    """Call ``on_sent`` after ``service`` handed each response to the middleware.

    rclpy's executor sends the value a service callback returns with
    ``service.send_response`` after the callback returned; wrapping that bound method on
    this one instance is the only place where "the response went out" can be observed.
    """
    send = service.send_response

    def send_and_count(response: Any, header: Any) -> None:
        try:
            send(response, header)
        finally:
            on_sent()

    service.send_response = send_and_count


class RequestServer:
    """Services and action of one activation of the node (see the module docstring)."""

    def __init__(self, node: Any, callback_group: Any) -> None:
        """Create the services and the action server on ``node`` (a Vlm3rNode)."""
        self._node = node
        self.gate = CallGate()
        self._services = [
            node.create_service(srv_type, name, self._guarded(handler), qos_profile=SERVICE_QOS,
                                callback_group=callback_group)
            for srv_type, name, handler in (
                (SpatialQuery, '~/spatial_query', self._on_query),
                (PlanRoute, '~/plan_route', self._on_plan),
                (SaveScene, '~/save_scene', self._on_save_scene),
                (LoadScene, '~/load_scene', self._on_load_scene),
                (Trigger, '~/reset_scene', self._on_reset_scene))]
        for service in self._services:
            track_responses(service, self.gate.leave)
        self._action: ActionServer | None = ActionServer(
            node, PlanRouteAction, '~/plan_route_action', execute_callback=self._execute_route,
            goal_callback=lambda _goal: GoalResponse.ACCEPT,
            cancel_callback=lambda _handle: CancelResponse.ACCEPT,
            goal_service_qos_profile=SERVICE_QOS, result_service_qos_profile=SERVICE_QOS,
            cancel_service_qos_profile=SERVICE_QOS, callback_group=callback_group)
        self._query_action: QueryActionServer | None = QueryActionServer(
            node, self.gate, callback_group, SERVICE_QOS, self._fill_query)

    def close(self, timeout_s: float = 5.0) -> bool:
        """Answer every call in flight or queued (SHUTTING_DOWN), then destroy the servers.

        Returns False when calls were still in flight after ``timeout_s`` (logged).
        """
        self.gate.close()
        drained = self.gate.drain(timeout_s=timeout_s)
        if not drained:
            self._node.get_logger().warning(
                f'{self.gate.in_flight} calls still in flight after {timeout_s:g} s; '
                'destroying the services anyway')
        for service in self._services:
            self._node.destroy_service(service)
        actions = [self._action] if self._action is not None else []
        if self._query_action is not None:
            actions.append(self._query_action.server)
        self._retire_actions(actions)
        self._services, self._action, self._query_action = [], None, None
        return drained

    def _retire_actions(self, actions: list[ActionServer]) -> None:
        """Destroy the action servers without racing the executor's wait set.

        rclpy's executor adds a waitable it took from the node's list to its wait set even
        when entering it failed because its destruction had been requested in between
        ('action server pointer is invalid' killed the executor on deactivate). So the
        server leaves the node's list first; once the executor rebuilt its wait set (it
        is woken by the removal), any thread still using it holds it in use, and
        destruction waits for that.
        """
        if not actions:
            return
        for action in actions:
            self._node.remove_waitable(action)
        time.sleep(ACTION_SETTLE_S)  # once for all of them
        for action in actions:
            try:
                action.destroy()
            except ValueError:
                pass  # its last step removes it from the node's list again: already done

    # ------------------------------------------------------------------ services
    def _guarded(self, handler: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        """Wrap a service callback: count it in, refuse it when closed, never raise."""
        def callback(request: Any, response: Any) -> Any:
            started = time.monotonic()
            try:
                if not self.gate.enter():
                    return _fail(response, ErrorCode.SHUTTING_DOWN, SHUTTING_DOWN_MESSAGE,
                                 started)
                return handler(request, response)
            except Exception as exc:  # noqa: BLE001 - every call gets a response
                self._node.get_logger().error(f'service callback failed: {exc!r}')
                return _fail(response, ErrorCode.INTERNAL_ERROR,
                             f'{type(exc).__name__}: {exc}', started)
        return callback

    def _wait(self, future: Any, kind: str) -> QueryResult | RouteResult:
        config = self._node.config
        timeout = config.request_timeout_s if config is not None else 1.0
        outcome = self.gate.wait(future, timeout)
        result_type = QueryResult if kind == 'query' else RouteResult
        if outcome is Wait.DONE:
            return future.result()
        future.cancel()
        if outcome is Wait.CLOSED:
            return result_type(ErrorCode.SHUTTING_DOWN, SHUTTING_DOWN_MESSAGE)
        return result_type(ErrorCode.TIMEOUT,
                           f'no answer within request_timeout_s={timeout:g} s')

    def _on_query(self, request: SpatialQuery.Request,
                  response: SpatialQuery.Response) -> SpatialQuery.Response:
        started = time.monotonic()
        result = self._run_query(request)
        self._fill_query(result, response)
        response.elapsed_s = time.monotonic() - started
        return response

    def _fill_query(self, result: QueryResult, out: Any) -> None:
        """Fill a SpatialQuery response (or action result); publish the keyframes on OK."""
        out.success = result.code == ErrorCode.OK
        out.error_code = int(result.code)
        out.message = bound_message(result.message)
        out.answer = result.answer
        out.value = finite_or_nan(result.value)
        out.option_index = int(result.option_index)
        out.keyframe_stamps = [ns_to_stamp(ns) for ns in result.keyframe_stamps_ns]
        out.coverage = float(result.coverage)
        if result.code == ErrorCode.OK:
            self._node._publish_keyframes(result.keyframe_stamps_ns)

    def _run_query(self, request: SpatialQuery.Request) -> QueryResult:
        engine, cfg = self._node.engine, self._node.config
        if engine is None or cfg is None:
            return QueryResult(ErrorCode.MODEL_NOT_READY, 'the node is not configured')
        try:
            query = query_from_msg(request, cfg.max_question_chars)
        except RequestError as exc:
            return QueryResult(exc.code, exc.message)
        return self._wait(engine.ask(query), 'query')  # type: ignore[return-value]

    def _fill_route(self, result: RouteResult, out: Any) -> None:
        out.success = result.code == ErrorCode.OK
        out.error_code = int(result.code)
        out.message = bound_message(result.message)
        out.steps = list(result.steps)
        out.model_steps = list(result.model_steps)
        config = self._node.config
        frame = config.map_frame if config is not None else 'map'
        out.path = route_to_path(result, frame, self._node.get_clock().now().to_msg())
        out.goal_stamp = ns_to_stamp(result.goal_stamp_ns)
        out.length_m = float(result.length_m)
        out.elapsed_s = float(result.elapsed_s)
        path_pub = self._node._path_pub
        if out.success and path_pub is not None:
            path_pub.publish(out.path)

    def _route_request(self, goal: str, start: str, feedback: Any = None) -> Any:
        engine = self._node.engine
        if engine is None:
            return None, RouteResult(ErrorCode.MODEL_NOT_READY, 'the node is not configured')
        try:
            route = validate_route(goal, start)
        except RequestError as exc:
            return None, RouteResult(exc.code, exc.message)
        return engine.plan(route, feedback), None

    def _on_plan(self, request: PlanRoute.Request,
                 response: PlanRoute.Response) -> PlanRoute.Response:
        started = time.monotonic()
        future, failure = self._route_request(request.goal, request.start)
        result = failure or self._wait(future, 'route')
        self._fill_route(result, response)
        response.elapsed_s = time.monotonic() - started
        return response

    # ------------------------------------------------------------------ scene memory
    def _scene_file(self, requested: str) -> str:
        """Return the scene file of a request (its path or scene_path), user dir expanded.

        Raises RequestError(INVALID_REQUEST) without a path, or for a path that does not
        end in '.safetensors' (a caller on the graph must not make the node overwrite an
        arbitrary file of its user).
        """
        config = self._node.config
        path = requested or (config.scene_path if config is not None else '')
        if not path:
            raise RequestError(ErrorCode.INVALID_REQUEST,
                               'no path given and the scene_path parameter is empty')
        if not path.endswith('.safetensors'):
            raise RequestError(ErrorCode.INVALID_REQUEST,
                               f'scene files end in .safetensors; got {echo(path)}')
        return os.path.expanduser(path)

    def _on_save_scene(self, request: SaveScene.Request,
                       response: SaveScene.Response) -> SaveScene.Response:
        def save(engine: Any) -> Any:
            summary = engine.save_scene(self._scene_file(request.path))
            response.path, response.size_bytes = summary.path, summary.nbytes
            return summary
        return self._scene_call(response, save)

    def _on_load_scene(self, request: LoadScene.Request,
                       response: LoadScene.Response) -> LoadScene.Response:
        def load(engine: Any) -> Any:
            response.path = self._scene_file(request.path)
            summary = engine.load_scene(response.path)
            response.reused = summary.reused
            self._node.get_logger().info(f'scene {response.path}: {summary.message}')
            return summary
        return self._scene_call(response, load)

    def _scene_call(self, response: Any, run: Callable[[Any], Any]) -> Any:
        """Fill a SaveScene/LoadScene ``response`` from ``run(engine)`` (a scene summary).

        Every failure becomes an error code: no engine MODEL_NOT_READY, a scene that cannot
        be used yet MODEL_NOT_READY, a bad path or file INVALID_REQUEST.
        """
        started = time.monotonic()
        engine = self._node.engine
        try:
            if engine is None:
                raise RequestError(ErrorCode.MODEL_NOT_READY, 'the node is not configured')
            summary = run(engine)
        except RequestError as exc:
            return _fail(response, exc.code, exc.message, started)
        except SceneNotReady as exc:
            return _fail(response, ErrorCode.MODEL_NOT_READY, str(exc), started)
        except SceneFileError as exc:
            return _fail(response, ErrorCode.INVALID_REQUEST, str(exc), started)
        response.success, response.error_code = True, int(ErrorCode.OK)
        response.message = bound_message(summary.message)
        response.frames = summary.frames
        response.elapsed_s = time.monotonic() - started
        return response

    def _on_reset_scene(self, request: Trigger.Request,
                        response: Trigger.Response) -> Trigger.Response:
        engine = self._node.engine
        if engine is None:
            response.success, response.message = False, 'the node is not configured'
            return response
        dropped = engine.reset_scene()
        response.success = True
        response.message = (f'scene reset: {dropped} frames, keyframes, reconstruction and '
                            'trajectory dropped; the next frame starts a new world')
        self._node.get_logger().info(response.message)
        return response

    # ------------------------------------------------------------------ action
    def _execute_route(self, goal_handle: Any) -> PlanRouteAction.Result:
        started = time.monotonic()
        self.gate.enter()
        try:
            return self._run_route_goal(goal_handle, started)
        except Exception as exc:  # noqa: BLE001 - every goal gets a result
            self._node.get_logger().error(f'route action failed: {exc!r}')
            goal_handle.abort()
            return PlanRouteAction.Result(
                error_code=int(ErrorCode.INTERNAL_ERROR),
                message=bound_message(f'{type(exc).__name__}: {exc}'),
                elapsed_s=time.monotonic() - started)
        finally:
            self.gate.leave()  # the result goes out on a task the executor runs next

    def _run_route_goal(self, goal_handle: Any, started: float) -> PlanRouteAction.Result:
        def feedback(stage: str, progress: float) -> None:
            goal_handle.publish_feedback(PlanRouteAction.Feedback(stage=stage,
                                                                  progress=float(progress)))

        if not self.gate.is_open:
            goal_handle.abort()
            return PlanRouteAction.Result(error_code=int(ErrorCode.SHUTTING_DOWN),
                                          message=SHUTTING_DOWN_MESSAGE,
                                          elapsed_s=time.monotonic() - started)
        feedback('queued', 0.0)
        future, failure = self._route_request(goal_handle.request.goal,
                                              goal_handle.request.start, feedback)
        result = failure
        config = self._node.config
        deadline = started + (config.request_timeout_s if config is not None else 1.0)
        while result is None:
            if goal_handle.is_cancel_requested:
                self._node.engine.cancel(future)  # a queued goal frees its slot at once
                goal_handle.canceled()
                out = PlanRouteAction.Result(error_code=int(ErrorCode.CANCELED),
                                             message='canceled by the client')
                out.elapsed_s = time.monotonic() - started
                return out
            outcome = self.gate.wait(future, min(0.1, max(deadline - time.monotonic(), 0.0)))
            if outcome is Wait.DONE:
                result = future.result()
            elif outcome is Wait.CLOSED:
                future.cancel()
                result = RouteResult(ErrorCode.SHUTTING_DOWN, SHUTTING_DOWN_MESSAGE)
            elif time.monotonic() > deadline:
                future.cancel()
                result = RouteResult(ErrorCode.TIMEOUT, 'no route within request_timeout_s')
        out = PlanRouteAction.Result()
        self._fill_route(result, out)
        out.elapsed_s = time.monotonic() - started
        if result.code == ErrorCode.OK:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return out


def _fail(response: Any, code: ErrorCode, message: str, started: float) -> Any:
    """Fill a response with an error and return it (fields it lacks, as a Trigger's
    error_code, are skipped)."""
    response.success = False
    response.message = bound_message(message)
    if hasattr(response, 'error_code'):
        response.error_code = int(code)
    if hasattr(response, 'elapsed_s'):
        response.elapsed_s = time.monotonic() - started
    return response
