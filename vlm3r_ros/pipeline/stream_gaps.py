"""Estimate frames lost before the node from gaps in the image stamps.

ROS 2 headers carry no sequence number, and a best-effort subscription never learns of a
sample that did not arrive (large raw images between processes are the usual victims:
Fast DDS drops a whole frame when one of its fragments is lost or its shared-memory
segment is full). What the node can see is the stamps: a camera stamps at a steady
period, so a stamp gap of k periods means k - 1 frames never arrived.

:class:`StampGapDetector` estimates the period as the approximate greatest common divisor
of recent stamp gaps (the largest period that nearly all recent gaps are near-whole
multiples of), so it finds the camera's period even when most frames are lost and no two
consecutive frames arrive. A stream without a steady period (irregular stamps) gets no
estimate and no loss is claimed. Gaps longer than ``pause_s`` are pauses (the stream goes
STALE), not losses; stamps going back (a looping bag, a restarted driver) start over.
Duplicate and slightly reordered stamps are ignored. Plain Python, not thread-safe (the
node calls it from its mutually exclusive ingest callbacks).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

NS = 1_000_000_000
# Candidate periods are the smallest recent gap divided by 1..MAX_DIVISOR (the smallest
# gap of 8+ recent ones is rarely more than 4 periods unless nearly everything is lost).
MAX_DIVISOR = 4
# A gap counts as a whole multiple of a period when within this fraction of one, and the
# gaps that fit may be off a whole multiple by at most MAX_MEAN_DEVIATION on average.
MULTIPLE_TOLERANCE = 0.2
MAX_MEAN_DEVIATION = 0.08
# Share of recent gaps that must be whole multiples for a period to be accepted.
MIN_FIT = 0.9
MIN_GAPS = 8  # gaps needed before any estimate (all must fit below FEW_GAPS)
FEW_GAPS = 16
MIN_PERIOD_NS = 1_000_000  # 1 kHz: faster 'periods' are jitter, not a camera


@dataclass(frozen=True)
class LossReport:
    """What the status and diagnostics say about frames lost before the node."""

    lost: int  # estimated frames lost in all
    recent_lost: int  # ... in the last window_s
    recent_received: int  # frames received in the last window_s
    period_s: float | None  # the stream's estimated period (None: not steady / unknown)

    @property
    def recent_ratio(self) -> float:
        """Return the estimated share of frames lost over the recent window (0..1)."""
        total = self.recent_lost + self.recent_received
        return self.recent_lost / total if total else 0.0


class StampGapDetector:
    """Count stamp gaps of a periodic stream as lost frames (see the module docstring)."""

    def __init__(self, pause_s: float = 3.0, window_s: float = 10.0, history: int = 64,
                 rate_hz: float = 0.0) -> None:
        """``pause_s``: longest gap counted as loss; ``window_s``: span of the recent
        ratio; ``history``: gaps the period is estimated from; ``rate_hz`` > 0: the
        camera's known frame rate, used instead of an estimate (heavy loss from the
        start leaves too few whole gaps to estimate from)."""
        self.pause_ns = int(pause_s * NS)
        self.nominal_ns = int(round(NS / rate_hz)) if rate_hz > 0 else None
        self.window_s = float(window_s)
        self._gaps: deque[int] = deque(maxlen=history)
        self._uncounted: list[int] = []  # gaps seen before the first period estimate
        self._last_ns: int | None = None
        self._period_ns: int | None = self.nominal_ns
        self._events: deque[tuple[float, int]] = deque()  # (arrival s, frames lost before)
        self.lost = 0
        self.resets = 0

    def set_rate(self, rate_hz: float) -> None:
        """Use a known frame rate from now on (0: estimate the period from the stamps)."""
        self.nominal_ns = int(round(NS / rate_hz)) if rate_hz > 0 else None
        self._period_ns = self.nominal_ns or estimate_period(list(self._gaps))

    @property
    def period_s(self) -> float | None:
        """Return the estimated period (s), None while unknown."""
        return None if self._period_ns is None else self._period_ns / NS

    def observe(self, stamp_ns: int, now_s: float) -> int:
        """Take the stamp of a frame received at ``now_s``; return the frames estimated
        lost right before it (0 when none or unknown)."""
        last = self._last_ns
        lost = 0
        if last is None or stamp_ns < last - self.pause_ns:
            if last is not None:
                self.resets += 1  # a new timeline: the old gaps say nothing about it
            self._gaps.clear()
            self._uncounted = []
            self._period_ns = self.nominal_ns
            self._last_ns = stamp_ns
        elif stamp_ns > last:
            gap = stamp_ns - last
            self._last_ns = stamp_ns
            if gap <= self.pause_ns:
                self._gaps.append(gap)
                had_period = self._period_ns is not None
                if self.nominal_ns is None and not (had_period and _fits(gap, self._period_ns)):
                    self._period_ns = estimate_period(list(self._gaps))
                if self._period_ns is None:
                    self._uncounted.append(gap)
                elif not had_period:
                    # First estimate: the gaps seen while learning count now.
                    lost = sum(_missing(g, self._period_ns) for g in self._uncounted + [gap])
                    self._uncounted = []
                else:
                    lost = _missing(gap, self._period_ns)
        # else: a duplicate or slightly older stamp; not a gap
        self.lost += lost
        self._events.append((now_s, lost))
        self._trim(now_s)
        return lost

    def report(self, now_s: float) -> LossReport:
        """Return the totals and the recent window's figures."""
        self._trim(now_s)
        recent_lost = sum(n for _t, n in self._events)
        return LossReport(self.lost, recent_lost, len(self._events), self.period_s)

    def _trim(self, now_s: float) -> None:
        while self._events and now_s - self._events[0][0] > self.window_s:
            self._events.popleft()


