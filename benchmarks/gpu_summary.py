"""Short Markdown summary of a pipeline run (used by gpu_run.sh): per model, what was trained
and measured, read from the metrics and details files of the current folder (shapes in
cifarbench.schema).

    python benchmarks/gpu_summary.py --out summary.md [--env env.txt] [--logs DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cifarbench.schema import ProfileDetails, ProfileMetrics, TrainDetails, TrainMetrics, read_record


def fmt(v: object, spec: str = ".4g") -> str:
    return "—" if v is None else format(v, spec) if isinstance(v, (int, float)) else str(v)


def model_lines(name: str) -> list[str]:
    live = Path(f"metrics/train/{name}/metrics.json")
    details_p = Path(f"metrics/details/train/{name}.json")
    if not details_p.exists():
        return [f"- **{name}**: not trained (see logs)"]
    h, t = read_record(live, TrainMetrics), read_record(details_p, TrainDetails)
    env = t.environment
    lines = [
        f"- **{name}** on {env.device_name} ({env.dtype}, torch {env.torch_version}):"
        f" test accuracy {100 * h.test_accuracy:.2f}% ± {100 * h.test_accuracy_std:.2f}"
        f" over {t.runs} run(s) (TTA {t.tta}),"
        f" train_time_s {fmt(h.train_time_s, '.2f')} ± {fmt(t.train_time_s_std, '.2f')},"
        f" time to {100 * t.target_accuracy:.0f}%: {fmt(h.time_to_target_s, '.2f')} s"
        f" ({t.runs_reaching_target}/{t.runs} runs),"
        f" compile {t.compile_mode} ({fmt(t.compile_time_s, '.1f')} s,"
        f" recompiles {t.compile_recompiles}), warm-up {fmt(t.warmup_time_s, '.1f')} s,"
        f" {fmt(t.train_throughput_img_s, ',.0f')} img/s training,"
        f" {t.epochs:g} epochs x batch {t.batch_size}, host load {fmt(env.host_load_1m, '.1f')}"
        f"{' (OVERSUBSCRIBED)' if env.oversubscribed else ''}",
    ]
    if t.compile_fallback_reason:
        lines.append(f"  - compile fell back to eager: {t.compile_fallback_reason}")
    lines.append("  - per-run accuracy: " + ", ".join(f"{100 * r.test_accuracy:.2f}" for r in t.per_run))
    prof_p = Path(f"metrics/profile/{name}.json")
    if prof_p.exists():
        p = read_record(prof_p, ProfileMetrics)
        d = read_record(Path(f"metrics/details/profile/{name}.json"), ProfileDetails)
        lines.append(
            f"  - inference ({d.headline_variant}): {fmt(p.throughput_img_s, ',.0f')} img/s"
            f" at batch {d.throughput_batch_size}, latency p50 {fmt(p.latency_ms_p50, '.3f')} ms /"
            f" p99 {fmt(p.latency_ms_p99, '.3f')} ms, peak memory {fmt(p.peak_memory_mb, '.0f')} MB,"
            f" {p.flops_per_image / 1e9:.3f} GFLOP/image")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--env", type=Path)
    ap.add_argument("--logs", type=Path)
    args = ap.parse_args()
    lines = ["# Pipeline run summary", ""]
    if args.env and args.env.exists():
        lines += ["```", args.env.read_text().strip(), "```", ""]
    for name in ("cnn", "vit"):
        lines += model_lines(name)
    if args.logs and args.logs.is_dir():
        for bench in sorted(args.logs.glob("bench_*.log")) + sorted(args.logs.glob("compile_check.log")):
            lines += ["", f"## {bench.stem}", "```", *bench.read_text().strip().splitlines()[-12:], "```"]
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
