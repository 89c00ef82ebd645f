"""The profiler measured against things whose answer is known (CPU, a few seconds in all)."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from project_params import write_params
from torch import nn

from cifarbench.cli import UserError
from cifarbench.config import ProfileConfig
from cifarbench.profiling.flops import forward_flops_per_image, train_flops_per_image
from cifarbench.profiling.memory import MIB, MemoryReading, param_memory_mb, reset_host_peak_rss, track_memory
from cifarbench.profiling.profiler import VariantResult, choose_headline, profile_model
from cifarbench.profiling.sweep import BatchPoint, Sweep, measure_latency, sweep_batch_sizes
from cifarbench.profiling.timing import StepTimes, latency_summary_ms, percentile, time_steps
from cifarbench.profiling.variants import (
    AutocastInactiveError,
    Variant,
    assert_autocast_active,
    plan_variants,
)
from cifarbench.runtime import Runtime
from cifarbench.schema import ProfileDetails, ProfileMetrics, read_record

ROOT = Path(__file__).resolve().parents[1]
CPU = Runtime(device=torch.device("cpu"), amp_dtype=None)
FP32 = Variant(amp_dtype=None)


def tiny_cfg(**over) -> ProfileConfig:
    base = dict(batch_sizes=[1, 4], warmup_iters=1, iters=3, latency_runs=10,
                precisions=["fp32"], channels_last=False, compile=False, max_seconds_per_config=2.0)
    return ProfileConfig(**{**base, **over})


class Sleeper(nn.Module):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return x


class OOMAbove(nn.Module):
    """Stands in for a model on a GPU that runs out of memory above ``limit`` images."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.first_tries: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] not in self.first_tries:
            self.first_tries.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x.flatten(1).sum(1)


def mlp(width: int = 8, classes: int = 4) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, width), nn.ReLU(), nn.Linear(width, classes))


def convnet(classes: int = 4) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes))


def make_input(bs: int) -> torch.Tensor:
    return torch.randn(bs, 3, 8, 8)


# ------------------------------------------------------------------------------- statistics


def test_percentiles_on_known_data():
    assert percentile([1, 2, 3, 4], 50) == pytest.approx(2.5)
    assert percentile([1, 2, 3, 4], 25) == pytest.approx(1.75)
    assert percentile([4, 1, 3, 2], 75) == pytest.approx(3.25)  # order does not matter
    data = list(range(1, 101))  # rank q/100 * 99, interpolated
    assert percentile(data, 90) == pytest.approx(90.1)
    assert percentile(data, 99) == pytest.approx(99.01)
    s = latency_summary_ms([t / 1000 for t in data])  # seconds in, milliseconds out
    assert s == pytest.approx({"p50": 50.5, "p90": 90.1, "p99": 99.01, "mean": 50.5})
    with pytest.raises(ValueError):
        percentile([], 50)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_time_cap_cuts_iters_but_keeps_three_and_syncs_every_step():
    clock, syncs = FakeClock(), []

    def step():  # every step takes exactly 1 s of fake time
        clock.now += 1.0

    t = time_steps(step, warmup_iters=5, iters=100, max_seconds=5.0, clock=clock,
                   synchronize=lambda: syncs.append(clock.now))
    # The first call is a one-off outside the budget; then warm-up stops once a quarter of
    # the budget is spent (2 s > 1.25 s), and 2 + 3 timed steps reach the 5 s cap.
    assert t.warmup_iters == 3 and t.first_call_s == 1.0
    assert len(t.times_s) == 3 and t.times_s == [1.0, 1.0, 1.0]
    assert t.total_s == 6.0
    assert len(syncs) == 2 * (3 + 3)  # before and after every step
    t = time_steps(step, warmup_iters=0, iters=100, max_seconds=0.1, clock=clock)
    assert len(t.times_s) == 3 and t.first_call_s is None
    t = time_steps(step, warmup_iters=1, iters=7, clock=clock)  # no cap: exactly iters
    assert len(t.times_s) == 7 and t.median_s == 1.0 and t.iqr_s == 0.0


