"""Memory as the allocator and the kernel see it, never as nvidia-smi does.

On CUDA the caching allocator's own counters: ``reset_peak_memory_stats()`` before a
configuration, ``max_memory_allocated()`` (tensors) and ``max_memory_reserved()`` (what the
cache holds from the driver) after it. On the host, the kernel's resident-set high-water mark
(``getrusage().ru_maxrss``: KiB on Linux, bytes on macOS), reset per configuration through
``/proc/self/clear_refs`` where Linux allows it (otherwise it is the process-lifetime peak and
the result says so), plus the current RSS from psutil before and after. All sizes are MiB
(2**20 bytes).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import resource
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch
from torch import nn

MIB = 2**20


@dataclass
class MemoryReading:
    """Memory of one configuration (filled in when its ``track_memory`` block exits)."""

    kind: str  # "cuda_max_allocated" | "host_peak_rss"
    peak_mb: float = 0.0  # max allocated (CUDA) or peak RSS of the process (host)
    reserved_mb: float | None = None  # CUDA: max reserved by the caching allocator
    rss_before_mb: float | None = None  # host: current RSS before the configuration
    rss_after_mb: float | None = None  # host: current RSS after it
    peak_is_per_config: bool = True  # False: the host peak could not be reset (lifetime peak)

    @property
    def rss_increase_mb(self) -> float | None:
        """Host: what the configuration added to the RSS high-water mark above its start."""
        if self.rss_before_mb is None:
            return None
        return max(0.0, self.peak_mb - self.rss_before_mb)


@contextlib.contextmanager
def track_memory(device: torch.device) -> Iterator[MemoryReading]:
    """Peak memory of the block: allocator counters on CUDA, RSS high-water mark on the host."""
    # Hand cached memory back first: a peak reset only lowers the mark to what is held now,
    # and what an earlier, larger configuration left cached would otherwise count here.
    release_memory(device)
    if device.type == "cuda":
        reading = MemoryReading(kind="cuda_max_allocated")
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield reading
        torch.cuda.synchronize(device)
        reading.peak_mb = torch.cuda.max_memory_allocated(device) / MIB
        reading.reserved_mb = torch.cuda.max_memory_reserved(device) / MIB
        return
    reading = MemoryReading(kind="host_peak_rss")
    reading.peak_is_per_config = reset_host_peak_rss()
    reading.rss_before_mb = host_rss_mb()
    yield reading
    reading.rss_after_mb = host_rss_mb()
    reading.peak_mb = host_peak_rss_mb()


def host_rss_mb() -> float:
    return psutil.Process().memory_info().rss / MIB


def host_peak_rss_mb() -> float:
    """The RSS high-water mark of this process (since start, or since the last reset)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def reset_host_peak_rss() -> bool:
    """Reset the RSS high-water mark to the current RSS (Linux >= 4.0); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def is_oom(exc: BaseException) -> bool:
    """An allocation failure we can back off from (CUDA OOM, or the CPU allocator's refusal)."""
    if isinstance(exc, torch.OutOfMemoryError):  # == torch.cuda.OutOfMemoryError
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


def release_memory(device: torch.device) -> None:
    """Return cached blocks (CUDA caching allocator, glibc heap) so the next configuration
    starts clean: after an OOM, and before every memory window."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif _libc is not None:
        _libc.malloc_trim(0)  # glibc keeps freed heap pages resident until trimmed


def _load_glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 - musl has no malloc_trim
        return libc
    except (OSError, AttributeError):
        return None


_libc = _load_glibc()


def param_memory_mb(model: nn.Module) -> float:
    """Bytes held by parameters and buffers (e.g. BatchNorm running statistics), in MiB."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) / MIB


def file_mb(path: str | Path) -> float:
    return os.path.getsize(path) / MIB
