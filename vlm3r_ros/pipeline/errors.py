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
