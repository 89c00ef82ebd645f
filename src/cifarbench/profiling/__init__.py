"""Inference profiling that a performance engineer would trust (stage ``profile``).

Per model and variant (fp32 / autocast, contiguous / channels_last, eager / ``torch.compile``):
a batch-size sweep with warm-up and synchronised timed steps (median, IQR, images/s; OOM backs
off to the next smaller size, as in timm's ``benchmark.py``), batch-1 latency as a
distribution (p50/p90/p99, MLPerf single-stream style), allocator or RSS memory peaks per
configuration, and FLOPs from ``FlopCounterMode``. The headline variant is the fastest correct
variant at the largest batch size that ran; see :mod:`cifarbench.profiling.profiler`.
Seams: ``timing``, ``memory``, ``flops``, ``variants``, ``sweep``, ``profiler``.
"""

from cifarbench.profiling.flops import forward_flops_per_image, train_flops_per_image
from cifarbench.profiling.memory import (
    MemoryReading,
    file_mb,
    host_peak_rss_mb,
    host_rss_mb,
    is_oom,
    param_memory_mb,
    track_memory,
)
from cifarbench.profiling.profiler import (
    ProfileError,
    ProfileResult,
    VariantResult,
    choose_headline,
    profile_model,
)
from cifarbench.profiling.sweep import BatchPoint, Sweep, measure_batch, measure_latency, sweep_batch_sizes
from cifarbench.profiling.timing import StepTimes, latency_summary_ms, percentile, time_steps
from cifarbench.profiling.variants import (
    AutocastInactiveError,
    Variant,
    assert_autocast_active,
    plan_variants,
)

__all__ = [
    "AutocastInactiveError", "BatchPoint", "MemoryReading", "ProfileError", "ProfileResult",
    "StepTimes", "Sweep", "Variant", "VariantResult", "assert_autocast_active", "choose_headline",
    "file_mb", "forward_flops_per_image", "host_peak_rss_mb", "host_rss_mb", "is_oom",
    "latency_summary_ms", "measure_batch", "measure_latency", "param_memory_mb", "percentile",
    "plan_variants", "profile_model", "sweep_batch_sizes", "time_steps", "track_memory",
    "train_flops_per_image",
]
