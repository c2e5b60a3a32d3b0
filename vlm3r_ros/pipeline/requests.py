"""Requests and results of the question and route paths, and their validation.

Everything a service request carries is checked here before it reaches a queue: sizes,
control characters, option counts, time windows and budgets. A bad field raises
:class:`RequestError` with INVALID_REQUEST and a message naming the field.
"""
from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field
from typing import Sequence

from vlm3r_ros.pipeline.answers import ANSWER_TYPES, MAX_OPTIONS, resolve_answer_type
from vlm3r_ros.pipeline.errors import ErrorCode, RequestError, echo

MAX_OPTION_CHARS = 500
MAX_GOAL_CHARS = 500
MAX_KEYFRAME_BUDGET = 64
# Where the prompt template puts the frames; in caller text it would be ambiguous.
IMAGE_PLACEHOLDER = '<image>'


@dataclass(frozen=True)
class QueryRequest:
    """A validated spatial question."""

    question: str
    options: tuple[str, ...] = ()
    answer_type: str = 'auto'
    window_ns: tuple[int, int] | None = None
    keyframe_budget: int = 0


@dataclass
class QueryResult:
    """What a question produced; ``code`` tells whether the other fields are meaningful."""

    code: ErrorCode
    message: str = ''
    answer: str = ''
    value: float = math.nan
    option_index: int = -1
    keyframe_stamps_ns: list[int] = field(default_factory=list)
    coverage: float = 0.0
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class RouteRequest:
    """A validated route request; an empty ``start`` means the current pose."""

    goal: str
    start: str = ''


@dataclass
class RouteResult:
    """A planned route: text steps, the model's steps, and the path poses."""

    code: ErrorCode
    message: str = ''
    steps: list[str] = field(default_factory=list)
    model_steps: list[str] = field(default_factory=list)
    positions: list[tuple[float, float, float]] = field(default_factory=list)
    orientations: list[tuple[float, float, float, float]] = field(default_factory=list)  # xyzw
    goal_stamp_ns: int = 0
    length_m: float = 0.0
    elapsed_s: float = 0.0


def check_text(name: str, text: str, max_chars: int, *, required: bool = True,
               allow_newlines: bool = True) -> str:
    """Return ``text`` stripped, or raise RequestError when it is empty or unsafe.

    Control characters other than newline and tab are rejected (they corrupt logs and
    prompts); so are text longer than ``max_chars`` and the ``<image>`` placeholder. Chat
    markers such as ``<|im_end|>`` are accepted: the model tokenises caller text as plain
    text, so they stay characters.
    """
    if len(text) > max_chars:
        raise RequestError(ErrorCode.INVALID_REQUEST,
                           f'{name} has {len(text)} characters; the limit is {max_chars}')
    allowed = '\n\t' if allow_newlines else '\t'
    for i, ch in enumerate(text):
        if ch not in allowed and unicodedata.category(ch) in ('Cc', 'Cs'):
            raise RequestError(ErrorCode.INVALID_REQUEST,
                               f'{name} contains a control character (U+{ord(ch):04X}) '
                               f'at position {i}')
    if IMAGE_PLACEHOLDER in text:
        raise RequestError(ErrorCode.INVALID_REQUEST,
                           f'{name} contains the {IMAGE_PLACEHOLDER} placeholder, which marks '
                           'where the frames go in the prompt; rephrase it')
    stripped = text.strip()
    if required and not stripped:
        raise RequestError(ErrorCode.INVALID_REQUEST, f'{name} is empty')
    return stripped


def validate_query(question: str, options: Sequence[str], answer_type: str,
                   window_ns: tuple[int, int], keyframe_budget: int, *,
                   max_question_chars: int) -> QueryRequest:
    """Return a QueryRequest from raw service fields; raise RequestError if any is bad.

    ``window_ns`` is (start, end) with 0 meaning open; start after end is an error.
    """
    q = check_text('question', question, max_question_chars)
    if len(options) > MAX_OPTIONS:
        raise RequestError(ErrorCode.INVALID_REQUEST,
                           f'{len(options)} options given; at most {MAX_OPTIONS} are allowed')
    opts = tuple(check_text(f'option {i + 1}', o, MAX_OPTION_CHARS, allow_newlines=False)
                 for i, o in enumerate(options))
    kind = answer_type.strip() or 'auto'
    if kind not in ANSWER_TYPES:
        raise RequestError(ErrorCode.INVALID_REQUEST,
                           f"answer_type {echo(answer_type)} is not one of "
                           f"{', '.join(ANSWER_TYPES)}")
    try:
        resolve_answer_type(kind, opts)
    except ValueError as exc:
        raise RequestError(ErrorCode.INVALID_REQUEST, str(exc)) from None
    start, end = window_ns
    if start < 0 or end < 0 or (start and end and start > end):
        raise RequestError(ErrorCode.INVALID_REQUEST,
                           f'time window start {start} ns is after its end {end} ns')
    if not 0 <= keyframe_budget <= MAX_KEYFRAME_BUDGET:
        raise RequestError(ErrorCode.INVALID_REQUEST,
                           f'keyframe_budget {keyframe_budget} is outside 0..{MAX_KEYFRAME_BUDGET}')
    window = (start, end) if (start or end) else None
    return QueryRequest(q, opts, kind, window, keyframe_budget)


def validate_route(goal: str, start: str) -> RouteRequest:
    """Return a RouteRequest from raw service fields; raise RequestError if any is bad."""
    return RouteRequest(check_text('goal', goal, MAX_GOAL_CHARS, allow_newlines=False),
                        check_text('start', start, MAX_GOAL_CHARS, required=False,
                                   allow_newlines=False))
