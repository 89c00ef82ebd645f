"""One variant of one model, measured: throughput over a batch-size sweep, latency at batch 1.

The sweep goes from the largest batch size down. A size that runs out of memory is recorded as
failed and the sweep backs off to the next smaller untried size (timm's ``decay_batch_step``
idea, restricted to the sizes the params list), so one OOM never ends the profile. Each
configuration gets its own warm-up (cuDNN autotunes per shape), its own memory peak and its own
time cap. Latency is a separate measurement of many batch-1 runs; throughput is never derived
from it.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import TextIO

import torch

from cifarbench.profiling.memory import MemoryReading, is_oom, release_memory, track_memory
from cifarbench.profiling.timing import StepTimes, time_steps
from cifarbench.profiling.variants import Variant, assert_autocast_active, prepare_input
from cifarbench.runtime import Runtime

Forward = Callable[[torch.Tensor], torch.Tensor]
MakeInput = Callable[[int], torch.Tensor]  # batch size -> (B, C, H, W) on the device


@dataclass(frozen=True)
class BatchPoint:
    """Throughput of one batch size."""

    batch_size: int
    times: StepTimes
    memory: MemoryReading

    @property
    def step_ms_median(self) -> float:
        return self.times.median_s * 1e3

    @property
    def step_ms_iqr(self) -> float:
        return self.times.iqr_s * 1e3

    @property
    def throughput_img_s(self) -> float:
        return self.batch_size / self.times.median_s

    @property
    def first_call_overhead_s(self) -> float:
        """How much slower the first warm-up step was than a steady one (autotune/compile)."""
        if self.times.first_call_s is None:
            return 0.0
        return max(0.0, self.times.first_call_s - self.times.median_s)

    def row(self) -> dict[str, float | int]:
        """One row of ``plots/throughput/NAME.csv``."""
        return {"batch_size": self.batch_size, "throughput_img_s": self.throughput_img_s,
                "step_ms_median": self.step_ms_median, "step_ms_iqr": self.step_ms_iqr,
                "peak_memory_mb": self.memory.peak_mb}


@dataclass
class Sweep:
    points: list[BatchPoint] = field(default_factory=list)  # ascending batch size
    failed: list[int] = field(default_factory=list)  # ascending; ran out of memory

    @property
    def best(self) -> BatchPoint:
        return max(self.points, key=lambda p: p.throughput_img_s)

    def at(self, batch_size: int) -> BatchPoint | None:
        return next((p for p in self.points if p.batch_size == batch_size), None)


@contextlib.contextmanager
def inference_region(variant: Variant, device_type: str) -> Iterator[None]:
    """``inference_mode`` plus the variant's autocast, proven active before anything is timed."""
    with torch.inference_mode(), variant.autocast(device_type):
        if variant.amp_dtype is not None:
            assert_autocast_active(device_type, variant.amp_dtype)
        yield


def measure_batch(fn: Forward, make_input: MakeInput, batch_size: int, *, variant: Variant,
                  runtime: Runtime, warmup_iters: int, iters: int,
                  max_seconds: float = math.inf) -> BatchPoint:
    """Time ``fn`` on one batch size; the input is created inside the memory window."""
    with track_memory(runtime.device) as mem:
        x = prepare_input(make_input(batch_size), variant)
        with inference_region(variant, runtime.device.type):
            times = time_steps(partial(fn, x), warmup_iters=warmup_iters, iters=iters,
                               max_seconds=max_seconds, synchronize=runtime.synchronize)
        del x
    return BatchPoint(batch_size=batch_size, times=times, memory=mem)


def sweep_batch_sizes(fn: Forward, make_input: MakeInput, batch_sizes: list[int], *,
                      variant: Variant, runtime: Runtime, warmup_iters: int, iters: int,
                      max_seconds: float = math.inf, log: TextIO = sys.stderr) -> Sweep:
    """Throughput at every batch size, largest first, backing off past the ones that OOM."""
    sweep = Sweep()
    for bs in sorted(set(batch_sizes), reverse=True):
        point: BatchPoint | None = None
        try:
            point = measure_batch(fn, make_input, bs, variant=variant, runtime=runtime,
                                  warmup_iters=warmup_iters, iters=iters, max_seconds=max_seconds)
        except Exception as exc:
            if not is_oom(exc):
                raise
        if point is None:
            # Outside the except block, so the traceback (and the tensors its frames hold)
            # is gone before the allocator cache is emptied.
            release_memory(runtime.device)
            sweep.failed.append(bs)
            print(f"profile: {variant.name} batch {bs}: out of memory; backing off", file=log)
            continue
        sweep.points.append(point)
        print(f"profile: {variant.name} batch {bs}: {point.throughput_img_s:.1f} img/s "
              f"(median {point.step_ms_median:.3g} ms, IQR {point.step_ms_iqr:.3g} ms, "
              f"{len(point.times.times_s)} iters, peak {point.memory.peak_mb:.0f} MiB)", file=log)
    sweep.points.sort(key=lambda p: p.batch_size)
    sweep.failed.sort()
    return sweep


def measure_latency(fn: Forward, make_input: MakeInput, *, variant: Variant, runtime: Runtime,
                    warmup_iters: int, runs: int) -> StepTimes:
    """``runs`` synchronised batch-1 forward passes (no time cap: the count is the contract)."""
    x = prepare_input(make_input(1), variant)
    with inference_region(variant, runtime.device.type):
        return time_steps(lambda: fn(x), warmup_iters=warmup_iters, iters=runs,
                          synchronize=runtime.synchronize)
