"""Error codes shared by the services, the action, the engine and the CLIs.

The values mirror the constants in ``srv/SpatialQuery.srv`` and ``srv/PlanRoute.srv``;
a test checks that they stay equal.
"""
from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Outcome of a request (see srv/SpatialQuery.srv for the meaning of each)."""

    OK = 0
    NO_FRAMES = 1
    MODEL_NOT_READY = 2
    INVALID_REQUEST = 3
    BUSY = 4
    INTERNAL_ERROR = 5
    TIMEOUT = 6
    GOAL_NOT_FOUND = 7
    UNREACHABLE = 8
    SHUTTING_DOWN = 9
    CANCELED = 10


class RequestError(Exception):
    """A request that cannot be answered, with the code and message to send back."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# Longest text of a caller's field quoted back in an error message, and longest message.
MAX_ECHO_CHARS = 64
MAX_MESSAGE_CHARS = 1000


def echo(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """Return ``repr(value)`` for an error message, clipped to about ``limit`` characters.

    A caller's field is quoted back so the caller sees what was wrong, but never whole:
    a 1 MB field would otherwise come back in a 1 MB error (and a 1 MB log line). A
    clipped value ends with '...' and says how long it was.
    """
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text) if isinstance(value, str) else text
    clipped = repr(text[:limit]) if isinstance(value, str) else text[:limit]
    return f'{clipped}... ({len(text)} characters)'


def bound_message(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Return ``message`` cut to ``limit`` characters (the last resort for any reply)."""
    if len(message) <= limit:
        return message
    tail = f'... ({len(message)} characters)'
    return message[:max(limit - len(tail), 0)] + tail
