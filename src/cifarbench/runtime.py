"""The one place that decides device, precision and threads, and describes the environment.

``device: auto`` picks CUDA when present (and says so on stderr). ``precision: auto`` means
bf16 autocast on a GPU that supports it, else fp16 autocast with a GradScaler; on CPU it means
bf16 autocast when the CPU has native bf16 (AVX512-BF16 or AMX), else fp32. "fp32" means IEEE
fp32: TF32 matmuls and convolutions stay off unless a measurement asks for them by name
(:func:`tf32`, the profile's ``tf32`` variant). Every metrics file records :func:`environment`
so a number is never separated from where it was measured.
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


def resolve_runtime(device: str = "auto", precision: str = "auto", threads: int | None = None,
                    *, log: TextIO = sys.stderr) -> Runtime:
    """Turn the ``device``/``precision``/``threads`` params into a :class:`Runtime`."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        where = torch.cuda.get_device_name(0) if device == "cuda" else _cpu_model_name()
        print(f"device: auto -> {device} ({where})", file=log)
    elif device == "cuda" and not torch.cuda.is_available():
        raise UserError("params.yaml: device = 'cuda' but no CUDA device is available "
                           "(allowed: auto, cpu, cuda; use auto or cpu on this machine)")
    dev = torch.device(device)
    if threads is not None and dev.type == "cpu":
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
    """Flat description of where a measurement was taken (recorded in every metrics file)."""
    name = torch.cuda.get_device_name(rt.device) if rt.device.type == "cuda" else _cpu_model_name()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
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
        "host_load_1m": load,
        "oversubscribed": load is not None and load > (os.cpu_count() or 1) + 0.5,
    }


def _cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"
