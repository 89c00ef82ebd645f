"""FLOPs per image, counted by ``torch.utils.flop_counter.FlopCounterMode``.

The counter sees every matmul, convolution and attention (SDPA) kernel the model dispatches,
for forward and backward, and counts a multiply-add as 2 FLOPs. Elementwise work (norms,
activations, softmax outside SDPA) is not counted, as in fvcore and timm's GMACs. We label the
numbers FLOPs; MACs = FLOPs / 2. A training step is forward plus backward with the input not
requiring a gradient, as in training, so the first layer computes no input gradient and a deep
network costs just under 3x its forward pass.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def forward_flops_per_image(model: nn.Module, example: torch.Tensor) -> float:
    """Forward FLOPs of ``model`` on ``example`` (B, ...) divided by B, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / example.shape[0]


def train_flops_per_image(model: nn.Module, example: torch.Tensor) -> float:
    """FLOPs of one forward+backward pass per image (optimiser update not counted).

    Runs on a deep copy in train mode, so BatchNorm running statistics and ``.grad`` of the
    profiled model are left untouched.
    """
    clone = copy.deepcopy(model).train()
    for p in clone.parameters():
        p.requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        out = clone(example)  # (B, K)
        out.float().sum().backward()  # the loss's own cost is not a matmul; not counted
    return counter.get_total_flops() / example.shape[0]
