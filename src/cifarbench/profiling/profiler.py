"""Profile one trained model: every variant, FLOPs, memory, and the headline choice.

Headline rule: among variants whose output matches the fp32 eager reference within the
tolerance of their precision, take those that ran at the largest batch size any of them ran,
and pick the one with the highest throughput there. Its best throughput over the sweep, its
batch-1 latency and its peak memory become the model's headline numbers.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn
from tqdm import tqdm

from cifarbench.config import ProfileConfig
from cifarbench.models import count_params
from cifarbench.profiling.flops import forward_flops_per_image, train_flops_per_image
from cifarbench.profiling.memory import file_mb, is_oom, param_memory_mb, release_memory
from cifarbench.profiling.sweep import MakeInput, Sweep, inference_region, measure_latency, sweep_batch_sizes
from cifarbench.profiling.timing import StepTimes, latency_summary_ms
from cifarbench.profiling.variants import (
    AutocastInactiveError,
    Variant,
    plan_variants,
    prepare_input,
    prepared,
)
from cifarbench.runtime import Runtime, environment, watch_host_load
from cifarbench.schema import Environment, LatencySummary, ProfileDetails, ProfileMetrics, VariantSummary

# Relative L2 error of the logits against the fp32 eager reference that still counts as the
# same model: fp32 (compiled or channels_last) only reorders sums; TF32 keeps a 10-bit
# mantissa, fp16 10 bits with a narrow range, bf16 8 bits.
TOLERANCE = {"fp32": 1e-3, "tf32": 1e-2, "fp16": 2e-2, "bf16": 6e-2}
REFERENCE_BATCH = 8


class ProfileError(RuntimeError):
    """No variant produced a usable measurement (e.g. every batch size ran out of memory)."""


@dataclass
class VariantResult:
    variant: Variant
    sweep: Sweep | None = None
    latency: StepTimes | None = None
    rel_error: float | None = None  # vs the fp32 eager reference (relative L2 of logits)
    compile_time_s: float | None = None  # compiled variants only
    error: str | None = None  # why the variant could not be measured

    @property
    def tolerance(self) -> float:
        return TOLERANCE[self.variant.dtype_name]

    @property
    def correct(self) -> bool:
        return (self.error is None and self.rel_error is not None
                and math.isfinite(self.rel_error) and self.rel_error <= self.tolerance)

    @property
    def usable(self) -> bool:
        return self.correct and self.sweep is not None and bool(self.sweep.points)

    @property
    def measured_sweep(self) -> Sweep:
        """The sweep of a variant that ran (every usable one did)."""
        if self.sweep is None:
            raise ProfileError(f"{self.variant.name}: no batch-size sweep")
        return self.sweep

    @property
    def measured_latency(self) -> StepTimes:
        """The batch-1 latency runs of a variant that ran (every usable one did)."""
        if self.latency is None:
            raise ProfileError(f"{self.variant.name}: no latency measurement")
        return self.latency

    def summary(self) -> dict[str, Any]:
        """The entry under ``variants`` in the metrics file."""
        best = self.sweep.best if self.sweep and self.sweep.points else None
        lat = latency_summary_ms(self.latency.times_s) if self.latency else None
        out: dict[str, Any] = {
            "throughput_img_s": best.throughput_img_s if best else None,
            "throughput_batch_size": best.batch_size if best else None,
            "latency_p50_ms": lat["p50"] if lat else None,
            "latency_p90_ms": lat["p90"] if lat else None,
            "compile_time_s": self.compile_time_s,
            "peak_memory_mb": max(p.memory.peak_mb for p in self.sweep.points) if self.sweep and best else None,
            "failed_batch_sizes": self.sweep.failed if self.sweep else [],
            "rel_error": self.rel_error,
            "correct": self.correct,
        }
        if self.error:
            out["error"] = self.error
        return out


def choose_headline(results: list[VariantResult]) -> VariantResult:
    """The fastest correct variant at the largest batch size that ran (see module docstring)."""
    usable = [r for r in results if r.usable]
    if not usable:
        raise ProfileError("no variant produced a correct measurement: "
                           + "; ".join(f"{r.variant.name}: {r.error or _why(r)}" for r in results))
    largest = max(p.batch_size for r in usable for p in r.measured_sweep.points)
    at_largest = [(r, p) for r in usable if (p := r.measured_sweep.at(largest)) is not None]
    return max(at_largest, key=lambda rp: rp[1].throughput_img_s)[0]


def _why(r: VariantResult) -> str:
    if r.sweep is not None and not r.sweep.points:
        return f"every batch size ran out of memory ({r.sweep.failed})"
    return f"output differs from fp32 (relative error {r.rel_error:.3g} > {r.tolerance:g})"


@dataclass
class ProfileResult:
    model: str
    variants: list[VariantResult]
    headline: VariantResult
    flops_per_image: float
    train_flops_per_image: float
    params: int
    param_memory_mb: float
    checkpoint_mb: float | None
    env: dict[str, Any]

    def metrics(self) -> tuple[ProfileMetrics, ProfileDetails]:
        """The headline (``metrics/profile/NAME.json``) and the details (variants, environment)."""
        h = self.headline
        best = h.measured_sweep.best
        mems = [p.memory for p in h.measured_sweep.points]
        peak = max(mems, key=lambda m: m.peak_mb)
        failed = sorted({bs for r in self.variants if r.sweep for bs in r.sweep.failed})
        latency = LatencySummary(**latency_summary_ms(h.measured_latency.times_s))
        headline = ProfileMetrics(
            params=self.params, flops_per_image=self.flops_per_image,
            train_flops_per_image=self.train_flops_per_image,
            throughput_img_s=best.throughput_img_s, latency_ms_p50=latency.p50,
            latency_ms_p99=latency.p99, peak_memory_mb=peak.peak_mb)
        details = ProfileDetails(
            model=self.model, throughput_batch_size=best.batch_size, latency_ms=latency,
            macs_per_image=self.flops_per_image / 2, param_memory_mb=self.param_memory_mb,
            checkpoint_mb=self.checkpoint_mb, peak_memory_kind=peak.kind,
            peak_memory_reserved_mb=peak.reserved_mb,
            # host only: what the largest configuration added above the RSS it started from
            rss_increase_mb=max((m.rss_increase_mb for m in mems
                                 if m.rss_increase_mb is not None), default=None),
            headline_variant=h.variant.name, layout=h.variant.layout,
            compile_mode=h.variant.compile_mode, failed_batch_sizes=failed,
            variants={r.variant.name: VariantSummary(**r.summary()) for r in self.variants},
            # the headline's own precision, not the runtime default
            environment=Environment(**{**self.env, "dtype": h.variant.dtype_name}))
        return headline, details

    def throughput_rows(self) -> list[dict[str, Any]]:
        """``plots/throughput/NAME.csv``: the headline variant, one row per batch size run."""
        return [p.row() for p in self.headline.measured_sweep.points]

    def latency_rows(self) -> list[dict[str, Any]]:
        """``plots/latency/NAME.csv``: every batch-1 run of the headline variant, in order."""
        return [{"run": i, "latency_ms": t * 1e3} for i, t in enumerate(self.headline.measured_latency.times_s)]


def profile_model(model: nn.Module, *, image_size: int, cfg: ProfileConfig, runtime: Runtime,
                  name: str = "model", checkpoint: str | Path | None = None, in_channels: int = 3,
                  compile_fn: Callable[[nn.Module], Callable] | None = None,
                  seed: int = 0, log: TextIO = sys.stderr) -> ProfileResult:
    """Measure ``model`` (inputs (B, in_channels, image_size, image_size)) as ``cfg`` asks."""
    device = runtime.device
    model = model.to(device).eval()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    shape = (in_channels, image_size, image_size)

    def make_input(batch_size: int) -> torch.Tensor:
        # Normalised images are roughly N(0, 1); the content does not change the work done.
        return torch.randn(batch_size, *shape, generator=gen).to(device)

    ref_x = make_input(REFERENCE_BATCH)
    with torch.inference_mode():
        reference = model(ref_x).float()  # (8, K)
    flops = forward_flops_per_image(model, ref_x[:2])
    train_flops = train_flops_per_image(model, ref_x[:2])

    # Other processes on the host skew every number here; record how busy it was.
    results = []
    variants = plan_variants(model, cfg, runtime)
    bar = tqdm(variants, desc=f"profile@{name}", unit="variant", file=log, disable=None,
               dynamic_ncols=True)
    with watch_host_load(runtime, what=f"profile@{name}", log=log) as load:
        for variant in bar:
            bar.set_postfix_str(variant.name)
            if bar.disable:
                print(f"profile: {name}: variant {variant.name}", file=log)
            results.append(_profile_variant(model, variant, make_input, ref_x, reference, cfg,
                                            runtime, compile_fn, log))
    headline = choose_headline(results)
    print(f"profile: {name}: headline variant {headline.variant.name}", file=log)
    env = {**environment(runtime), **load}  # the sweep's start and end, not the moment after it
    return ProfileResult(
        model=name, variants=results, headline=headline, flops_per_image=flops,
        train_flops_per_image=train_flops, params=count_params(model),
        param_memory_mb=param_memory_mb(model),
        checkpoint_mb=file_mb(checkpoint) if checkpoint is not None else None, env=env)


def _profile_variant(model: nn.Module, variant: Variant, make_input: MakeInput,
                     ref_x: torch.Tensor, reference: torch.Tensor, cfg: ProfileConfig,
                     runtime: Runtime, compile_fn: Callable[[nn.Module], Callable] | None,
                     log: TextIO) -> VariantResult:
    result = VariantResult(variant)
    # A compiled model must not be timed while compiling: at least one warm-up step.
    warmup = max(1, cfg.warmup_iters) if variant.compile else cfg.warmup_iters
    try:
        with prepared(model, variant, compile_fn) as fn:
            t0 = time.perf_counter()
            with inference_region(variant, runtime.device.type):
                out = fn(prepare_input(ref_x, variant)).float()
            runtime.synchronize()
            first_call_s = time.perf_counter() - t0
            # An untrained head can give all-zero logits; the floor keeps 0/0 out.
            result.rel_error = float(torch.linalg.vector_norm(out - reference)
                                     / torch.linalg.vector_norm(reference).clamp_min(1e-6))
            if not result.correct:
                print(f"profile: {variant.name}: output differs from fp32 (relative error "
                      f"{result.rel_error:.3g} > {result.tolerance:g}); not a headline candidate",
                      file=log)
            result.sweep = sweep_batch_sizes(
                fn, make_input, cfg.batch_sizes, variant=variant, runtime=runtime,
                warmup_iters=warmup, iters=cfg.iters, max_seconds=cfg.max_seconds_per_config,
                log=log)
            try:
                result.latency = measure_latency(fn, make_input, variant=variant, runtime=runtime,
                                                 warmup_iters=warmup, runs=cfg.latency_runs)
            except Exception as exc:
                if not is_oom(exc):
                    raise
                result.error = "out of memory at batch size 1 (latency)"
    except Exception as exc:
        # Inductor/dynamo failures are many and varied; a failed compile must not cost the
        # eager numbers. Eager variants re-raise: there a failure is a bug.
        if not variant.compile or isinstance(exc, AutocastInactiveError):
            raise
        first_line = (str(exc).splitlines() or [""])[0]
        result.error = f"torch.compile failed: {type(exc).__name__}: {first_line}"
        print(f"profile: {variant.name}: {result.error}", file=log)
        release_memory(runtime.device)
        return result
    if variant.compile:
        # Compilation happens on the first call and again for each new batch size.
        overheads = [p.first_call_overhead_s for p in result.sweep.points]
        if result.latency is not None and result.latency.first_call_s is not None:
            overheads.append(max(0.0, result.latency.first_call_s - result.latency.median_s))
        result.compile_time_s = first_call_s + sum(overheads)
    return result