def test_sleeping_module_gives_its_latency():
    d = 0.02
    t = measure_latency(Sleeper(d), make_input, variant=FP32, runtime=CPU, warmup_iters=1, runs=10)
    assert len(t.times_s) == 10
    lat = latency_summary_ms(t.times_s)
    assert d * 1e3 <= lat["p50"] <= d * 1e3 + 15  # sleep never returns early; allow scheduler jitter
    assert lat["p50"] <= lat["p90"] <= lat["p99"]
    sweep = sweep_batch_sizes(Sleeper(d), make_input, [2, 8], variant=FP32, runtime=CPU,
                              warmup_iters=0, iters=3, log=io.StringIO())
    # Throughput is images per median step; a sleep costs the same at any batch size.
    assert sweep.at(8).throughput_img_s == pytest.approx(8 / d, rel=0.5)
    assert sweep.at(8).throughput_img_s > 3 * sweep.at(2).throughput_img_s


# ------------------------------------------------------------------------------------ FLOPs


def test_linear_flops_match_formula():
    b, n_in, n_out = 4, 32, 16
    layer = nn.Linear(n_in, n_out)
    x = torch.randn(b, n_in)
    assert forward_flops_per_image(layer, x) == 2 * n_in * n_out  # per image: 2*in*out
    # One layer whose input needs no gradient: forward + weight gradient, no input gradient.
    assert train_flops_per_image(layer, x) == 2 * (2 * n_in * n_out)
    assert layer.weight.grad is None  # counted on a copy


def test_training_step_is_about_three_forwards_for_a_deep_net():
    depth, w = 6, 16
    net = nn.Sequential(*[nn.Linear(w, w, bias=False) for _ in range(depth)])
    x = torch.randn(2, w)
    fwd, train = forward_flops_per_image(net, x), train_flops_per_image(net, x)
    assert fwd == depth * 2 * w * w
    assert train / fwd == pytest.approx((3 * depth - 1) / depth)  # ~3x; first layer has no dgrad


# ------------------------------------------------------------------------------ OOM backoff


def test_oom_backs_off_to_smaller_sizes_and_records_failures():
    fake = OOMAbove(limit=64)
    log = io.StringIO()
    sweep = sweep_batch_sizes(fake, make_input, [16, 1024, 1, 256, 64], variant=FP32,
                              runtime=CPU, warmup_iters=1, iters=3, log=log)
    assert fake.first_tries == [1024, 256, 64, 16, 1]  # largest first, then the next smaller
    assert sweep.failed == [256, 1024]
    assert [p.batch_size for p in sweep.points] == [1, 16, 64]
    assert all(len(p.times.times_s) == 3 for p in sweep.points)
    assert "batch 1024: out of memory" in log.getvalue()


def test_errors_other_than_oom_are_not_swallowed():
    class Broken(nn.Module):
        def forward(self, x):
            raise ValueError("shape mismatch")

    with pytest.raises(ValueError, match="shape mismatch"):
        sweep_batch_sizes(Broken(), make_input, [1, 2], variant=FP32, runtime=CPU,
                          warmup_iters=0, iters=3, log=io.StringIO())


# -------------------------------------------------------------------------------- autocast


def test_autocast_assertion():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert_autocast_active("cpu", torch.bfloat16)
    with pytest.raises(AutocastInactiveError, match="returned fp32"):
        assert_autocast_active("cpu", torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False), pytest.raises(AutocastInactiveError):
        assert_autocast_active("cpu", torch.bfloat16)


def test_profile_refuses_an_autocast_variant_that_silently_runs_fp32(monkeypatch):
    monkeypatch.setattr(Variant, "autocast", lambda self, device_type: contextlib.nullcontext())
    with pytest.raises(AutocastInactiveError):
        profile_model(mlp(), image_size=8, cfg=tiny_cfg(precisions=["fp32", "autocast"]),
                      runtime=CPU, log=io.StringIO())


# -------------------------------------------------------------------------------- variants


def test_channels_last_only_for_conv_nets():
    cfg = tiny_cfg(precisions=["fp32", "autocast"], channels_last=True, compile=True)
    names = [v.name for v in plan_variants(convnet(), cfg, CPU)]
    assert names[0] == "fp32"  # the reference comes first
    assert "autocast-bf16/channels_last" in names and "autocast-bf16/channels_last/compile" in names
    assert len(names) == 8
    assert [v.name for v in plan_variants(mlp(), cfg, CPU)] == [
        "fp32", "autocast-bf16", "fp32/compile", "autocast-bf16/compile"]


def _result(name_dtype, throughputs: dict[int, float], correct: bool = True, **kw) -> VariantResult:
    points = [BatchPoint(batch_size=bs, times=StepTimes([bs / tp] * 3, 1, None, 1.0),
                         memory=MemoryReading(kind="host_peak_rss", peak_mb=1.0))
              for bs, tp in sorted(throughputs.items())]
    return VariantResult(Variant(amp_dtype=name_dtype, **kw), sweep=Sweep(points=points),
                         rel_error=0.0 if correct else 1.0)


