"""The training loop: device-resident data, batched augmentation, autocast, schedules, metrics.

:func:`train_run` trains one model once; :func:`train_runs` repeats it over seeds on one module
(compiled once), after an untimed warm-up. The whole split lives on the training device as one
uint8 tensor and every batch is gathered, normalised and augmented there (airbench's
approach), so there is no DataLoader and no host-device copy in the hot path.

What ``train_time_s`` counts (airbench's definition): the synchronised wall time of the
optimisation steps of one run, batch drawing and augmentation included; not evaluation, not
the warm-up (cuDNN autotuning, lazy CUDA module loading, allocator growth, ``torch.compile``),
not the whitening initialisation (airbench counts that; it is a few ms). The per-part step
breakdown is measured in a separate pass (:mod:`cifarbench.profiling.breakdown`).
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TextIO

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from cifarbench import augment
from cifarbench.config import ModelConfig, TrainConfig, budget_epoch_steps
from cifarbench.errors import UserError
from cifarbench.models import has_conv, init_from_data, late_frozen_params
from cifarbench.profiling.memory import host_peak_rss_mb
from cifarbench.runtime import Runtime, isolate_compile_cache

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
    source_train_images: int | None = None  # the source's whole train split (None: x_train's)

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
                   device: torch.device, source_train_images: int | None = None) -> DeviceData:
    """Prepared NHWC uint8 arrays (mean/std on a 0-1 scale) -> :class:`DeviceData`."""

    def images(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).to(device).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(y.astype(np.int64)).to(device)

    def stat(v: list[float]) -> torch.Tensor:
        return torch.tensor(v, dtype=torch.float32, device=device).view(1, -1, 1, 1) * 255.0

    return DeviceData(images(train[0]), labels(train[1]), images(test[0]), labels(test[1]),
                      stat(mean), stat(std), tuple(classes), source_train_images)


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


# ------------------------------------------------------------------------------- results


@dataclass
class RunResult:
    seed: int
    test_accuracy: float  # final, with the configured test-time augmentation
    test_loss: float
    train_time_s: float  # optimisation steps only (see the module docstring)
    eval_time_s: float
    time_to_target_s: float | None  # training seconds until the (TTA) test accuracy >= target
    train_throughput_img_s: float
    peak_memory_mb: float
    peak_memory_kind: str
    curves: list[dict[str, float]] = field(default_factory=list)
    predictions: torch.Tensor | None = None  # (M,) int64, CPU


@dataclass
class CompileInfo:
    """What ran the training steps: ``eager`` (compile off), ``compiled``, or ``fallback``
    (compile asked for, eager used: ``reason`` says why)."""

    mode: Literal["eager", "compiled", "fallback"] = "eager"
    reason: str | None = None
    compile_time_s: float = 0.0  # first compiled call (tracing + code generation)
    check: dict[str, float] = field(default_factory=dict)  # compiled vs eager, first step
    recompiles: int = 0  # graphs compiled after the warm-up (0 expected)


@dataclass
class TrainingResult:
    runs: list[RunResult]
    weights: dict[str, torch.Tensor]  # of the first run, CPU tensors
    compile: CompileInfo
    warmup_time_s: float  # untimed warm-up before run 0 (compile included)
    model: nn.Module  # the trained module (last run), on the training device
    step_model: Callable[[torch.Tensor], torch.Tensor]  # what ran the steps (compiled or not)


# -------------------------------------------------------------------------------- progress


@dataclass(frozen=True)
class EpochRecord:
    """What one training epoch reports, outside the timed region."""

    run: int  # 0-based run index (seed = base seed + run)
    epoch: float  # epochs trained so far in this run
    train_loss: float  # mean over the epoch's steps
    lr: float  # peak-group learning rate at the epoch's last step
    img_s: float  # training images per second over the epoch
    elapsed_s: float  # training seconds so far in this run
    test_accuracy: float | None  # with TTA, when this epoch was evaluated


class Progress(Protocol):
    """Receives every epoch of every timed run (the warm-up reports nothing)."""

    def epoch_end(self, record: EpochRecord) -> None: ...


class PrintProgress:
    """One stderr line per evaluation: the plain default (tests, notebooks)."""

    def __init__(self, name: str, epochs: float, log: TextIO = sys.stderr) -> None:
        self.name, self.epochs, self.log = name, epochs, log

    def epoch_end(self, r: EpochRecord) -> None:
        if r.test_accuracy is not None:
            print(f"{self.name} run {r.run}: epoch {r.epoch:.2f}/{self.epochs:g} loss "
                  f"{r.train_loss:.4f} test acc {r.test_accuracy:.4f} ({r.elapsed_s:.1f} s)",
                  file=self.log)


# -------------------------------------------------------------------------------- training


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device,
                   late_frozen: Sequence[tuple[torch.Tensor, int]] = ()) -> torch.optim.Optimizer:
    """Nesterov SGD (airbench) or AdamW, with normalisation parameters in their own group.

    Norm parameters learn ``bias_lr_scale`` times faster. With SGD they keep the same weight
    decay per step as the other weights (airbench: wd / scale); with AdamW, norms and biases
    are not decayed at all (the usual ViT practice). Each ``(parameter, step)`` of
    ``late_frozen`` gets a group of its own whose learning rate drops to 0 at that step.
    """
    norm_types = (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)
    norm_ids = {id(p) for m in model.modules() if isinstance(m, norm_types)
                for p in m.parameters(recurse=False)}
    frozen_at = {id(p): step for p, step in late_frozen}
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
    split = []
    for g in groups:
        for p in g["params"]:
            if id(p) in frozen_at:
                split.append({**g, "params": [p], "until_step": frozen_at[id(p)]})
        g["params"] = [p for p in g["params"] if id(p) not in frozen_at]
    groups = [g for g in groups + split if g["params"]]
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


class Trainer:
    """One run's optimisation state and the parts of a step: :meth:`draw` a batch,
    :meth:`forward`, :meth:`backward`, :meth:`optimizer_step`. ``step_model`` is ``model`` itself or its
    compiled form (sharing the parameters)."""

    def __init__(self, model: nn.Module, step_model: Callable[[torch.Tensor], torch.Tensor],
                 data: DeviceData, model_cfg: ModelConfig, rt: Runtime, *, seed: int) -> None:
        cfg = model_cfg.train
        self.model, self.step_model, self.data, self.cfg, self.rt = model, step_model, data, cfg, rt
        dev = rt.device
        self.gen = torch.Generator(device=dev).manual_seed(seed)
        n = len(data.x_train)
        self.batch_size = min(cfg.batch_size, n)
        self.steps_per_epoch = n // self.batch_size  # one pass; last partial batch dropped (BatchNorm)
        # the unit of every epoch count in the recipe: a pass over the training set, or over
        # the source's whole train split under `budget: steps` (then a subset is passed over
        # more often)
        self.epoch_steps = budget_epoch_steps(cfg, n, data.source_train_images or n)
        self.total_steps = max(1, int(round(cfg.epochs * self.epoch_steps)))
        sample = data.x_train[torch.randperm(n, device=dev, generator=self.gen)[:5000]]
        init_from_data(model, data.normalize(sample))
        self.augment = augment.BatchAugment(
            model_cfg.augment, mean=data.mean, std=data.std, num_classes=data.num_classes,
            label_smoothing=cfg.label_smoothing, n_train=n, gen=self.gen,
            host=np.random.default_rng(seed), memory_format=memory_format(model))
        # mixup/cutmix switch off for the last mix_off_epochs (CCT)
        self.mix_until_step = self.total_steps - int(round(model_cfg.augment.mix_off_epochs
                                                           * self.epoch_steps))
        late = [(p, int(round(epochs * self.epoch_steps)))
                for p, epochs in late_frozen_params(model, model_cfg)]
        self.opt = make_optimizer(model, cfg, dev, late)
        self.scaler = torch.amp.GradScaler(dev.type) if rt.needs_grad_scaler else None
        self.ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay),
                                  use_buffers=True) if cfg.ema_decay > 0 else None)
        self.lookahead = Lookahead(model, self.total_steps) if cfg.lookahead else None

    def epoch_order(self) -> torch.Tensor:
        return torch.randperm(len(self.data.x_train), device=self.rt.device, generator=self.gen)

    def draw(self, order: torch.Tensor, i: int, epoch: int, step: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``i`` of an epoch's ``order``: inputs (B, C, H, W) and targets (B, K)."""
        idx = order[i * self.batch_size:(i + 1) * self.batch_size]
        return self.augment(self.data.x_train[idx], self.data.y_train[idx], idx, epoch=epoch,
                            mix=step < self.mix_until_step)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Mean soft-target cross-entropy of the batch, under the runtime's autocast."""
        with self.rt.autocast(), _attention_kernels(self.rt.device):
            return F.cross_entropy(self.step_model(x).float(), t)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def forward_backward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        loss = self.forward(x, t)
        self.backward(loss)
        return loss.detach()

    def optimizer_step(self, step: int) -> None:
        cfg, opt, scaler = self.cfg, self.opt, self.scaler
        scale = lr_at(step, self.total_steps, cfg)
        for g in opt.param_groups:
            frozen = step >= g.get("until_step", self.total_steps)
            g["lr"] = 0.0 if frozen else cfg.lr * g["lr_scale"] * scale
        if scaler:
            scaler.unscale_(opt)
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        if self.lookahead is not None:
            self.lookahead.step(step + 1)

    def final_model(self) -> nn.Module:
        """Leave the model at its averaged weights (lookahead, EMA) and return it."""
        if self.lookahead is not None:
            self.lookahead.finish()
        if self.ema is not None:
            self.model.load_state_dict(self.ema.module.state_dict())
        return self.model


