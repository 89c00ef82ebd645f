"""The one place that decides device, precision and threads, and describes the environment.

``device: auto`` picks CUDA when present (and says so on stderr). ``precision: auto`` means
bf16 autocast on a GPU that supports it, else fp16 autocast with a GradScaler; on CPU it means
bf16 autocast when the CPU has native bf16 (AVX512-BF16 or AMX), else fp32. "fp32" means IEEE
fp32: TF32 matmuls and convolutions stay off unless a measurement asks for them by name
(:func:`tf32`, the profile's ``tf32`` variant). Every metrics file records :func:`environment`
so a number is never separated from where it was measured, including how busy the host was
(:func:`host_load`, :func:`check_host_load`): parallel queue workers (``dvc queue start -j 2``)
that each use every core slow each other down without any error.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

import torch

from cifarbench.errors import UserError

# The name of each compute dtype in params.yaml (``precision``), metrics files and cache folders.
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # None = plain fp32

    @property
    def dtype_name(self) -> str:
        return DTYPE_NAMES[torch.float32 if self.amp_dtype is None else self.amp_dtype]

    @property
    def needs_grad_scaler(self) -> bool:
        return self.amp_dtype is torch.float16

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for this runtime (a no-op in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def cpu_has_native_bf16() -> bool:
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_runtime(device: str, precision: str, threads: int | None, *,
                    log: TextIO = sys.stderr) -> Runtime:
    """Turn the ``device``/``precision``/``threads`` params into a :class:`Runtime`.

    A setting this machine cannot honour raises :class:`UserError` with one line naming the
    key, the value and what is available, before any work (the schema has already refused
    values that are wrong everywhere, such as ``threads: 0`` or ``device: tpu``)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        where = torch.cuda.get_device_name(0) if device == "cuda" else _cpu_model_name()
        print(f"device: auto -> {device} ({where})", file=log)
    elif device == "cuda" and not torch.cuda.is_available():
        raise UserError("params.yaml: device = 'cuda' but no CUDA device is available "
                        "(allowed: auto, cpu, cuda; use auto or cpu on this machine)")
    dev = torch.device(device)
    cores = available_cores()
    if threads is not None and threads > cores:
        # More threads than cores oversubscribes the CPU by construction: every time is slower
        # and noisier than the hardware allows, so refuse rather than warn.
        raise UserError(f"params.yaml: threads = {threads} but this process may use only "
                        f"{cores} CPU core(s) (allowed here: null or 1 to {cores})")
    if threads is not None:
        # On CUDA too: the host side (input pipeline, launches) of parallel queue workers
        # competes for the same cores.
        torch.set_num_threads(threads)

    amp: torch.dtype | None
    if precision == "auto":
        if dev.type == "cuda":
            amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            amp = torch.bfloat16 if cpu_has_native_bf16() else None
    else:
        dtype = next(dt for dt, name in DTYPE_NAMES.items() if name == precision)
        amp = None if dtype is torch.float32 else dtype
        if amp is torch.float16 and dev.type == "cpu":
            raise UserError("params.yaml: precision = 'fp16' is not supported on CPU "
                            "(allowed there: auto, fp32, bf16)")
        # The same test torch.autocast applies; it would refuse bf16 only at the first step.
        if amp is torch.bfloat16 and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError(f"params.yaml: precision = 'bf16' is not supported on "
                            f"{torch.cuda.get_device_name(dev)} (allowed there: auto, fp32, "
                            "fp16)")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    set_tf32(False)
    return Runtime(device=dev, amp_dtype=amp)


def set_tf32(enabled: bool) -> None:
    """TF32 (10-bit mantissa) for fp32 matmuls and convolutions on CUDA, on or off.

    PyTorch 2.9+ has per-backend ``fp32_precision`` settings and refuses a mix of those with
    the legacy ``allow_tf32`` flags, so use the new ones where they exist. On CPU both are
    inert; setting them keeps the recorded state true everywhere."""
    mode = "tf32" if enabled else "ieee"
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.conv.fp32_precision = mode  # type: ignore[attr-defined]  # 2.9+, not in the stubs
    else:  # pragma: no cover - torch < 2.9
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def tf32_enabled() -> bool:
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        return torch.backends.cuda.matmul.fp32_precision == "tf32"
    return bool(torch.backends.cuda.matmul.allow_tf32)  # pragma: no cover - torch < 2.9


@contextlib.contextmanager
def tf32(enabled: bool = True) -> Iterator[None]:
    """Run the block with TF32 on (or off) and restore the previous setting."""
    before = tf32_enabled()
    set_tf32(enabled)
    try:
        yield
    finally:
        set_tf32(before)


# The inductor cache folder this process started with (the user's, or None for the default).
_INDUCTOR_CACHE_BASE = os.environ.get("TORCHINDUCTOR_CACHE_DIR")


