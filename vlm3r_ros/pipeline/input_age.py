"""Input hygiene: frame stamps against the node clock.

:class:`StampAgeGate` is asked once per arriving frame, before it is decoded. The age of a
frame is ``now - stamp`` by the node clock (ROS time: the ``/clock`` topic with
``use_sim_time``, else wall time). A frame older than ``max_age_s`` (when > 0) is dropped
and counted; a stamp from the future is never dropped. The age of the newest frame is
kept for the status, and when it is further than ``skew_warn_s`` from zero either way
the report warns that stamps and clock disagree - the usual cause being a bag played
without ``--clock`` (or a node without ``use_sim_time``) or an unsynchronised camera.

A node clock at zero (sim time before the first ``/clock`` message) is not a clock yet:
nothing is dropped and no age is reported. Plain Python, thread-safe.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

NS = 1_000_000_000


@dataclass(frozen=True)
class ClockReport:
    """What the status and diagnostics say about frame stamps vs the node clock."""

    clock: str  # 'sim time' or 'wall time'
    age_s: float | None  # node clock minus the newest frame's stamp at its arrival
    too_old: int
    max_age_s: float
    warn: bool
    message: str


class StampAgeGate:
    """Drop frames older than ``max_age_s``; watch the stamp/clock offset (see module)."""

    def __init__(self, max_age_s: float = 0.0, skew_warn_s: float = 5.0) -> None:
        """Configure; ``max_age_s`` <= 0 keeps every frame (the offset is still watched)."""
        self.max_age_s = float(max_age_s)
        self.skew_warn_s = float(skew_warn_s)
        self._lock = threading.Lock()
        self._too_old = 0
        self._age_ns: int | None = None

    def admit(self, stamp_ns: int, now_ns: int) -> bool:
        """Return False (and count it) when the frame stamped ``stamp_ns`` is too old."""
        if now_ns <= 0:
            return True  # no clock yet (sim time before /clock): nothing to compare with
        age_ns = now_ns - int(stamp_ns)
        with self._lock:
            self._age_ns = age_ns
            if self.max_age_s > 0 and age_ns > self.max_age_s * NS:
                self._too_old += 1
                return False
        return True

    @property
    def too_old(self) -> int:
        """Return the frames dropped as too old."""
        return self._too_old

    @property
    def age_s(self) -> float | None:
        """Return the newest frame's age at arrival (s), None before a comparable frame."""
        age = self._age_ns
        return None if age is None else age / NS

    def report(self, sim_time: bool) -> ClockReport:
        """Return the clock summary; ``sim_time``: the node runs on /clock."""
        clock = 'sim time' if sim_time else 'wall time'
        age, too_old = self.age_s, self._too_old
        warn, parts = False, []
        if age is None:
            parts.append('no frame compared with the node clock yet')
        elif abs(age) > self.skew_warn_s:
            warn = True
            side = 'behind' if age > 0 else 'ahead of'
            hint = ('is /clock published by the bag player (--clock)?' if sim_time else
                    'playing a bag? run it with --clock and set use_sim_time:=true; else '
                    'check the camera clock synchronisation')
            parts.append(f'frame stamps are {abs(age):.1f} s {side} the node clock '
                         f'({clock}): {hint}')
        else:
            parts.append(f'frame stamps within {self.skew_warn_s:g} s of the node clock '
                         f'({clock}; newest {age:+.3f} s)')
        if too_old:
            warn = True
            parts.append(f'{too_old} frames dropped as older than max_input_age_s='
                         f'{self.max_age_s:g} s')
        return ClockReport(clock, age, too_old, self.max_age_s, warn, '; '.join(parts))
