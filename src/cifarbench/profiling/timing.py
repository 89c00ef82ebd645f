"""Wall-clock timing of one repeated step: warm-up, synchronised timed steps, robust statistics.

Follows timm's ``benchmark.py`` (warm-up, then timed steps with a device synchronise on each
side) and ``torch.utils.benchmark`` (report the median and the inter-quartile range, not the
mean, because a few slow steps from the OS or the allocator skew a mean). A per-configuration
time cap keeps slow CPU configurations bounded: fewer timed steps, never fewer than three.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_TIMED_ITERS = 3  # the fewest steps a median and an IQR are reported from


@dataclass(frozen=True)
class StepTimes:
    """Per-step wall times of one configuration, in seconds."""

    times_s: list[float]  # timed steps only, in the order they ran
    warmup_iters: int  # warm-up steps actually run (the cap may cut them short)
    first_call_s: float | None  # the first warm-up step: carries cudnn autotuning / compilation
    total_s: float  # warm-up plus timed steps

    @property
    def median_s(self) -> float:
        return percentile(self.times_s, 50)

    @property
    def iqr_s(self) -> float:
        return percentile(self.times_s, 75) - percentile(self.times_s, 25)


def _noop() -> None:
    pass


def time_steps(step: Callable[[], Any], *, warmup_iters: int, iters: int,
               max_seconds: float = math.inf, min_iters: int = MIN_TIMED_ITERS,
               synchronize: Callable[[], None] = _noop,
               clock: Callable[[], float] = time.perf_counter) -> StepTimes:
    """Run ``step`` ``warmup_iters`` times untimed, then time up to ``iters`` calls.

    ``synchronize`` runs before and after every step so that asynchronous (CUDA) work is
    inside the interval it belongs to. ``max_seconds`` caps the configuration from the end of
    the first warm-up step (a one-off: autotuning, compilation): warm-up stops once a quarter
    of it is spent, and timing stops before a step that would cross it, but never before
    ``min(iters, min_iters)`` timed steps.
    """
    begin = start = clock()
    first_call_s: float | None = None
    warm = 0
    while warm < warmup_iters:
        synchronize()
        t0 = clock()
        step()
        synchronize()
        if first_call_s is None:
            first_call_s = clock() - t0
            start = clock()
        warm += 1
        if clock() - start >= max_seconds / 4:
            break

    times: list[float] = []
    floor = min(iters, min_iters)
    while len(times) < iters:
        synchronize()
        t0 = clock()
        step()
        synchronize()
        t1 = clock()
        times.append(t1 - t0)
        # Stop before the next step would cross the cap; the last step predicts the next.
        if len(times) >= floor and (t1 - start) + times[-1] > max_seconds:
            break
    return StepTimes(times_s=times, warmup_iters=warm, first_call_s=first_call_s,
                     total_s=clock() - begin)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear interpolation between order statistics.

    The same definition as ``numpy.percentile``'s default and ``torch.quantile``: for n
    sorted values, rank ``q/100 * (n-1)``, interpolated.
    """
    if len(values) == 0:
        raise ValueError("percentile of an empty sequence")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def latency_summary_ms(times_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/mean of per-run latencies, converted from seconds to milliseconds."""
    ms = [t * 1e3 for t in times_s]
    return {"p50": percentile(ms, 50), "p90": percentile(ms, 90), "p99": percentile(ms, 99),
            "mean": float(np.mean(ms))}
