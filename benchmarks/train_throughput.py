"""Training throughput of our loop vs a plain DataLoader loop, and model FLOP utilisation.

In one process on one machine, for the same model, batch size, precision and optimiser:

1. our loop (``cifarbench.train.train_run``: data resident on the device, batched augmentation);
   With ``--compile``, once more with ``torch.compile`` (the speed-up over eager);
2. a textbook loop: ``torch.utils.data.DataLoader`` over PIL images with
   ``torchvision.transforms`` (RandomCrop with reflect padding, RandomHorizontalFlip,
   ToTensor, Normalize), the same model/optimiser/autocast step;
3. the machine's matmul peak (a square matmul in fp32 and in the training dtype), and the
   achieved training FLOP/s of our loop against it (MFU; FLOPs from FlopCounterMode).

Both loops run eager (no torch.compile), so the comparison is about the data path. Prints
images/s of both loops and their ratio. Example:
    python benchmarks/train_throughput.py --model cnn --steps 30
Uses data/prepared if it exists, else random images of CIFAR size.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from cifarbench.config import load_params
from cifarbench.data import load_split
from cifarbench.io import read_json
from cifarbench.models import build_model
from cifarbench.profiling.flops import train_flops_per_image
from cifarbench.runtime import Runtime, environment, resolve_runtime
from cifarbench.train import TrainingResult, make_optimizer, memory_format, to_device_data, train_runs


def load_arrays(data_dir: Path, n: int) -> tuple[np.ndarray, np.ndarray, dict]:
    if (data_dir / "train.npz").exists():
        x, y = load_split(data_dir / "train.npz")
        meta = read_json(data_dir / "meta.json")
        return x[:n], y[:n], meta
    rng = np.random.default_rng(0)
    meta = {"classes": [str(i) for i in range(10)], "mean": [0.5] * 3, "std": [0.25] * 3}
    return (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
            rng.integers(0, 10, n).astype(np.int64), meta)


def ours(cfg, x: np.ndarray, y: np.ndarray, meta: dict, rt: Runtime, steps: int, bs: int,
         compile: bool = False) -> TrainingResult:
    """``train_runs`` over ``steps`` steps; its train_time_s excludes the warm-up (3 untimed
    steps: kernel selection, allocator growth; compilation when ``compile``) and evaluation."""
    data = to_device_data((x[:steps * bs], y[:steps * bs]), (x[:bs], y[:bs]),
                          classes=meta["classes"], mean=meta["mean"], std=meta["std"],
                          device=rt.device)
    train_cfg = cfg.train.model_copy(update={"epochs": 1.0, "batch_size": bs, "runs": 1,
                                             "tta": "none", "compile": compile, "warmup_steps": 3})
    model_cfg = cfg.model_copy(update={"train": train_cfg})
    return train_runs(
        lambda: build_model(cfg, num_classes=len(meta["classes"]), image_size=x.shape[1]),
        data, model_cfg, rt, seed=0, name="bench", log=io.StringIO())


class _ImageDataset(torch.utils.data.Dataset):
    def __init__(self, x: np.ndarray, y: np.ndarray, tf) -> None:
        self.x, self.y, self.tf = x, y, tf

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.tf(Image.fromarray(self.x[i])), int(self.y[i])


def dataloader_loop(cfg, x: np.ndarray, y: np.ndarray, meta: dict, rt: Runtime, steps: int,
                    bs: int, workers: int, translate: int) -> float:
    """Images/s of the textbook loop, first 2 steps excluded (worker start-up)."""
    tf = transforms.Compose([
        transforms.RandomCrop(x.shape[1], padding=translate, padding_mode="reflect"),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(meta["mean"], meta["std"]),
    ])
    loader = torch.utils.data.DataLoader(_ImageDataset(x, y, tf), batch_size=bs, shuffle=True,
                                         num_workers=workers, drop_last=True,
                                         pin_memory=rt.device.type == "cuda")
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=len(meta["classes"]), image_size=x.shape[1])
    fmt = memory_format(model)  # the same layout as our loop (channels_last for conv nets)
    model = model.to(rt.device, memory_format=fmt)
    opt = make_optimizer(model, cfg.train, rt.device)
    model.train()
    t0, seen = None, 0
    for i, (xb, yb) in enumerate(loader):
        if i == 2:
            rt.synchronize()
            t0, seen = time.perf_counter(), 0
        if i >= steps + 2:
            break
        xb = xb.to(rt.device, non_blocking=True).contiguous(memory_format=fmt)
        yb = yb.to(rt.device, non_blocking=True)
        with rt.autocast():
            loss = F.cross_entropy(model(xb).float(), yb, label_smoothing=cfg.train.label_smoothing)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        seen += len(xb)
    rt.synchronize()
    return seen / (time.perf_counter() - t0)


def matmul_peak_flops(rt: Runtime, dtype: torch.dtype, n: int, reps: int = 10,
                      samples: int = 5) -> float:
    """Median FLOP/s of an n x n x n matmul: ``samples`` timings of ``reps`` back-to-back
    products each, after warm-up, so launch and synchronisation costs are spread over ``reps``
    (one 8192^3 bf16 product takes about 1.4 ms on an H100; one 2048^3, about 25 us)."""
    a = torch.randn(n, n, device=rt.device, dtype=dtype)
    b = torch.randn(n, n, device=rt.device, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(samples):
        rt.synchronize()
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        rt.synchronize()
        times.append((time.perf_counter() - t) / reps)
    return 2 * n**3 / float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--data", default="data/prepared", type=Path)
    ap.add_argument("--steps", type=int, default=30, help="timed training steps per loop")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the model's own")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    ap.add_argument("--compile", action="store_true",
                    help="also time our loop with torch.compile (compile time printed apart)")
    args = ap.parse_args()

    params = load_params(args.params)
    cfg = params.model(args.model)
    rt = resolve_runtime(params.device, params.precision, params.threads)
    bs = args.batch_size or cfg.train.batch_size
    x, y, meta = load_arrays(args.data, (args.steps + 3) * bs)
    env = environment(rt)
    print(f"{args.model}: batch {bs}, {args.steps} steps, {env['device_name']} "
          f"({env['device']}, {env['cpu_threads']} threads), {env['dtype']}, torch {env['torch_version']}")

    # Peaks first, while nothing else runs (DataLoader workers take a moment to exit).
    n = 8192 if rt.device.type == "cuda" else 2048
    peaks = {"fp32": matmul_peak_flops(rt, torch.float32, n)}  # IEEE fp32: TF32 is off
    if rt.amp_dtype is not None:
        peaks[rt.dtype_name] = matmul_peak_flops(rt, rt.amp_dtype, n)
    ours_ips = ours(cfg, x, y, meta, rt, args.steps, bs).runs[0].train_throughput_img_s
    compiled = ours(cfg, x, y, meta, rt, args.steps, bs, compile=True) if args.compile else None
    base_ips = dataloader_loop(cfg, x, y, meta, rt, args.steps, bs, args.workers, cfg.augment.translate)
    print(f"  our loop (device-resident data, batched aug): {ours_ips:10.1f} img/s")
    print(f"  DataLoader + torchvision.transforms ({args.workers} workers): {base_ips:10.1f} img/s")
    print(f"  ratio ours / DataLoader: {ours_ips / base_ips:.2f}x")
    if compiled is not None:
        info = compiled.compile
        c_ips = compiled.runs[0].train_throughput_img_s
        print(f"  our loop, torch.compile ({info.mode}, compile {info.compile_time_s:.1f} s): "
              f"{c_ips:10.1f} img/s -> {c_ips / ours_ips:.2f}x eager"
              + (f" [{info.reason}]" if info.reason else ""))

    model = build_model(cfg, num_classes=len(meta["classes"]), image_size=x.shape[1]).to(rt.device)
    example = torch.randn(min(bs, 64), 3, x.shape[1], x.shape[1], device=rt.device)
    flops = train_flops_per_image(model, example)
    achieved = flops * ours_ips
    print(f"  training FLOPs per image (fwd+bwd, FlopCounterMode): {flops / 1e9:.3f} GFLOP; "
          f"achieved {achieved / 1e9:.1f} GFLOP/s")
    for dtype, peak in peaks.items():
        print(f"  matmul peak {dtype} ({n}^3, median of 5 x 10): {peak / 1e9:.1f} GFLOP/s -> "
              f"MFU vs {dtype} peak {achieved / peak:.1%}")


if __name__ == "__main__":
    main()
