"""Profile the models of a params.yaml at random init and print a table (no DVC, no weights).

For a quick look at how a change to a model or to the profiler moves the numbers:
    python benchmarks/profile_models.py --params params.yaml --models cnn vit --image-size 32
Throughput does not depend on the weights; latency and memory do not either.
"""

from __future__ import annotations

import argparse

from cifarbench.config import load_params
from cifarbench.models import build_model
from cifarbench.profiling.profiler import profile_model
from cifarbench.runtime import resolve_runtime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--models", nargs="+", default=None, help="default: every model in params")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=10)
    args = p.parse_args()

    params = load_params(args.params)
    rt = resolve_runtime(params.device, params.precision, params.threads)
    for name in args.models or sorted(params.models):
        model = build_model(params.model(name), num_classes=args.num_classes, image_size=args.image_size)
        r = profile_model(model, image_size=args.image_size, cfg=params.profile, runtime=rt,
                          name=name, seed=params.seed)
        m = r.metrics()
        lat = m["latency_ms"]
        print(f"\n{name}: headline {m['headline_variant']} on {m['device_name']} "
              f"({m['cpu_threads']} threads), {m['flops_per_image'] / 1e9:.3f} GFLOPs/image fwd, "
              f"{m['params'] / 1e6:.2f} M params")
        print(f"  latency bs=1: p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  p99 {lat['p99']:.2f} ms")
        print(f"  {'batch':>6} {'img/s':>10} {'median ms':>10} {'IQR ms':>8} {'peak MiB':>9}")
        for row in r.throughput_rows():
            print(f"  {row['batch_size']:>6} {row['throughput_img_s']:>10.1f} {row['step_ms_median']:>10.2f} "
                  f"{row['step_ms_iqr']:>8.2f} {row['peak_memory_mb']:>9.0f}")
        for vname, v in m["variants"].items():
            tp = v["throughput_img_s"]
            print(f"  variant {vname:<32} best {tp or 0:>9.1f} img/s  p50 {v['latency_p50_ms'] or 0:.2f} ms"
                  + (f"  compile {v['compile_time_s']:.1f} s" if v["compile_time_s"] else "")
                  + ("" if v["correct"] else "  (output differs from fp32)"))


if __name__ == "__main__":
    main()