def train_run(model: nn.Module, data: DeviceData, model_cfg: ModelConfig, rt: Runtime, *,
              seed: int, name: str, step_model: Callable[[torch.Tensor], torch.Tensor] | None = None,
              max_steps: int | None = None, progress: Progress | None = None,
              run_index: int = 0) -> RunResult:
    """Train ``model`` (already on ``rt.device``, freshly initialised) once and evaluate it.

    ``step_model`` (default ``model``) runs the training forward passes, e.g. a compiled form
    of ``model``; ``max_steps`` stops early (the warm-up). Evaluation always runs eager.
    ``progress`` hears about every epoch, between timed regions."""
    cfg = model_cfg.train
    torch.manual_seed(seed)  # dropout and stochastic depth draw from the global RNG
    run = Trainer(model, model if step_model is None else step_model, data, model_cfg, rt, seed=seed)
    total = run.total_steps if max_steps is None else min(max_steps, run.total_steps)
    if rt.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(rt.device)
    curves: list[dict[str, float]] = []
    train_time = eval_time = 0.0
    time_to_target = None
    step = epoch = 0
    eval_interval = max(1, int(round(cfg.eval_every * run.epoch_steps)))  # steps
    next_eval = eval_interval
    model.train()
    while step < total:
        rt.synchronize()
        t_epoch = time.perf_counter()
        order = run.epoch_order()
        loss_sum = torch.zeros((), device=rt.device)
        steps_this_epoch = min(run.steps_per_epoch, total - step)
        for i in range(steps_this_epoch):
            x, t = run.draw(order, i, epoch, step)
            loss_sum += run.forward_backward(x, t)
            run.optimizer_step(step)
            step += 1
        rt.synchronize()
        epoch_s = time.perf_counter() - t_epoch
        train_time += epoch_s
        epoch += 1
        train_loss = float(loss_sum) / steps_this_epoch
        if not math.isfinite(train_loss):
            raise UserError(
                f"models.{name}: training diverged (mean loss {train_loss} in epoch {epoch}) at "
                f"learning rate models.{name}.train.lr = {cfg.lr}; lower it or add warm-up")
        if max_steps is not None:
            continue
        acc = None
        if step >= next_eval or step >= total:
            next_eval = (step // eval_interval + 1) * eval_interval
            # The accuracy the target is defined on: with the run's test-time augmentation.
            t_eval = time.perf_counter()
            acc, _, _ = evaluate(run.ema.module if run.ema else model, data, rt, tta=cfg.tta,
                                 batch_size=max(run.batch_size, 500))
            eval_time += time.perf_counter() - t_eval
            if time_to_target is None and acc >= cfg.target_accuracy:
                time_to_target = train_time
            curves.append({"epoch": round(step / run.epoch_steps, 3), "train_loss": train_loss,
                           "test_accuracy": acc, "elapsed_s": train_time})
        if progress is not None:
            progress.epoch_end(EpochRecord(
                run=run_index, epoch=round(step / run.epoch_steps, 3), train_loss=train_loss,
                lr=cfg.lr * lr_at(step - 1, run.total_steps, cfg),
                img_s=steps_this_epoch * run.batch_size / max(epoch_s, 1e-9),
                elapsed_s=train_time, test_accuracy=acc))

    final = run.final_model()
    t_eval = time.perf_counter()
    test_acc, test_loss, preds = evaluate(final, data, rt, tta=cfg.tta,
                                          batch_size=max(run.batch_size, 500))
    eval_time += time.perf_counter() - t_eval
    peak_mb, peak_kind = peak_memory_mb(rt.device)
    return RunResult(
        seed=seed, test_accuracy=test_acc, test_loss=test_loss, train_time_s=train_time,
        eval_time_s=eval_time, time_to_target_s=time_to_target,
        train_throughput_img_s=step * run.batch_size / train_time, peak_memory_mb=peak_mb,
        peak_memory_kind=peak_kind, curves=curves, predictions=preds.cpu())


@torch.inference_mode()
def evaluate(model: nn.Module, data: DeviceData, rt: Runtime, *, tta: str = "none",
             batch_size: int = 1000) -> tuple[float, float, torch.Tensor]:
    """Test accuracy, mean loss and predicted labels (M,), with optional test-time augmentation:
    ``flip`` averages the logits of each image and its mirror; ``flip_translate`` (airbench's
    TTA level 2) gives that pair weight 1/2 and the mean of the four views shifted by one pixel
    (up-left and down-right, each with its mirror) the other 1/2."""
    was_training = model.training
    model.eval()
    fmt = memory_format(model)

    def logits_of(v: torch.Tensor) -> torch.Tensor:
        return model(v.contiguous(memory_format=fmt)).float()

    def with_mirror(v: torch.Tensor) -> torch.Tensor:
        return logits_of(v) if tta == "none" else 0.5 * (logits_of(v) + logits_of(v.flip(3)))

    logits_all = []
    for i in range(0, len(data.x_test), batch_size):
        x = data.normalize(data.x_test[i:i + batch_size])
        with rt.autocast():
            logits = with_mirror(x)
            if tta == "flip_translate":
                padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
                shifted = 0.5 * (with_mirror(padded[:, :, :-2, :-2])
                                 + with_mirror(padded[:, :, 2:, 2:]))
                logits = 0.5 * logits + 0.5 * shifted
        logits_all.append(logits)
    model.train(was_training)
    logits = torch.cat(logits_all)  # (M, K)
    loss = float(F.cross_entropy(logits, data.y_test))
    preds = logits.argmax(dim=1)
    return float((preds == data.y_test).float().mean()), loss, preds


def memory_format(model: nn.Module) -> torch.memory_format:
    """channels_last for models with convolutions (cuDNN/oneDNN NHWC kernels), else NCHW."""
    return torch.channels_last if has_conv(model) else torch.contiguous_format


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """GPU: peak allocated by the caching allocator; CPU: the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    return host_peak_rss_mb(), "host_peak_rss"


def _attention_kernels(device: torch.device) -> contextlib.AbstractContextManager:
    """On CPU, train attention with the plain-matmul SDPA kernel: for short sequences (64
    tokens) its backward pass is far faster than the CPU flash kernel's (measured 1.4x on a
    whole ViT training step, 2-core AMD EPYC, bf16). GPUs keep PyTorch's own choice."""
    if device.type == "cpu":
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


