"""Answering a question: keyframe selection, visual tokens, decoding (an engine part).

:class:`QueryAnswering` is a mixin of :class:`~vlm3r_ros.pipeline.engine.SpatialEngine`;
its methods run in the engine's answer worker (``select_keyframes`` also in status reads).
Keyframes come from max coverage (or uniform / the reference's linspace); tokens from the
streaming cache or, per query, a fresh geometry state over the keyframes; the answer from
the likeliest option letter, a numeric estimate or greedy decoding, parsed the VSI-Bench way.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from vlm3r_ros.pipeline.answers import (build_prompt, option_letter, parse_answer_with,
                                         resolve_answer_type, strip_option_label)
from vlm3r_ros.pipeline.coverage import Selection, reference_sample, uniform_select
from vlm3r_ros.pipeline.engine_types import ModelBundle
from vlm3r_ros.pipeline.errors import ErrorCode, RequestError
from vlm3r_ros.pipeline.frame_buffer import FrameRecord
from vlm3r_ros.pipeline.requests import QueryRequest, QueryResult

if TYPE_CHECKING:
    from vlm3r_ros.pipeline.engine import SpatialEngine, _Job


class QueryAnswering:
    """Mixin: keyframe selection and the answer to one question."""

    # ------------------------------------------------------------------ keyframes
    def select_keyframes(self: 'SpatialEngine', budget: int = 0, window_ns: tuple[int, int] | None = None
                         ) -> Selection:
        """Return the keyframes for a question: max coverage (uniform, or the reference's
        linspace) over the window."""
        budget = budget or self.config.keyframe_budget
        if self.config.selection == 'uniform':
            return self._uniform_selection(budget, window_ns)
        if self.config.selection == 'linspace':
            return self._linspace_selection(budget, window_ns)
        return self.coverage.select(budget=budget, ratio=self.config.coverage_ratio,
                                    window_ns=window_ns)

    def _uniform_selection(self: 'SpatialEngine', budget: int, window_ns: tuple[int, int] | None) -> Selection:
        records = [r for r in self._records_in(window_ns) if r.voxels is not None]
        chosen = set(uniform_select([r.frame_id for r in records], budget))
        picked = [r for r in records if r.frame_id in chosen]
        return Selection(frame_ids=[r.frame_id for r in picked],
                         stamps_ns=[r.stamp_ns for r in picked], covered=0, total=0,
                         ratio=0.0, gains=[])

    def _linspace_selection(self: 'SpatialEngine', budget: int, window_ns: tuple[int, int] | None) -> Selection:
        """The official evaluators' frames: ``linspace(0, N - 1, budget)`` cast to int over
        every buffered frame in the window, with or without geometry; with fewer than
        ``budget`` frames some repeat (the reference decodes them twice)."""
        records = self._records_in(window_ns)
        ids = reference_sample([r.frame_id for r in records], budget)
        stamp = {r.frame_id: r.stamp_ns for r in records}
        return Selection(frame_ids=ids, stamps_ns=[stamp[i] for i in ids], covered=0, total=0,
                         ratio=0.0, gains=[])

    def _records_in(self: 'SpatialEngine', window_ns: tuple[int, int] | None) -> list[FrameRecord]:
        if window_ns is None:
            return self.buffer.snapshot()
        return self.buffer.snapshot(window_ns[0] or None, window_ns[1] or None)

    def _keyframe_inputs(self: 'SpatialEngine', frame_ids: Sequence[int]
                         ) -> tuple[list[FrameRecord], list[Any], Any]:
        """Return the records still buffered, their visual tokens and the prefix-cache key.

        Streaming mode uses the tokens cached at ingest (key: the keyframe ids, so a
        repeated keyframe set reuses the LLM's visual prefix); otherwise, or when a frame
        has none cached, the tokens are computed now with a fresh geometry state over the
        keyframes (the reference's per-question way; key None).
        """
        records = [r for r in (self.buffer.get(i) for i in frame_ids) if r is not None]
        bundle = self._bundle
        if bundle is None:
            raise RequestError(ErrorCode.MODEL_NOT_READY, 'the model was unloaded')
        if self.config.cache_mode == 'streaming' and all(r.tokens is not None for r in records):
            return records, [r.tokens for r in records], tuple(r.frame_id for r in records)
        # per_query (the reference's way): fresh geometry state over the keyframes only.
        cache_key = (id(bundle), self.config.points_source, tuple(r.frame_id for r in records))
        cached = self._per_query_tokens
        if cached is not None and cached[0] == cache_key:
            return records, list(cached[1]), None
        stream = bundle.new_geometry_stream()
        tokens = []
        for record in records:
            geom = stream.step(record.image)
            points = self._world_points(record, geom, np.asarray(geom.pose))
            tokens.append(bundle.spatial.encode_frame(record.image, geom.tokens, points))
        self._per_query_tokens = (cache_key, tokens)
        return records, tokens, None

    def _window(self, window_ns: tuple[int, int] | None) -> tuple[int, int] | None:
        if window_ns is None:
            return None
        start, end = window_ns
        return (start, end if end else np.iinfo(np.int64).max)

    def _answer(self: 'SpatialEngine', request: QueryRequest, job: '_Job | None' = None) -> QueryResult:
        canceled = job.future.cancel_requested if job is not None else threading.Event()
        generation = self._scene_generation

        def stage(name: str, fraction: float) -> None:
            if canceled.is_set():
                raise RequestError(ErrorCode.CANCELED, f'canceled before {name}')
            if job is not None and job.feedback is not None:
                job.feedback(name, fraction)

        stage('selecting_keyframes', 0.1)
        window = self._window(request.window_ns)
        selection = self.select_keyframes(request.keyframe_budget, window)
        if not selection.frame_ids:
            where = 'in the requested time window' if window else 'yet'
            raise RequestError(ErrorCode.NO_FRAMES,
                               f'no buffered frame has geometry {where} '
                               f'({len(self.buffer)} frames buffered)')
        records, tokens, key = self._keyframe_inputs(selection.frame_ids)
        if not records:
            raise RequestError(ErrorCode.NO_FRAMES, 'the selected keyframes were evicted')
        bundle = self._bundle
        assert bundle is not None
        prompt = build_prompt(request.question, request.options, request.answer_type)
        stage('prefill', 0.3)
        on_token = job.on_token if job is not None else None
        pieces: list[str] = []
        after_cancel = 0  # tokens decoded with the cancel flag up (at most the running one)
        text: str | None = None  # an answer decided in one piece, else greedy decoding
        if request.options and self.config.option_decoding == 'constrained':
            # The model's likeliest option letter: always a valid option (an operator gets
            # an answer, not free text that names none); 'generate' is VSI-Bench's protocol.
            index, _ = bundle.spatial.choose(prompt, tokens, len(request.options),
                                             prefix_key=key)
            text = f'{option_letter(index)}. {strip_option_label(request.options[index])}'
        elif (self.config.numeric_decoding != 'greedy'
              and resolve_answer_type(request.answer_type, request.options) == 'number'):
            text = self._estimate_number(bundle, prompt, tokens, key)  # None: greedy
        if text is not None:
            stage('decoding', 0.9)
            if on_token is not None:
                on_token(text)
        else:
            def token(piece: str) -> bool:
                nonlocal after_cancel
                after_cancel += canceled.is_set()
                if not pieces and job is not None and job.feedback is not None:
                    job.feedback('decoding', 0.5)
                pieces.append(piece)
                if on_token is not None:
                    on_token(piece)
                return not canceled.is_set()  # False: stop after this token step

            text = bundle.spatial.answer(prompt, tokens, self.config.max_new_tokens,
                                         prefix_key=key, on_token=token)
        parsed = parse_answer_with(self.config.answer_parser, text, request.options)
        stamps = [r.stamp_ns for r in records]
        if canceled.is_set():
            return QueryResult(ErrorCode.CANCELED,
                               f'canceled by the client after {len(pieces)} answer tokens '
                               f'({after_cancel} decoded after the cancel request)',
                               parsed.text, parsed.value, parsed.option_index, stamps,
                               selection.ratio)
        self._check_scene(generation)
        return QueryResult(ErrorCode.OK, 'ok', parsed.text, parsed.value, parsed.option_index,
                           stamps, selection.ratio)

    def _check_scene(self: 'SpatialEngine', generation: int) -> None:
        """Raise BUSY when a scene load or reset replaced the scene since ``generation``."""
        if self._scene_generation != generation:
            raise RequestError(ErrorCode.BUSY, 'the scene was loaded or reset while this '
                               'request was answered; ask again')

    def _estimate_number(self: 'SpatialEngine', bundle: ModelBundle, prompt: str,
                         tokens: Sequence[Any], key: Any) -> str | None:
        """Return the numeric answer text by ``numeric_decoding`` ('median'/'expected'), or
        None when the model forms no number that way (the caller then decodes greedily)."""
        try:
            value = bundle.spatial.estimate_number(prompt, tokens, self.config.numeric_decoding,
                                                   prefix_key=key)
        except ValueError:
            return None
        return f'{value:.4g}' if np.isfinite(value) else None
