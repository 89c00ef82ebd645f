"""Short Markdown summary of a pipeline run (used by gpu_run.sh): per model, what was trained
and measured, read from metrics/train/*.json and metrics/profile/*.json of the current folder.

    python benchmarks/gpu_summary.py --out summary.md [--env env.txt] [--logs DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def fmt(v: object, spec: str = ".4g") -> str:
    return "—" if v is None else format(v, spec) if isinstance(v, (int, float)) else str(v)


def model_lines(name: str) -> list[str]:
    train_p, prof_p = Path(f"metrics/train/{name}.json"), Path(f"metrics/profile/{name}.json")
    if not train_p.exists():
        return [f"- **{name}**: not trained (see logs)"]
    t = json.loads(train_p.read_text())
    lines = [
        f"- **{name}** on {t.get('device_name')} ({t.get('dtype')}, torch {t.get('torch_version')}):"
        f" test accuracy {100 * t['test_accuracy']:.2f}% ± {100 * t['test_accuracy_std']:.2f}"
        f" over {t['runs']} run(s) (TTA {t['tta']}),"
        f" train_time_s {fmt(t['train_time_s'], '.2f')} ± {fmt(t['train_time_s_std'], '.2f')},"
        f" time to {100 * t['target_accuracy']:.0f}%: {fmt(t['time_to_target_s'], '.2f')} s"
        f" ({t['runs_reaching_target']}/{t['runs']} runs),"
        f" compile {t.get('compile_mode')} ({fmt(t.get('compile_time_s'), '.1f')} s,"
        f" recompiles {t.get('compile_recompiles')}), warm-up {fmt(t.get('warmup_time_s'), '.1f')} s,"
        f" {fmt(t['train_throughput_img_s'], ',.0f')} img/s training,"
        f" {t['epochs']:g} epochs x batch {t['batch_size']}",
    ]
    if t.get("compile_fallback_reason"):
        lines.append(f"  - compile fell back to eager: {t['compile_fallback_reason']}")
    accs = [t[k]["test_accuracy"] for k in sorted(t) if k.startswith("run_")]
    lines.append("  - per-run accuracy: " + ", ".join(f"{100 * a:.2f}" for a in accs))
    if prof_p.exists():
        p = json.loads(prof_p.read_text())
        lat = p["latency_ms"]
        lines.append(
            f"  - inference ({p['headline_variant']}): {fmt(p['throughput_img_s'], ',.0f')} img/s"
            f" at batch {p['throughput_batch_size']}, latency p50 {fmt(lat['p50'], '.3f')} ms /"
            f" p99 {fmt(lat['p99'], '.3f')} ms, peak memory {fmt(p['peak_memory_mb'], '.0f')} MB,"
            f" {p['flops_per_image'] / 1e9:.3f} GFLOP/image")
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
