"""The ways one trained model is run for inference: precision, memory layout, compilation.

A :class:`Variant` is fp32 (IEEE), tf32 (fp32 storage, TF32 matmuls and convolutions: CUDA
only) or autocast (the runtime's low-precision dtype; bf16 on CPU),
contiguous or channels_last (only for models with Conv2d layers, where cuDNN/oneDNN have NHWC
kernels), eager or ``torch.compile``. Autocast can silently do nothing (wrong device type,
disabled by an outer context, an op list that excludes the layer), so every autocast
measurement first proves, inside the very region it times, that a linear layer really returns
the low-precision dtype (:func:`assert_autocast_active`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cifarbench.config import ProfileConfig
from cifarbench.models import has_conv
from cifarbench.runtime import DTYPE_NAMES, Runtime, tf32


class AutocastInactiveError(RuntimeError):
    """Autocast was requested but ops still run in fp32."""


@dataclass(frozen=True)
class Variant:
    amp_dtype: torch.dtype | None  # None = fp32
    channels_last: bool = False
    compile: bool = False
    tf32: bool = False  # fp32 with TF32 tensor-core maths (amp_dtype must be None)

    @property
    def dtype_name(self) -> str:
        if self.amp_dtype is None:
            return "tf32" if self.tf32 else "fp32"
        return DTYPE_NAMES[self.amp_dtype]

    @property
    def layout(self) -> str:
        return "channels_last" if self.channels_last else "contiguous"

    @property
    def compile_mode(self) -> str:
        return "default" if self.compile else "none"

    @property
    def name(self) -> str:
        """E.g. ``fp32``, ``autocast-bf16/channels_last``, ``fp32/compile``."""
        parts = [self.dtype_name if self.amp_dtype is None else f"autocast-{self.dtype_name}"]
        if self.channels_last:
            parts.append("channels_last")
        if self.compile:
            parts.append("compile")
        return "/".join(parts)

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device_type, dtype=self.amp_dtype)


def autocast_dtype(runtime: Runtime) -> torch.dtype:
    """The runtime's amp dtype; if it runs fp32, the usual one for the device."""
    if runtime.amp_dtype is not None:
        return runtime.amp_dtype
    if runtime.device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def plan_variants(model: nn.Module, cfg: ProfileConfig, runtime: Runtime) -> list[Variant]:
    """Every combination the profile asks for, fp32 contiguous eager first (the reference)."""
    # (amp dtype, tf32); TF32 exists on CUDA only, so a CPU run measures fp32 and autocast.
    precisions = [(None, p == "tf32") if p in ("fp32", "tf32") else (autocast_dtype(runtime), False)
                  for p in cfg.precisions if p != "tf32" or runtime.device.type == "cuda"]
    layouts = [False, True] if cfg.channels_last and has_conv(model) else [False]
    compiles = [False, True] if cfg.compile else [False]
    out: list[Variant] = []
    for c in compiles:
        for d, tf in precisions:
            for cl in layouts:
                v = Variant(amp_dtype=d, channels_last=cl, compile=c, tf32=tf)
                if v not in out:
                    out.append(v)
    return out


def assert_autocast_active(device_type: str, dtype: torch.dtype) -> None:
    """Raise :class:`AutocastInactiveError` unless autocast to ``dtype`` is on here and now.

    A flag can say "enabled" while ops still run in fp32, so this checks what an op returns:
    fp32 inputs through ``F.linear`` must come out as ``dtype``.
    """
    x = torch.ones(2, 8, device=device_type)
    w = torch.ones(4, 8, device=device_type)
    got = F.linear(x, w).dtype
    if got != dtype:
        raise AutocastInactiveError(
            f"autocast to {DTYPE_NAMES.get(dtype, dtype)} on {device_type} was requested but a "
            f"linear layer returned {DTYPE_NAMES.get(got, got)}; refusing to report its numbers "
            f"as low precision")


@contextlib.contextmanager
def prepared(model: nn.Module, variant: Variant,
             compile_fn: Callable[[nn.Module], Callable] | None = None
             ) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """Yield a callable running ``model`` as ``variant``; restore its layout afterwards.

    channels_last converts the weights in place (no second copy of the model in memory) and
    back on exit. ``compile_fn`` defaults to :func:`compile_static`; dynamo caches are reset
    first so each compiled variant pays, and reports, its own compile time.
    """
    if variant.channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(tf32(variant.tf32))
            fn: Callable = model
            if variant.compile:
                torch._dynamo.reset()
                # One graph per batch size; past the default limit of 8 dynamo would quietly
                # fall back to eager and we would time the wrong thing.
                stack.enter_context(torch._dynamo.config.patch(recompile_limit=64))
                fn = (compile_fn or compile_static)(model)
            yield fn
    finally:
        if variant.channels_last:
            model.to(memory_format=torch.contiguous_format)


def compile_static(model: nn.Module) -> Callable:
    """``torch.compile`` specialised to each input shape: a sweep measures fixed batch sizes,
    and dynamic-shape kernels (dynamo's default after the second shape) run slower."""
    return torch.compile(model, dynamic=False)


def prepare_input(x: torch.Tensor, variant: Variant) -> torch.Tensor:
    """(B, C, H, W) input in the variant's memory format (same shape, different strides)."""
    return x.contiguous(memory_format=torch.channels_last) if variant.channels_last else x
