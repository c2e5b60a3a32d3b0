"""What the node tells about its inputs: counters, rate-limited log lines, warnings.

:class:`InputMonitor` gathers, for the status and diagnostics, the inputs the checks of
:mod:`vlm3r_ros.pipeline.input_checks` refused (by kind), the frames estimated lost
before the node (:mod:`vlm3r_ros.pipeline.stream_gaps`), and the problems seen recently
(a stream of zero stamps, named by its topic; calibration for another resolution; depth
of another size; frame loss with the QoS advice). Rejection lines go through one
:class:`~vlm3r_ros.pipeline.log_limit.RateLimitedLog`. The node calls it from its ingest
callbacks and its status timer; a lock keeps the two consistent. Plain Python, no ROS.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from vlm3r_ros.pipeline.input_checks import InputCounters
from vlm3r_ros.pipeline.log_limit import RateLimitedLog
from vlm3r_ros.pipeline.stream_gaps import LossReport, StampGapDetector, loss_advice

# A recent frame-loss estimate above this share (and LOSS_MIN_FRAMES frames) warns.
LOSS_WARN_RATIO = 0.05
LOSS_MIN_FRAMES = 3


@dataclass
class InputReport:
    """A snapshot for SceneStatus and the camera input diagnostic."""

    counters: InputCounters
    loss: LossReport
    warnings: list[str] = field(default_factory=list)


class InputMonitor:
    """Counters, log decisions and warnings about the inputs (see the module docstring)."""

    def __init__(self, image_topic: str = '', reliability: str = 'best_effort',
                 transport: str = 'raw', pause_s: float = 3.0, window_s: float = 10.0,
                 log_interval_s: float = 5.0, rate_hz: float = 0.0) -> None:
        """``pause_s``: stamp gaps longer than this are pauses, not loss (the stale
        timeout); ``window_s``: how long a problem stays in the warnings; ``rate_hz``:
        the camera's known frame rate (0: estimated from the stamps)."""
        self.image_topic = image_topic
        self.reliability, self.transport = reliability, transport
        self.window_s = float(window_s)
        self.counters = InputCounters()
        self.log = RateLimitedLog(interval_s=log_interval_s)
        self.gaps = StampGapDetector(pause_s=pause_s, window_s=window_s, rate_hz=rate_hz)
        self._problems: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ input side
    def reject_line(self, what: str, reason: str, now_s: float) -> str | None:
        """Return the WARN line for a rejected input, or None when rate-limited."""
        return self.log.line(f'rejected {what}: {reason}', now_s)

    def bad_stamp(self, what: str, topic: str, reason: str, now_s: float) -> str | None:
        """Count a message refused for its stamp; return its (rate-limited) WARN line,
        which names the topic."""
        with self._lock:
            self.counters.stamps_rejected += 1
            n = self.counters.stamps_rejected
            self._problems[f'stamp:{topic}'] = (
                now_s, f'{what} messages on {topic} are refused: {reason} ({n} messages with '
                'a bad stamp so far); fix the driver to stamp its messages')
        return self.reject_line(f'{what} on {topic}', reason, now_s)

    def count(self, name: str, problem: str | None = None, now_s: float = 0.0) -> None:
        """Add one to the counter ``name``; ``problem`` becomes a recent warning."""
        with self._lock:
            setattr(self.counters, name, getattr(self.counters, name) + 1)
            if problem is not None:
                self._problems[name] = (now_s, problem)

    def frame(self, stamp_ns: int, now_s: float) -> int:
        """Take a good colour frame's stamp; return the frames estimated lost before it."""
        with self._lock:
            return self.gaps.observe(stamp_ns, now_s)

    def set_rate(self, rate_hz: float) -> None:
        """Use the camera's known frame rate from now on (0: estimate it again)."""
        with self._lock:
            self.gaps.set_rate(rate_hz)

    # ------------------------------------------------------------------ report side
    def report(self, now_s: float) -> InputReport:
        """Return the counters, the loss estimate and the problems of the last window."""
        with self._lock:
            loss = self.gaps.report(now_s)
            counters = InputCounters(**self.counters.as_dict())
            for key, (when, _text) in list(self._problems.items()):
                if now_s - when > self.window_s:
                    del self._problems[key]
            warnings = [text for _when, text in self._problems.values()]
        if loss.recent_lost >= LOSS_MIN_FRAMES and loss.recent_ratio >= LOSS_WARN_RATIO:
            rate = f' at {1.0 / loss.period_s:.1f} Hz' if loss.period_s else ''
            warnings.insert(0, (
                f'about {100 * loss.recent_ratio:.0f} % of the frames on {self.image_topic} '
                f'were lost before the node ({loss.recent_lost} missing, '
                f'{loss.recent_received} received in the last {self.window_s:g} s; stamp '
                f'gaps{rate}): ' + loss_advice(self.reliability, self.transport)))
        return InputReport(counters, loss, warnings)
