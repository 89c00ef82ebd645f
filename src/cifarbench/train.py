"""The training loop: device-resident data, batched augmentation, autocast, schedules, metrics.

One function, :func:`train_run`, trains one model once; :func:`train_runs` repeats it over
seeds. The whole split lives on the training device as one uint8 tensor and every batch is
gathered, normalised and augmented there (airbench's approach), so there is no DataLoader and
no host-device copy in the hot path. Time is measured the honest way: evaluation and
``torch.compile`` warm-up are timed apart from ``train_time_s``, and the per-part breakdown is
sampled over a few synchronised steps instead of slowing every step.
"""

from __future__ import annotations

import contextlib
import copy
import math
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from cifarbench import augment
from cifarbench.config import AugmentConfig, TrainConfig
from cifarbench.errors import UserError
from cifarbench.runtime import Runtime

# ------------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class DeviceData:
    """Both splits on the training device. Images stay uint8 until a batch is drawn."""

    x_train: torch.Tensor  # (N, C, H, W) uint8
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor  # (M, C, H, W) uint8
    y_test: torch.Tensor  # (M,) int64
    mean: torch.Tensor  # (1, C, 1, 1) float32, 0-255 scale
    std: torch.Tensor  # (1, C, 1, 1) float32, 0-255 scale
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float32 (B, C, H, W), zero mean and unit std per channel."""
        return (x.float() - self.mean) / self.std


def to_device_data(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                   *, classes: list[str], mean: list[float], std: list[float],
                   device: torch.device) -> DeviceData:
    """Prepared NHWC uint8 arrays (mean/std on a 0-1 scale) -> :class:`DeviceData`."""

    def images(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).to(device).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(y.astype(np.int64)).to(device)

    def stat(v: list[float]) -> torch.Tensor:
        return torch.tensor(v, dtype=torch.float32, device=device).view(1, -1, 1, 1) * 255.0

    return DeviceData(images(train[0]), labels(train[1]), images(test[0]), labels(test[1]),
                      stat(mean), stat(std), tuple(classes))


# ------------------------------------------------------------------------------ pure maths


def lr_at(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Learning-rate multiplier (share of the peak ``cfg.lr``) at optimiser step ``step``.

    Linear warm-up from ``start_lr_frac`` to 1 over ``warmup_frac`` of the steps, then a linear
    ("triangle", airbench) or cosine decay to ``final_lr_frac``, or constant.
    """
    warmup = int(round(cfg.warmup_frac * total_steps))
    if step < warmup:
        return cfg.start_lr_frac + (1.0 - cfg.start_lr_frac) * step / warmup
    if cfg.schedule == "constant":
        return 1.0
    progress = min((step - warmup) / max(total_steps - warmup, 1), 1.0)
    if cfg.schedule == "triangle":
        return 1.0 + (cfg.final_lr_frac - 1.0) * progress
    return cfg.final_lr_frac + (1.0 - cfg.final_lr_frac) * 0.5 * (1.0 + math.cos(math.pi * progress))


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Share of rows of ``logits`` (B, K) whose argmax equals ``y`` (B,)."""
    return float((logits.argmax(dim=1) == y).float().mean())


# ------------------------------------------------------------------------------- results


@dataclass
class RunResult:
    seed: int
    test_accuracy: float  # final, with the configured test-time augmentation
    test_loss: float
    train_time_s: float  # optimisation only: no evaluation, no compile warm-up
    compile_time_s: float
    eval_time_s: float
    time_to_target_s: float | None  # training seconds until per-epoch accuracy >= target
    train_throughput_img_s: float
    peak_memory_mb: float
    peak_memory_kind: str
    breakdown_ms: dict[str, float]
    curves: list[dict[str, float]] = field(default_factory=list)
    predictions: torch.Tensor | None = None  # (M,) int64, CPU


# -------------------------------------------------------------------------------- training


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """Nesterov SGD (airbench) or AdamW, with normalisation parameters in their own group.

    Norm parameters learn ``bias_lr_scale`` times faster. With SGD they keep the same weight
    decay per step as the other weights (airbench: wd / scale); with AdamW, norms and biases
    are not decayed at all (the usual ViT practice).
    """
    norm_types = (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)
    norm_ids = {id(p) for m in model.modules() if isinstance(m, norm_types)
                for p in m.parameters(recurse=False)}
    params = [p for p in model.parameters() if p.requires_grad]
    norm = [p for p in params if id(p) in norm_ids]
    rest = [p for p in params if id(p) not in norm_ids]
    scale = cfg.bias_lr_scale
    groups: list[dict[str, Any]]
    if cfg.optimizer == "sgd":
        groups = [{"params": rest, "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
                  {"params": norm, "weight_decay": cfg.weight_decay / scale, "lr_scale": scale}]
    else:
        groups = [{"params": [p for p in rest if p.ndim > 1], "weight_decay": cfg.weight_decay,
                   "lr_scale": 1.0},
                  {"params": [p for p in rest if p.ndim <= 1], "weight_decay": 0.0, "lr_scale": 1.0},
                  {"params": norm, "weight_decay": 0.0, "lr_scale": scale}]
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["lr"] = cfg.lr * g["lr_scale"]
    fused = {"fused": True} if device.type == "cuda" else {}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0, **fused)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, cfg.beta2), **fused)


class Lookahead:
    """airbench's lookahead: every ``every`` steps, move an EMA of the weights (and float
    buffers) towards the model and copy it back. The decay ramps up as (step/total)^3, so early
    training is untouched and the end of training is strongly averaged; ``finish`` leaves the
    model at the average."""

    def __init__(self, model: nn.Module, total_steps: int, every: int = 5, base: float = 0.95):
        self.model, self.total, self.every, self.base = model, total_steps, every, base
        self.avg = {k: v.detach().clone() for k, v in model.state_dict().items()
                    if v.dtype.is_floating_point}

    @torch.no_grad()
    def step(self, step: int) -> None:
        if step % self.every == 0:
            self._pull(self.base ** self.every * (step / self.total) ** 3)

    @torch.no_grad()
    def finish(self) -> None:
        self._pull(1.0)

    def _pull(self, decay: float) -> None:
        state = self.model.state_dict()
        for k, avg in self.avg.items():
            avg.lerp_(state[k], 1.0 - decay)
            state[k].copy_(avg)


def train_run(model: nn.Module, data: DeviceData, cfg: TrainConfig, aug: AugmentConfig,
              rt: Runtime, *, seed: int, name: str, log: TextIO = sys.stderr) -> RunResult:
    """Train ``model`` (freshly built, on CPU or ``rt.device``) once and evaluate it."""
    dev = rt.device
    channels_last = any(isinstance(m, nn.Conv2d) for m in model.modules())
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(dev).to(memory_format=fmt)
    gen = torch.Generator(device=dev).manual_seed(seed)
    init_whitening = getattr(model, "init_whitening", None)  # the CNN's data-dependent init
    if init_whitening is not None:
        sample = data.x_train[torch.randperm(len(data.x_train), device=dev, generator=gen)[:5000]]
        init_whitening(data.normalize(sample))

    n = len(data.x_train)
    bs = min(cfg.batch_size, n)
    steps_per_epoch = n // bs  # the last partial batch is dropped (BatchNorm dislikes tiny ones)
    total_steps = max(1, int(round(cfg.epochs * steps_per_epoch)))
    opt = make_optimizer(model, cfg, dev)
    scaler = torch.amp.GradScaler(dev.type) if rt.needs_grad_scaler else None
    ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
           if cfg.ema_decay > 0 else None)
    lookahead = Lookahead(model, total_steps) if cfg.lookahead else None
    step_model = torch.compile(model) if cfg.compile else model
    flip_base = torch.rand(n, device=dev, generator=gen) < 0.5

    def batch(idx: torch.Tensor, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = data.normalize(data.x_train[idx])  # (B, C, H, W) float32
        if aug.flip == "alternating":
            x = augment.flip_where(x, augment.alternating_flip_mask(flip_base[idx], epoch))
        elif aug.flip == "random":
            x = augment.flip_where(x, torch.rand(len(idx), device=dev, generator=gen) < 0.5)
        x = augment.random_translate(x, aug.translate, gen)
        x = augment.random_erase(x, aug.erasing_prob, gen)
        t = augment.one_hot_smooth(data.y_train[idx], data.num_classes, cfg.label_smoothing)
        x, t = augment.mix_batch(x, t, mixup_alpha=aug.mixup_alpha, cutmix_alpha=aug.cutmix_alpha,
                                 prob=aug.mix_prob, gen=gen)
        return x.contiguous(memory_format=fmt), t

    def forward_backward(x: torch.Tensor, t: torch.Tensor, timer: _PartTimer | None) -> torch.Tensor:
        with rt.autocast(), _attention_kernels(dev):
            loss = F.cross_entropy(step_model(x).float(), t)
        if timer:
            timer.mark("forward")
        (scaler.scale(loss) if scaler else loss).backward()
        if timer:
            timer.mark("backward")
        return loss

    def optimizer_step(step: int) -> None:
        scale = lr_at(step, total_steps, cfg)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * g["lr_scale"] * scale
        if scaler:
            scaler.unscale_(opt)
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update_parameters(model)
        if lookahead is not None:
            lookahead.step(step + 1)

    compile_time_s = 0.0
    if cfg.compile:  # trigger compilation on a throwaway step, then restore the initial state
        state = copy.deepcopy(model.state_dict())
        t0 = time.perf_counter()
        x, t = batch(torch.arange(bs, device=dev), 0)
        forward_backward(x, t, None)  # evaluation runs eager: no eval graph to compile
        rt.synchronize()
        compile_time_s = time.perf_counter() - t0
        opt.zero_grad(set_to_none=True)
        model.load_state_dict(state)

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    breakdown = _PartTimer(rt)
    # Sample the breakdown at the start of the second epoch (or as late as the run allows):
    # the first steps pay for kernel selection and allocator growth.
    sample_from = max(min(steps_per_epoch, total_steps - cfg.breakdown_steps), 0)
    curves: list[dict[str, float]] = []
    train_time = eval_time = 0.0
    time_to_target = None
    step = 0
    epoch = 0
    model.train()
    while step < total_steps:
        rt.synchronize()
        t_epoch = time.perf_counter()
        perm = torch.randperm(n, device=dev, generator=gen)
        loss_sum = torch.zeros((), device=dev)
        steps_this_epoch = min(steps_per_epoch, total_steps - step)
        for i in range(steps_this_epoch):
            timer = breakdown if sample_from <= step < sample_from + cfg.breakdown_steps else None
            if timer:
                timer.start()
            x, t = batch(perm[i * bs:(i + 1) * bs], epoch)
            if timer:
                timer.mark("data")
            loss_sum += forward_backward(x, t, timer).detach()
            optimizer_step(step)
            if timer:
                timer.mark("optimizer")
            step += 1
        rt.synchronize()
        train_time += time.perf_counter() - t_epoch
        epoch += 1
        train_loss = float(loss_sum) / steps_this_epoch
        if not math.isfinite(train_loss):
            raise UserError(
                f"models.{name}: training diverged (mean loss {train_loss} in epoch {epoch}) at "
                f"learning rate models.{name}.train.lr = {cfg.lr}; lower it or add warm-up")
        if epoch % cfg.eval_every == 0 or step >= total_steps:
            t_eval = time.perf_counter()
            acc, _, _ = evaluate(ema.module if ema else model, data, rt, tta="none",
                                 batch_size=max(bs, 500))
            eval_time += time.perf_counter() - t_eval
            if time_to_target is None and acc >= cfg.target_accuracy:
                time_to_target = train_time
            curves.append({"epoch": round(step / steps_per_epoch, 3), "train_loss": train_loss,
                           "test_accuracy": acc, "elapsed_s": train_time})
            print(f"{name} seed {seed}: epoch {step / steps_per_epoch:.2f}/{cfg.epochs:g} "
                  f"loss {train_loss:.4f} test acc {acc:.4f} ({train_time:.1f} s)", file=log)

    if lookahead is not None:
        lookahead.finish()
    t_eval = time.perf_counter()
    final = ema.module if ema else model
    test_acc, test_loss, preds = evaluate(final, data, rt, tta=cfg.tta, batch_size=max(bs, 500))
    eval_time += time.perf_counter() - t_eval
    if ema is not None:  # ship the averaged weights: they are what was evaluated
        model.load_state_dict(ema.module.state_dict())
    peak_mb, peak_kind = peak_memory_mb(dev)
    return RunResult(
        seed=seed, test_accuracy=test_acc, test_loss=test_loss, train_time_s=train_time,
        compile_time_s=compile_time_s, eval_time_s=eval_time, time_to_target_s=time_to_target,
        train_throughput_img_s=total_steps * bs / train_time, peak_memory_mb=peak_mb,
        peak_memory_kind=peak_kind, breakdown_ms=breakdown.mean_ms(), curves=curves,
        predictions=preds.cpu())


@torch.inference_mode()
def evaluate(model: nn.Module, data: DeviceData, rt: Runtime, *, tta: str = "none",
             batch_size: int = 1000) -> tuple[float, float, torch.Tensor]:
    """Test accuracy, mean loss and predicted labels (M,), with optional test-time augmentation:
    ``flip`` averages the logits of each image and its mirror; ``flip_translate`` adds both
    views shifted by one pixel (airbench's TTA level 2)."""
    was_training = model.training
    model.eval()
    fmt = torch.channels_last if any(isinstance(m, nn.Conv2d) for m in model.modules()) \
        else torch.contiguous_format
    logits_all = []
    for i in range(0, len(data.x_test), batch_size):
        x = data.normalize(data.x_test[i:i + batch_size]).contiguous(memory_format=fmt)
        views = [x]
        if tta in ("flip", "flip_translate"):
            views.append(x.flip(3))
        if tta == "flip_translate":
            padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
            shifted = [padded[:, :, :-2, :-2], padded[:, :, 2:, 2:]]
            views += shifted + [v.flip(3) for v in shifted]
        with rt.autocast():
            logits = torch.stack([model(v.contiguous(memory_format=fmt)).float() for v in views]).mean(0)
        logits_all.append(logits)
    model.train(was_training)
    logits = torch.cat(logits_all)  # (M, K)
    loss = float(F.cross_entropy(logits, data.y_test))
    preds = logits.argmax(dim=1)
    return float((preds == data.y_test).float().mean()), loss, preds


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """GPU: peak allocated by the caching allocator; CPU: the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "host_peak_rss"  # KiB on Linux


def _attention_kernels(device: torch.device) -> contextlib.AbstractContextManager:
    """On CPU, train attention with the plain-matmul SDPA kernel: for short sequences (64
    tokens) its backward pass is far faster than the CPU flash kernel's (measured 1.4x on a
    whole ViT training step, 2-core AMD EPYC, bf16). GPUs keep PyTorch's own choice."""
    if device.type == "cpu":
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


