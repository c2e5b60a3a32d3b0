"""Planning a route to a described goal (an engine part).

:class:`RoutePlanning` is a mixin of :class:`~vlm3r_ros.pipeline.engine.SpatialEngine`;
``_route`` runs in the answer worker: the model names the keyframe that shows the goal
(and the start, when described), :class:`~vlm3r_ros.planning.trajectory_graph.TrajectoryGraph`
plans over the traversed space, and the path becomes text steps beside the model's own.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from vlm3r_ros.pipeline.answers import build_prompt, option_letter
from vlm3r_ros.pipeline.errors import ErrorCode, RequestError
from vlm3r_ros.pipeline.frame_buffer import FrameRecord
from vlm3r_ros.pipeline.requests import RouteRequest, RouteResult
from vlm3r_ros.planning.route_steps import parse_route_steps, steps_agree, steps_from_path
from vlm3r_ros.planning.trajectory_graph import Unreachable

if TYPE_CHECKING:
    from vlm3r_ros.pipeline.engine import SpatialEngine

LOG = logging.getLogger(__name__)


class RoutePlanning:
    """Mixin: the route to a described goal over the traversed trajectory."""

    # ------------------------------------------------------------------ routes
    def _route(self: 'SpatialEngine', request: RouteRequest,
               feedback: Callable[[str, float], None] | None) -> RouteResult:
        def progress(stage: str, fraction: float) -> None:
            if feedback is not None:
                feedback(stage, fraction)

        generation = self._scene_generation
        progress('selecting_keyframes', 0.1)
        budget = min(self.config.route_max_keyframes, 26)
        selection = self.select_keyframes(budget)
        records = [r for r in (self.buffer.get(i) for i in selection.frame_ids)
                   if r is not None and r.pose is not None]
        if not records:
            raise RequestError(ErrorCode.NO_FRAMES, 'no keyframe with a pose yet')
        records, tokens, key = self._keyframe_inputs([r.frame_id for r in records])
        progress('localising_goal', 0.3)
        goal_rec = self._localise(request.goal, records, tokens, key)
        start_rec = (self._localise(request.start, records, tokens, key) if request.start
                     else self._latest_posed())
        progress('planning', 0.6)
        with self._lock:
            graph = self.graph
            try:
                path = graph.plan(start_rec.pose[:3, 3], goal_frame_id=goal_rec.frame_id)
            except Unreachable as exc:
                raise RequestError(ErrorCode.UNREACHABLE, str(exc)) from None
            start_yaw = graph.frame_yaw(start_rec.frame_id)
            orientations = [tuple(float(v) for v in graph.plane.heading_quaternion(h))
                            for h in path.headings_rad]
        steps = steps_from_path(path.plane_xy, start_yaw, self.config.route_turn_threshold_deg)
        progress('describing', 0.8)
        bundle = self._bundle
        assert bundle is not None
        start_text = request.start or 'your current position'
        prompt = (f'These are frames of a video.\nYou are a robot beginning at {start_text}. '
                  f'You want to navigate to {request.goal}. Describe the actions: turn left, '
                  'turn right, turn back or go forward until a landmark.')
        model_text = bundle.spatial.answer(prompt, tokens, 48, prefix_key=key)
        model_steps = parse_route_steps(model_text)
        agreement = steps_agree(steps, model_steps)
        self._check_scene(generation)
        return RouteResult(ErrorCode.OK,
                           f'route to {request.goal}: {path.length_m:.2f} m; the model\'s own '
                           f'steps agree with the path\'s turns: {agreement.score:.2f}',
                           steps, model_steps,
                           [tuple(float(v) for v in p) for p in path.positions],
                           orientations, goal_rec.stamp_ns,
                           float(path.length_m))

    def _latest_posed(self: 'SpatialEngine') -> FrameRecord:
        for record in reversed(self.buffer.snapshot()):
            if record.pose is not None:
                return record
        raise RequestError(ErrorCode.NO_FRAMES, 'no frame with a pose yet')

    def _localise(self: 'SpatialEngine', what: str, records: list[FrameRecord], tokens: list[Any],
                  key: Any) -> FrameRecord:
        """Ask the model which keyframe best shows ``what``; return that record."""
        bundle = self._bundle
        assert bundle is not None
        options = [f'frame {i + 1}' for i in range(len(records))]
        prompt = build_prompt(f'Which frame shows {what} best?', options, 'option')
        index, probs = bundle.spatial.choose(prompt, tokens, len(options), prefix_key=key)
        if not 0 <= index < len(records):
            raise RequestError(ErrorCode.GOAL_NOT_FOUND,
                               f'the model named no keyframe for {what!r}')
        if probs[index] < self.config.route_min_goal_probability:
            raise RequestError(
                ErrorCode.GOAL_NOT_FOUND,
                f'no keyframe shows {what!r} clearly enough: best is keyframe {index + 1} of '
                f'{len(records)} with p={probs[index]:.2f} < route_min_goal_probability='
                f'{self.config.route_min_goal_probability:g}')
        LOG.info('localised %r in keyframe %s (p=%.2f)', what, option_letter(index),
                 probs[index])
        return records[index]
