"""Timing, memory and hardware-ceiling helpers of ``benchmarks/gpu_realsize.py``.

On CUDA every measurement is taken with CUDA events after warm-up (the time between two
events recorded on the current stream, so queued work is counted and host-side gaps that
starve the GPU are counted too); on CPU with ``time.perf_counter``. The ceilings (a large
matrix product and a device-to-device copy) are measured in the same run as the stages they
bound, so the floors and the ratios to them come from one machine state.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Timing:
    """Milliseconds of repeated calls: per-call times and the loop's mean.

    ``loop_ms`` is the time of all ``len(times_ms)`` calls back to back divided by their
    number (throughput, the figure for a stream); ``median_ms`` the median of the per-call
    times (each call timed on its own).
    """

    times_ms: list[float]
    loop_ms: float
    clock: str

    @property
    def median_ms(self) -> float:
        """Median of the per-call times."""
        return statistics.median(self.times_ms)

    def to_json(self) -> dict[str, Any]:
        """Return the figures as plain numbers (rounded to microseconds)."""
        return {'median_ms': round(self.median_ms, 4), 'loop_ms': round(self.loop_ms, 4),
                'min_ms': round(min(self.times_ms), 4), 'max_ms': round(max(self.times_ms), 4),
                'n': len(self.times_ms), 'clock': self.clock}


class Clock:
    """Times callables on one device: CUDA events on a GPU, ``perf_counter`` elsewhere."""

    def __init__(self, device: torch.device) -> None:
        """Create a clock for ``device``."""
        self.device = device
        self.cuda = device.type == 'cuda'
        self.name = 'cuda_events' if self.cuda else 'perf_counter'

    def sync(self) -> None:
        """Wait for the device's queued work."""
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def once_ms(self, fn: Callable[[], object]) -> float:
        """Return the milliseconds one call of ``fn`` takes (device work included)."""
        return self.repeat(fn, 1, warmup=0).times_ms[0]

    def repeat(self, fn: Callable[[], object], n: int, warmup: int = 2) -> Timing:
        """Call ``fn`` ``warmup`` times untimed, then ``n`` times timed.

        Each call gets its own pair of marks and the loop is timed as a whole; nothing
        synchronises between the calls (a call that syncs by itself, such as a decode
        loop reading its token, still does).
        """
        for _ in range(warmup):
            fn()
        self.sync()
        if self.cuda:
            marks = [torch.cuda.Event(enable_timing=True) for _ in range(n + 1)]
            marks[0].record()
            for i in range(n):
                fn()
                marks[i + 1].record()
            marks[-1].synchronize()
            times = [marks[i].elapsed_time(marks[i + 1]) for i in range(n)]
            loop = marks[0].elapsed_time(marks[-1]) / n
        else:
            stamps = [time.perf_counter()]
            for _ in range(n):
                fn()
                stamps.append(time.perf_counter())
            times = [1000 * (stamps[i + 1] - stamps[i]) for i in range(n)]
            loop = 1000 * (stamps[-1] - stamps[0]) / n
        return Timing(times, loop, self.name)


class MemoryMeter:
    """Peak device memory of named stages (CUDA allocator counters; none on CPU)."""

    def __init__(self, device: torch.device) -> None:
        """Create a meter for ``device``."""
        self.device = device
        self.cuda = device.type == 'cuda'
        self.stages: dict[str, dict[str, float]] = {}

    def allocated_gib(self) -> float | None:
        """Return the memory held by live tensors now (GiB), or None on CPU."""
        return torch.cuda.memory_allocated(self.device) / 2 ** 30 if self.cuda else None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Record the peak allocated/reserved memory while the block runs under ``name``."""
        if not self.cuda:
            yield
            return
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        try:
            yield
        finally:
            torch.cuda.synchronize(self.device)
            self.stages[name] = {
                'allocated_before_gib': round(before / 2 ** 30, 4),
                'peak_allocated_gib': round(
                    torch.cuda.max_memory_allocated(self.device) / 2 ** 30, 4),
                'peak_reserved_gib': round(
                    torch.cuda.max_memory_reserved(self.device) / 2 ** 30, 4),
                'allocated_after_gib': round(torch.cuda.memory_allocated(self.device) / 2 ** 30,
                                             4),
            }

    def summary(self) -> dict[str, Any]:
        """Return every stage's figures and the largest peak over all stages."""
        peaks = [s['peak_allocated_gib'] for s in self.stages.values()]
        reserved = [s['peak_reserved_gib'] for s in self.stages.values()]
        return {'stages': self.stages,
                'peak_allocated_gib_all': max(peaks) if peaks else None,
                'peak_reserved_gib_all': max(reserved) if reserved else None}


