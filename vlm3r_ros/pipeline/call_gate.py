"""Admission and drain of service calls and action goals around deactivate and shutdown.

A ROS service must not be destroyed while a call it took is still waiting for an answer:
the response could then never be sent (rclpy raises ``InvalidHandle`` in the executor).
The node therefore, before it destroys its services, closes the gate: every waiting call
wakes and is answered SHUTTING_DOWN, every call taken afterwards is answered so at once,
and :meth:`CallGate.drain` returns once no call is in flight and none has been taken for a
quiet period (calls still queued in the middleware get taken and answered meanwhile).

Plain Python: the node counts a call in with :meth:`CallGate.enter` when its callback
starts and out with :meth:`CallGate.leave` once the response has been handed to the
middleware.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from enum import Enum
from typing import Any


class Wait(Enum):
    """How :meth:`CallGate.wait` ended."""

    DONE = 'done'
    CLOSED = 'closed'
    TIMEOUT = 'timeout'


class CallGate:
    """Counts calls in flight; wakes their waits and refuses new work once closed."""

    def __init__(self) -> None:
        """Create an open gate with nothing in flight."""
        self._cv = threading.Condition()
        self._open = True
        self._in_flight = 0
        self._last_activity = time.monotonic()
        self._waiters: set[threading.Event] = set()

    @property
    def is_open(self) -> bool:
        """Return True until :meth:`close` (and again after :meth:`reopen`)."""
        return self._open

    @property
    def in_flight(self) -> int:
        """Return the number of calls entered and not yet left."""
        return self._in_flight

    def enter(self) -> bool:
        """Count a call in; return True when it may be served (False: answer SHUTTING_DOWN)."""
        with self._cv:
            self._in_flight += 1
            self._last_activity = time.monotonic()
            return self._open

    def leave(self) -> None:
        """Count a call out (its response was sent, or it needs none)."""
        with self._cv:
            self._in_flight = max(0, self._in_flight - 1)
            self._last_activity = time.monotonic()
            self._cv.notify_all()

    def wait(self, future: Future[Any], timeout_s: float) -> Wait:
        """Wait for ``future`` at most ``timeout_s``; wake early when the gate closes."""
        woken = threading.Event()
        with self._cv:
            if not self._open:
                return Wait.CLOSED
            self._waiters.add(woken)
        future.add_done_callback(lambda _f: woken.set())
        try:
            woken.wait(timeout_s)
        finally:
            with self._cv:
                self._waiters.discard(woken)
        if future.done():
            return Wait.DONE
        return Wait.TIMEOUT if self._open else Wait.CLOSED

    def close(self) -> None:
        """Refuse new work and wake every waiting call (idempotent)."""
        with self._cv:
            self._open = False
            waiters = list(self._waiters)
            self._cv.notify_all()
        for woken in waiters:
            woken.set()

    def reopen(self) -> None:
        """Serve calls again (after a deactivate, at the next activate)."""
        with self._cv:
            self._open = True

    def drain(self, quiet_s: float = 0.25, timeout_s: float = 5.0) -> bool:
        """Block until nothing is in flight and no call arrived for ``quiet_s``.

        Returns False when ``timeout_s`` passed first (the caller logs how many calls were
        still in flight and goes on).
        """
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while True:
                now = time.monotonic()
                idle_for = now - self._last_activity
                if self._in_flight == 0 and idle_for >= quiet_s:
                    return True
                if now >= deadline:
                    return False
                wait = quiet_s - idle_for if self._in_flight == 0 else 0.05
                self._cv.wait(min(max(wait, 0.005), deadline - now))
