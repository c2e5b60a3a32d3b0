"""Rate-limited warnings: each reason at most once per interval, and a cap on them all.

A bad input repeated at camera rate must not write 30 log lines a second, and a stream
of ever-different bad inputs must not flood the log either; but a reason seen for the
first time, or again after a quiet interval, must be logged, however many reasons came
before (a fixed "first 100 distinct reasons" set goes silent for good once full).

:class:`RateLimitedLog` decides; the caller logs. Each reason (the exact text) is logged
at most once per ``interval_s``; the line that ends a quiet spell says how many were
held back meanwhile. On top, at most ``max_lines`` lines per ``interval_s`` go out over
all reasons, so many distinct reasons cannot flood either. Reasons are remembered in a
bounded LRU table. Thread-safe; plain Python.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

# A log line quotes at most this much of a reason.
MAX_LINE_CHARS = 500


@dataclass
class _Entry:
    last_s: float
    held: int = 0


class RateLimitedLog:
    """Decide which warnings to log (see the module docstring)."""

    def __init__(self, interval_s: float = 5.0, max_lines: int = 40,
                 max_reasons: int = 1024) -> None:
        """Each reason once per ``interval_s``; ``max_lines`` lines per interval in all."""
        self.interval_s = float(interval_s)
        self.max_lines = int(max_lines)
        self.max_reasons = int(max_reasons)
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._window_start = float('-inf')
        self._window_lines = 0
        self._lock = threading.Lock()
        self.suppressed = 0  # lines held back in all (for tests and diagnostics)

    def line(self, reason: str, now_s: float) -> str | None:
        """Return the line to log for ``reason`` now, or None to stay quiet.

        The line is ``reason`` (clipped to :data:`MAX_LINE_CHARS`), followed by
        '(N more since the last report)' when occurrences were held back.
        """
        with self._lock:
            entry = self._entries.get(reason)
            if entry is not None and now_s - entry.last_s < self.interval_s:
                entry.held += 1
                self.suppressed += 1
                return None
            if now_s - self._window_start >= self.interval_s:
                self._window_start, self._window_lines = now_s, 0
            if self._window_lines >= self.max_lines:
                if entry is not None:
                    entry.held += 1  # reported with this reason's next line
                self.suppressed += 1
                return None
            self._window_lines += 1
            held = entry.held if entry is not None else 0
            self._entries[reason] = _Entry(now_s)
            self._entries.move_to_end(reason)
            while len(self._entries) > self.max_reasons:
                self._entries.popitem(last=False)
        text = reason if len(reason) <= MAX_LINE_CHARS else \
            reason[:MAX_LINE_CHARS] + f'... ({len(reason)} characters)'
        if held:
            text += f' ({held} more since the last report)'
        return text
