"""Where the time of one training step goes: data, forward, backward, optimiser.

Measured in a separate short pass after training, as timm's benchmark does, instead of timers
inside the training loop: ``steps`` steps of the same :class:`~cifarbench.train.Trainer` parts
that training ran (same model, compiled or not, same batch drawing), each part ended by a
device synchronisation. The model's state is restored afterwards, so the pass changes nothing.
"""

from __future__ import annotations

import copy
import itertools
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from cifarbench.config import ModelConfig
from cifarbench.runtime import Runtime
from cifarbench.train import DeviceData, Trainer

PARTS = ("data", "forward", "backward", "optimizer")


def step_breakdown_ms(model: nn.Module, data: DeviceData, model_cfg: ModelConfig, rt: Runtime,
                      *, steps: int, step_model: Callable[[torch.Tensor], torch.Tensor] | None = None,
                      warmup: int = 2, seed: int = 0) -> dict[str, float]:
    """Median milliseconds per part over ``steps`` synchronised steps (after ``warmup``);
    an empty dict when ``steps`` is 0."""
    if steps <= 0:
        return {}
    state = copy.deepcopy(model.state_dict())
    run = Trainer(model, model if step_model is None else step_model, data, model_cfg, rt, seed=seed)
    order = run.epoch_order()
    times: dict[str, list[float]] = {p: [] for p in PARTS}
    model.train()
    for i in range(warmup + steps):
        j = i % run.steps_per_epoch
        marks = [_synced(rt)]
        x, t = run.draw(order, j, 0, i)
        marks.append(_synced(rt))
        loss = run.forward(x, t)
        marks.append(_synced(rt))
        run.backward(loss)
        marks.append(_synced(rt))
        run.optimizer_step(i)
        marks.append(_synced(rt))
        if i >= warmup:
            for part, (start, end) in zip(PARTS, itertools.pairwise(marks), strict=True):
                times[part].append(1000 * (end - start))
    model.load_state_dict(state)
    return {p: statistics.median(v) for p, v in times.items()}


def _synced(rt: Runtime) -> float:
    rt.synchronize()
    return time.perf_counter()