# ------------------------------------------------------------------------------- ceilings
def matmul_rate(clock: Clock, dtype: torch.dtype, size: int, n: int = 10,
                warmup: int = 3) -> dict[str, Any]:
    """Return the measured dense matrix-product rate (FLOP/s) of ``size``^3 in ``dtype``.

    Random normal operands (zeros run faster on some chips and would overstate the
    ceiling); the mean over ``n`` products after ``warmup``.
    """
    gen = torch.Generator(device=clock.device).manual_seed(0)
    a = torch.randn(size, size, device=clock.device, dtype=dtype, generator=gen)
    b = torch.randn(size, size, device=clock.device, dtype=dtype, generator=gen)
    out = torch.empty(size, size, device=clock.device, dtype=dtype)
    timing = clock.repeat(lambda: torch.matmul(a, b, out=out), n, warmup)
    flops = 2.0 * size ** 3
    del a, b, out
    return {'dtype': str(dtype).replace('torch.', ''), 'size': size,
            'flop_per_s': flops / (timing.loop_ms / 1000), 'ms': round(timing.loop_ms, 4)}


def copy_bandwidth(clock: Clock, nbytes: int, n: int = 10, warmup: int = 3) -> dict[str, Any]:
    """Return the measured copy bandwidth (bytes read + written per second) of ``nbytes``."""
    src = torch.empty(nbytes // 2, device=clock.device, dtype=torch.float16).normal_()
    dst = torch.empty_like(src)
    timing = clock.repeat(lambda: dst.copy_(src), n, warmup)
    moved = 2.0 * src.numel() * src.element_size()
    del src, dst
    return {'bytes_copied': int(moved // 2), 'bytes_per_s': moved / (timing.loop_ms / 1000),
            'ms': round(timing.loop_ms, 4)}


# ------------------------------------------------------------------------------- counting
def count_flops(fn: Callable[[], object]) -> int | None:
    """Return the FLOPs PyTorch's ``FlopCounterMode`` counts for one call of ``fn``.

    Matrix products, convolutions and scaled-dot-product attention are counted (attention
    as dense, i.e. a causal mask is not halved); elementwise work is not. None when the
    counter fails on this torch version.
    """
    try:
        from torch.utils.flop_counter import FlopCounterMode
        with FlopCounterMode(display=False) as counter:
            fn()
        return int(counter.get_total_flops())
    except Exception:  # noqa: BLE001 - a counting aid, never a reason to stop the run
        return None


def module_bytes(module: torch.nn.Module) -> int:
    """Return the bytes of a module's parameters and persistent buffers."""
    total = sum(p.numel() * p.element_size() for p in module.parameters())
    return total + sum(b.numel() * b.element_size() for b in module.buffers())


def floor_ms(flops: float | None, nbytes: float | None, ceilings: dict[str, Any],
             dtype: str) -> dict[str, Any]:
    """Return the floor of a piece of work: max(FLOPs / matmul rate, bytes / copy bandwidth).

    ``dtype`` picks the matmul rate measured for that dtype (float32 work uses the float32
    rate). Either part may be None (unknown); the floor is then the other part.
    """
    rate = ceilings.get('matmul', {}).get(dtype, {}).get('flop_per_s')
    bandwidth = ceilings.get('copy', {}).get('bytes_per_s')
    compute = 1000 * flops / rate if flops and rate else None
    memory = 1000 * nbytes / bandwidth if nbytes and bandwidth else None
    parts = [x for x in (compute, memory) if x is not None]
    return {'flops': flops, 'bytes': nbytes,
            'compute_floor_ms': None if compute is None else round(compute, 5),
            'memory_floor_ms': None if memory is None else round(memory, 5),
            'floor_ms': round(max(parts), 5) if parts else None,
            'bound': (None if not parts else
                      'compute' if compute is not None and compute == max(parts) else 'memory')}


def ratio(measured_ms: float | None, floor: dict[str, Any]) -> float | None:
    """Return measured / floor (>= 1 when the floor holds), or None when either is unknown."""
    value = floor.get('floor_ms')
    if measured_ms is None or not value:
        return None
    return round(measured_ms / value, 3)