class _PartTimer:
    """Synchronised wall-clock time of each part of a training step, over sampled steps."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.totals: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self._last = 0.0

    def start(self) -> None:
        self.rt.synchronize()
        self._last = time.perf_counter()

    def mark(self, part: str) -> None:
        self.rt.synchronize()
        now = time.perf_counter()
        self.totals[part] = self.totals.get(part, 0.0) + now - self._last
        self.counts[part] = self.counts.get(part, 0) + 1
        self._last = now

    def mean_ms(self) -> dict[str, float]:
        return {k: 1000 * v / self.counts[k] for k, v in self.totals.items()}


def train_runs(build: Callable[[], nn.Module], data: DeviceData, cfg: TrainConfig,
               aug: AugmentConfig, rt: Runtime, *, seed: int, name: str,
               log: TextIO = sys.stderr) -> tuple[list[RunResult], dict[str, torch.Tensor]]:
    """``cfg.runs`` independent runs with seeds ``seed``, ``seed + 1``, ...; returns their
    results and the trained weights of the first run (CPU tensors)."""
    results, first_state = [], None
    for i in range(cfg.runs):
        torch.manual_seed(seed + i)  # model initialisation
        model = build()
        results.append(train_run(model, data, cfg, aug, rt, seed=seed + i, name=name, log=log))
        if first_state is None:
            first_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    assert first_state is not None  # cfg.runs >= 1
    return results, first_state