def isolate_compile_cache(rt: Runtime) -> str:
    """Give each precision its own ``torch.compile`` on-disk cache; returns the folder.

    torch 2.11's FX-graph and AOTAutograd cache keys leave out the autocast dtype: on an H200, a
    graph compiled under bf16 autocast was served, in a later process, to a model compiled under
    fp16 autocast, whose gradients then differed from eager fp16 by 0.30 (relative L2; 0.0027
    with the caches off). Separate folders keep the caches' speed without that mix-up."""
    if _INDUCTOR_CACHE_BASE is not None:
        base = _INDUCTOR_CACHE_BASE
    else:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir  # private, stable
        base = default_cache_dir()
    folder = os.path.join(base, f"cifarbench-{rt.device.type}-{rt.dtype_name}")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
    return folder


def environment(rt: Runtime) -> dict:
    """Flat description of where a measurement was taken (recorded in every metrics file).

    The load fields (``threads``, ``host_load_1m``, ``oversubscribed``) are sampled now; a
    caller that sampled them around the timed work (:func:`watch_host_load`) overrides them."""
    name = torch.cuda.get_device_name(rt.device) if rt.device.type == "cuda" else _cpu_model_name()
    return {
        "device": rt.device.type,
        "device_name": name,
        "dtype": rt.dtype_name,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda if rt.device.type == "cuda" else None,
        "tf32": tf32_enabled() if rt.device.type == "cuda" else False,
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python_version": platform.python_version(),
        **host_load(),
    }


# ------------------------------------------------------------------------------- host load
#
# os.getloadavg()[0] is the kernel's exponentially damped (time constant one minute) average
# of the number of runnable threads, plus those in uninterruptible (disk) sleep, on the whole
# host. It counts threads, not processes: a torch process computing on N intra-op threads adds
# up to N, so this process's own expected contribution is ``threads``. Demand on the cores is
# then this process's threads plus everyone else's, max(0, load - threads); the host is
# oversubscribed when that demand exceeds the cores this process may run on by more than a
# margin for background noise (one thread, or 10% of the cores on large hosts).
#
# Without other work the load is at most ``threads`` <= cores, so a process alone never flags
# itself. The average lags: a run that starts together with another one (two queue workers)
# does not see it yet, so callers check at the start and again at the end of the timed work
# (:func:`watch_host_load`). Where the host has more cores than this process's CPU set (a
# pinned container), load on the other cores also counts: the flag errs towards a warning.


def available_cores() -> int:
    """CPU cores this process may run on: its affinity mask where the OS has one, else all."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def load_average_1m() -> float | None:
    """The host's 1-minute load average; None where the OS has none (Windows)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def is_oversubscribed(load_1m: float | None, *, threads: int, cores: int) -> bool:
    """Whether this process's ``threads`` plus the rest of ``load_1m`` exceed ``cores`` (above)."""
    if load_1m is None:
        return False
    others = max(0.0, load_1m - threads)
    return others + threads > cores + max(1.0, 0.1 * cores)


def host_load() -> dict:
    """``threads`` (torch's, in use now), ``host_load_1m`` and ``oversubscribed``, sampled now."""
    threads, load = torch.get_num_threads(), load_average_1m()
    return {"threads": threads, "host_load_1m": load,
            "oversubscribed": is_oversubscribed(load, threads=threads, cores=available_cores())}


def check_host_load(rt: Runtime, *, what: str, log: TextIO = sys.stderr) -> dict:
    """:func:`host_load`, plus one warning line on ``log`` when the host is oversubscribed.

    ``what`` names the timed work ("train@cnn run 0"). Cheap (two system calls); nothing else
    changes. Callers merge the returned fields into their metrics."""
    load = host_load()
    if load["oversubscribed"]:
        print(oversubscribed_warning(rt, what=what, load=load), file=log)
    return load


def oversubscribed_warning(rt: Runtime, *, what: str, load: dict) -> str:
    return (f"warning: host oversubscribed while timing {what} on {rt.device.type}: 1-minute "
            f"load {load['host_load_1m']:.1f} on {available_cores()} cores, {load['threads']} "
            "torch threads in this process; times and throughput will read slow. Use fewer "
            "threads (-S threads=N) or fewer queue workers (dvc queue start -j N) so that "
            "workers x threads <= cores")


def worst_load(*samples: dict) -> dict:
    """One record of several :func:`host_load` samples: the highest load, oversubscribed if any
    sample was, and the threads of the last sample."""
    loads = [s["host_load_1m"] for s in samples if s["host_load_1m"] is not None]
    return {"threads": samples[-1]["threads"], "host_load_1m": max(loads, default=None),
            "oversubscribed": any(s["oversubscribed"] for s in samples)}


@contextlib.contextmanager
def watch_host_load(rt: Runtime, *, what: str, log: TextIO = sys.stderr) -> Iterator[dict]:
    """Check the host load before and after the block; yields a dict that holds, after the
    block, :func:`worst_load` of the two samples. Warns at most once."""
    start = check_host_load(rt, what=what, log=log)
    record = dict(start)
    yield record
    end = host_load()
    if end["oversubscribed"] and not start["oversubscribed"]:
        print(oversubscribed_warning(rt, what=what, load=end), file=log)
    record.update(worst_load(start, end))


def _cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"
