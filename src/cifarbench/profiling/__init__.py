"""Measurement (stage ``profile``, and the training stage's step breakdown).

Per model and variant (fp32 / tf32 / autocast, contiguous / channels_last, eager /
``torch.compile``): a batch-size sweep with warm-up and synchronised timed steps (median, IQR,
images/s; OOM backs off to the next smaller size, as in timm's ``benchmark.py``), batch-1
latency as a distribution (p50/p90/p99, MLPerf single-stream style), allocator or RSS memory
peaks per configuration, and FLOPs from ``FlopCounterMode``. The headline variant is the fastest
correct variant at the largest batch size that ran; see :mod:`cifarbench.profiling.profiler`.
Seams (import them directly): ``timing``, ``memory``, ``flops``, ``variants``, ``sweep``,
``profiler``, ``breakdown``.
"""