# ------------------------------------------------------------------- compile and warm-up


def compile_checked(model: nn.Module, data: DeviceData, model_cfg: ModelConfig, rt: Runtime,
                    *, name: str = "model", log: TextIO = sys.stderr) -> tuple[Callable[[torch.Tensor], torch.Tensor],
                                                         CompileInfo]:
    """``torch.compile(model)``, checked on one training step against eager.

    Both take the same batch from the same state (restored afterwards). If compiling raises,
    or the compiled loss or gradients are non-finite where eager's are not, or differ from
    eager's by more than :data:`COMPILE_TOLERANCE` for the precision, the run says so on stderr
    and trains eager; :class:`CompileInfo` records which ran and why."""
    if not model_cfg.train.compile:
        return model, CompileInfo()
    state = copy.deepcopy(model.state_dict())
    run = Trainer(model, model, data, model_cfg, rt, seed=0)
    x, t = run.draw(run.epoch_order(), 0, 0, 0)
    model.train()

    def loss_and_grads(fn: Callable[[torch.Tensor], torch.Tensor]) -> tuple[float, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        run.step_model = fn  # the training step's own forward, through eager or compiled
        loss = run.forward(x, t)
        loss.backward()
        grads = [p.grad.flatten().float() for p in model.parameters() if p.grad is not None]
        return float(loss.detach()), torch.cat(grads)

    eager_loss, eager_grads = loss_and_grads(model)
    isolate_compile_cache(rt)
    compiled = torch.compile(model)
    info = CompileInfo(mode="compiled")
    t0 = time.perf_counter()
    try:
        loss, grads = loss_and_grads(compiled)
        rt.synchronize()
    except Exception as exc:  # noqa: BLE001 - inductor/dynamo failures are many and varied
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        info = CompileInfo(mode="fallback", reason=f"compile failed: {type(exc).__name__}: {first}")
    else:
        info.compile_time_s = time.perf_counter() - t0
        info.check = {"eager_loss": eager_loss, "compiled_loss": loss,
                      "grad_rel_diff": float((grads - eager_grads).norm()
                                             / eager_grads.norm().clamp_min(1e-12))}
        tol = COMPILE_TOLERANCE[rt.dtype_name]
        if not (math.isfinite(loss) and bool(grads.isfinite().all())):
            info.mode, info.reason = "fallback", "compiled step gave non-finite loss or gradients"
        elif info.check["grad_rel_diff"] > tol:
            info.mode = "fallback"
            info.reason = (f"compiled gradients differ from eager by {info.check['grad_rel_diff']:.3g}"
                           f" (relative L2; tolerance {tol:g} in {rt.dtype_name})")
    model.zero_grad(set_to_none=True)
    model.load_state_dict(state)
    if info.mode == "fallback":
        print(f"warning: models.{name}: torch.compile not used, training eager: "
              f"{info.reason}", file=log)
        return model, info
    return compiled, info


# Relative L2 distance between the compiled and the eager gradients of one step, from the same
# state and batch, that still counts as the same computation. Low precision reorders and
# rounds differently inside fused kernels; fp32 reorders sums (measured 1.5e-3 on the tiny test CNN,
# whose BatchNorm over few pixels amplifies it).
COMPILE_TOLERANCE = {"fp32": 1e-2, "bf16": 0.25, "fp16": 0.1}


def train_runs(build: Callable[[], nn.Module], data: DeviceData, model_cfg: ModelConfig,
               rt: Runtime, *, seed: int, name: str, progress: Progress | None = None,
               log: TextIO = sys.stderr) -> TrainingResult:
    """``runs`` independent runs with seeds ``seed``, ``seed + 1``, ... on one module (compiled
    once, re-initialised per run), after an untimed warm-up of ``warmup_steps`` steps and one
    evaluation that pays for autotuning, lazy loading and allocator growth."""
    cfg = model_cfg.train

    def fresh(run_seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(run_seed)  # model initialisation
        return build().state_dict()

    model = build()
    model = model.to(rt.device).to(memory_format=memory_format(model))
    step_model, info = compile_checked(model, data, model_cfg, rt, name=name, log=log)
    t0 = time.perf_counter()
    if cfg.warmup_steps > 0:
        model.load_state_dict(fresh(seed))
        # a short run: its steps, then the final evaluation; the result is discarded
        train_run(model, data, model_cfg, rt, seed=seed, name=name, step_model=step_model,
                  max_steps=cfg.warmup_steps)
    rt.synchronize()
    warmup_time = time.perf_counter() - t0
    graphs_before = _unique_graphs()

    results, weights = [], {}
    for i in range(cfg.runs):
        model.load_state_dict(fresh(seed + i))
        results.append(train_run(model, data, model_cfg, rt, seed=seed + i, name=name,
                                 step_model=step_model, progress=progress, run_index=i))
        if i == 0:
            weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    info.recompiles = _unique_graphs() - graphs_before
    if info.mode == "compiled" and info.recompiles:
        print(f"warning: models.{name}: torch.compile recompiled {info.recompiles} time(s) during "
              f"the timed runs; their train_time_s includes compilation", file=log)
    return TrainingResult(results, weights, info, warmup_time, model, step_model)


def _unique_graphs() -> int:
    from torch._dynamo.utils import counters  # private, but the only count of compiled graphs
    return int(counters["stats"]["unique_graphs"])
