"""How much memory one model's training step needs, and how much the device has free.

The batched trainer (:mod:`encircle.batched`) holds K models' activations at once, so its
memory grows linearly with K; :func:`training_bytes` estimates one model's share without
running it, and :func:`free_bytes` the budget, so an automatic ``train.batch_models``
splits a sweep into chunks that fit.

The estimate runs the network once on the ``meta`` device (shapes only, no arithmetic,
no memory) under a dispatch mode that adds up the bytes of every tensor an operation
returns: an upper bound on what autograd saves for the backward pass. One step needs
about that again for the gradients of those activations and once more for working
copies (:data:`TENSORS_PER_ACTIVATION`), plus, per parameter, the value, its gradient
and two optimiser moments (Adam). Written here because torch offers no
estimate before allocation; ``torch.cuda.max_memory_allocated`` measures only after.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

#: per parameter element: the value, its gradient and Adam's two moments
TENSORS_PER_PARAMETER = 4
#: per activation element: the saved forward value, its gradient and a working copy.
#: Calibrated on ``benchmarks/many_models.py`` (paper-width LeNet, batch 200): peak RSS
#: grew by 49 MiB per extra model in flight, against 34 MiB estimated with 2.
TENSORS_PER_ACTIVATION = 3


class _OutputBytes(TorchDispatchMode):
    """Adds up the bytes of every tensor the operations under it return."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self.total += sum(t.numel() * t.element_size() for t in tree_leaves(out) if isinstance(t, torch.Tensor))
        return out


def training_bytes(network: nn.Module, sample_shape: tuple[int, ...], batch_size: int) -> int:
    """Estimated bytes of one training step of ``network`` on ``batch_size`` samples of
    ``sample_shape`` (float32; see the module docstring)."""
    probe = copy.deepcopy(network).to("meta").train()
    counter = _OutputBytes()
    with counter:
        probe(torch.empty(batch_size, *sample_shape, device="meta"))
    parameters = sum(p.numel() * p.element_size() for p in network.parameters())
    return TENSORS_PER_ACTIVATION * counter.total + TENSORS_PER_PARAMETER * parameters


def free_bytes(device: torch.device) -> int:
    """Memory free for training on ``device``: the GPU's free memory, or the host's
    available memory (``MemAvailable``; all physical memory where that is unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