def _missing(gap_ns: int, period_ns: int) -> int:
    """Return the frames missing in a gap: whole periods in it minus one."""
    return max(int(round(gap_ns / period_ns)) - 1, 0)


def estimate_period(gaps_ns: list[int]) -> int | None:
    """Return the largest period that nearly all ``gaps_ns`` are whole multiples of.

    Candidates start from the smallest gap divided by 1..:data:`MAX_DIVISOR` and are
    refined by least squares over every gap (so the jitter of the smallest gap does not
    skew them); a candidate fits a gap when the gap is within :data:`MULTIPLE_TOLERANCE`
    of a whole multiple of it. Returns None with fewer than :data:`MIN_GAPS` gaps or when
    no candidate fits :data:`MIN_FIT` of them (no steady period).
    """
    if len(gaps_ns) < MIN_GAPS:
        return None
    smallest = min(gaps_ns)
    need = len(gaps_ns) if len(gaps_ns) < FEW_GAPS else MIN_FIT * len(gaps_ns)
    for divisor in range(1, MAX_DIVISOR + 1):
        period = smallest / divisor
        if period < MIN_PERIOD_NS:
            break
        for _ in range(2):
            period = _refine(gaps_ns, period)
        deviations = [abs(gap / period - round(gap / period)) for gap in gaps_ns]
        fitting = [d for d in deviations if d <= MULTIPLE_TOLERANCE]
        if len(fitting) >= need and sum(fitting) <= MAX_MEAN_DEVIATION * len(fitting):
            return int(round(period))
    return None


def _fits(gap_ns: int, period_ns: int) -> bool:
    """Return whether a gap is (nearly) a whole multiple of the period."""
    multiple = gap_ns / period_ns
    return abs(multiple - round(multiple)) <= MULTIPLE_TOLERANCE


def _refine(gaps_ns: list[int], period: float) -> float:
    """Return the least-squares period of the gaps taken as whole multiples of ``period``."""
    total_gap, total_multiple = 0.0, 0
    for gap in gaps_ns:
        multiple = max(round(gap / period), 1)
        total_gap += gap
        total_multiple += multiple
    return total_gap / total_multiple


def loss_advice(reliability: str, transport: str) -> str:
    """Return what to change when frames are lost before the node, for the image
    subscription's ``reliability`` ('best_effort'/'reliable') and ``transport``."""
    if reliability == 'best_effort':
        parts = ['with best_effort, a sample that does not arrive whole is gone']
        if transport == 'raw':
            parts.append('large raw images from another process need the Fast DDS '
                         'large-data settings in the publishing process (shared memory '
                         'segment larger than a frame: FASTDDS_DEFAULT_PROFILES_FILE='
                         'config/fastdds_large_data.xml, see README "Large images over DDS")')
        parts.append('or image_transport: compressed, or qos_reliability: reliable with a '
                     'reliable publisher')
        return '; '.join(parts)
    return ('the subscription is reliable, so frames are lost in the publisher or the '
            'subscription queue overflows: raise qos_depth or check the publisher')