def test_headline_is_fastest_correct_variant_at_largest_batch():
    fp32 = _result(None, {1: 10, 64: 100, 256: 120})
    cl = _result(None, {1: 50, 64: 300}, channels_last=True)  # fastest, but OOM'd at 256
    bf16 = _result(torch.bfloat16, {1: 8, 64: 150, 256: 200})
    wrong = _result(torch.bfloat16, {1: 99, 64: 999, 256: 999}, correct=False, channels_last=True)
    assert choose_headline([fp32, cl, bf16, wrong]) is bf16
    assert choose_headline([fp32, cl]) is fp32


# ---------------------------------------------------------------------------------- memory


def test_param_memory_counts_parameters_and_buffers():
    bn = nn.BatchNorm2d(4)  # 8 params + 8 running stats (fp32) + num_batches_tracked (int64)
    assert param_memory_mb(bn) == pytest.approx((8 * 4 + 8 * 4 + 8) / MIB)
    assert param_memory_mb(nn.Linear(10, 10).half()) == pytest.approx(110 * 2 / MIB)


@pytest.mark.skipif(not reset_host_peak_rss(), reason="kernel does not allow resetting VmHWM")
def test_host_peak_is_per_configuration():
    with track_memory(torch.device("cpu")) as big:
        x = torch.ones(32 * MIB // 4)  # 32 MiB, touched
        del x
    with track_memory(torch.device("cpu")) as small:
        pass
    assert big.kind == "host_peak_rss" and big.peak_is_per_config
    assert big.rss_increase_mb >= 30
    assert small.rss_increase_mb < 8  # the earlier peak was reset, not carried over


# ---------------------------------------------------------------------------- profile_model


def test_profile_model_records_variants_and_compile_failures():
    def broken_compile(model):
        raise RuntimeError("inductor: no C++ compiler\nlong details")

    cfg = tiny_cfg(precisions=["fp32", "autocast"], channels_last=True, compile=True)
    r = profile_model(convnet(), image_size=8, cfg=cfg, runtime=CPU, name="tiny",
                      compile_fn=broken_compile, log=io.StringIO())
    headline, m = r.metrics()
    assert set(m.variants) == {v.name for v in plan_variants(convnet(), cfg, CPU)}
    assert (m.variants["fp32/compile"].error or "").startswith("torch.compile failed: RuntimeError")
    assert m.headline_variant in m.variants and "compile" not in m.headline_variant
    assert (m.variants["autocast-bf16"].rel_error or 1.0) < 0.06
    assert headline.flops_per_image == r.flops_per_image > 0
    assert m.macs_per_image == headline.flops_per_image / 2
    assert len(r.latency_rows()) == 10
    assert [row["batch_size"] for row in r.throughput_rows()] == [1, 4]


def test_compiled_variant_reports_compile_time_separately():
    def slow_compile(model):  # a stand-in: the first call pays 0.2 s, like a real compile
        state = {"first": True}

        def run(x):
            if state["first"]:
                state["first"] = False
                time.sleep(0.2)
            return model(x)
        return run

    r = profile_model(mlp(), image_size=8, cfg=tiny_cfg(compile=True), runtime=CPU,
                      compile_fn=slow_compile, log=io.StringIO())
    v = r.metrics()[1].variants
    assert v["fp32"].compile_time_s is None
    assert (v["fp32/compile"].compile_time_s or 0.0) >= 0.2
    assert (v["fp32/compile"].latency_p50_ms or 1e9) < 100  # the compile is not in the latency


# ---------------------------------------------------------------------------------- stage


def load_stage():
    spec = importlib.util.spec_from_file_location("profile_stage", ROOT / "stages" / "profile_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_inputs(tmp_path: Path, image_size: int = 16, classes: int = 3) -> dict[str, Path]:
    from cifarbench.config import load_params
    from cifarbench.models import build_model

    overrides = {
        "seed": 0, "device": "cpu", "precision": "fp32", "threads": 1,
        "models": {"cnn": {"arch": {"widths": [8, 8, 8]}},
                   "vit": {"arch": {"dim": 16, "depth": 1, "heads": 2}}},
        "profile": {"batch_sizes": [1, 4], "warmup_iters": 1, "iters": 3, "latency_runs": 10,
                    "precisions": ["fp32", "autocast"], "channels_last": True, "compile": False,
                    "max_seconds_per_config": 1.0},
    }
    paths = {"params": write_params(tmp_path / "params.yaml", overrides),
             "meta": tmp_path / "meta.json"}
    paths["meta"].write_text(json.dumps({"num_classes": classes, "image_size": image_size,
                                         "classes": [f"c{i}" for i in range(classes)],
                                         "mean": [0.5] * 3, "std": [0.25] * 3,
                                         "source_train_images": 100}))
    p = load_params(paths["params"])
    for name in ("cnn", "vit"):
        paths[name] = tmp_path / f"{name}.pt"
        model = build_model(p.model(name), num_classes=classes, image_size=image_size)
        torch.save(model.state_dict(), paths[name])
    return paths


def stage_argv(paths: dict[str, Path], out: Path, name: str, weights: Path | None = None) -> list[str]:
    return ["--params", str(paths["params"]), "--model", name, "--meta", str(paths["meta"]),
            "--weights", str(weights or paths[name]), "--metrics", str(out / f"metrics/{name}.json"),
            "--details", str(out / f"details/{name}.json"), "--throughput", str(out / f"throughput/{name}.csv"),
            "--latency", str(out / f"latency/{name}.csv")]


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


@pytest.mark.parametrize("name", ["cnn", "vit"])
def test_stage_writes_files_matching_the_contract(tmp_path, name):
    stage = load_stage()
    paths = write_inputs(tmp_path)
    stage.main(stage_argv(paths, tmp_path / "out", name))

    h = read_record(tmp_path / f"out/metrics/{name}.json", ProfileMetrics)
    m = read_record(tmp_path / f"out/details/{name}.json", ProfileDetails)
    assert m.model == name and m.environment.device == "cpu" and m.peak_memory_kind == "host_peak_rss"
    assert 0 < m.latency_ms.p50 <= m.latency_ms.p90 <= m.latency_ms.p99
    assert h.latency_ms_p50 == m.latency_ms.p50 and h.latency_ms_p99 == m.latency_ms.p99
    assert m.headline_variant in m.variants and m.failed_batch_sizes == []
    assert m.throughput_batch_size in (1, 4) and h.throughput_img_s > 0
    assert m.checkpoint_mb == pytest.approx(paths[name].stat().st_size / MIB)
    assert h.params > 0 and h.train_flops_per_image > 2 * h.flops_per_image > 0
    has_cl = any(k.endswith("channels_last") for k in m.variants)
    assert has_cl == (name == "cnn")  # channels_last only for the conv net

    cols, rows = read_csv(tmp_path / f"out/throughput/{name}.csv")
    assert cols == ["batch_size", "throughput_img_s", "step_ms_median", "step_ms_iqr", "peak_memory_mb"]
    assert [int(r["batch_size"]) for r in rows] == [1, 4]
    best = max(rows, key=lambda r: float(r["throughput_img_s"]))
    assert float(best["throughput_img_s"]) == pytest.approx(h.throughput_img_s, rel=1e-5)
    cols, rows = read_csv(tmp_path / f"out/latency/{name}.csv")
    assert cols == ["run", "latency_ms"] and len(rows) >= 10
    lat = [float(r["latency_ms"]) for r in rows]
    assert np.median(lat) == pytest.approx(m.latency_ms.p50, rel=1e-4)


def test_stage_rejects_bad_inputs_before_profiling(tmp_path):
    stage = load_stage()
    paths = write_inputs(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(UserError, match="no such checkpoint"):
        stage.main(stage_argv(paths, out, "cnn", weights=tmp_path / "missing.pt"))
    with pytest.raises(UserError, match="does not fit models.cnn"):
        stage.main(stage_argv(paths, out, "cnn", weights=paths["vit"]))
    paths["meta"].write_text(json.dumps({"num_classes": "ten", "image_size": 16}))
    with pytest.raises(UserError, match="num_classes = 'ten'"):
        stage.main(stage_argv(paths, out, "cnn"))
    assert not out.exists()  # nothing half-written


def test_stage_runs_as_dvc_calls_it(tmp_path):
    """The stage runs as a subprocess exactly the way dvc.yaml calls it."""
    paths = write_inputs(tmp_path)
    out = tmp_path / "out"
    cmd = [sys.executable, "stages/profile_model.py", *stage_argv(paths, out, "cnn")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert read_record(out / "details/cnn.json", ProfileDetails).headline_variant
