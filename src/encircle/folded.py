"""K networks of one architecture run as one network: the models folded into the channels.

The batched trainer (:mod:`encircle.batched`) trains K independent copies of a network
on K different batches. ``torch.vmap`` runs them generically, but on a CPU its batching
rules move the model dimension between the batch and the channel axes from one layer to
the next (a grouped convolution folds it into the channels, max pooling into the batch),
and every move is a strided copy or a slow strided elementwise pass: measured on this
project's 2-core CPU (K = 6 paper-width MNIST LeNets, batch 200, forward + backward),
``vmap`` took 150-200 ms a step where the same arithmetic written directly took 59-86 ms.

Folding keeps the model dimension in one place from input to output. Model k's
activations are channels ``k*C .. (k+1)*C - 1`` of one ``(B, K*C, ...)`` tensor, laid out
channels-last, and each layer with weights acts on its own model's channel block:

* ``Conv2d`` -> one convolution with ``groups = K * groups`` and the K weights stacked;
* ``Linear`` -> a batched matmul of the K blocks of features with the K weights;
* ``BatchNorm`` -> torch's own over ``K * C`` channels: it is per channel, so it is
  exactly K BatchNorms, running statistics included.

Parameter-free operations that act per channel (pooling, activations, ``flatten(1)``,
which lays the K blocks one after another) need nothing. :func:`fold` replaces the
layers of a copy of the network and refuses (returns ``None``) a network with any other
kind of layer that holds weights; a forward whose code mixes channels (a reshape to a
fixed channel count, say) cannot be detected this way, so the batched trainer compares
the folded losses with ``vmap``'s on the first batch and keeps ``vmap`` when they differ.
The folded modules take the stacked ``(K, ...)`` tensors through
``torch.func.functional_call`` and infer K from them, so a subset of the models (a step in
which some models have no batch) runs the same code.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def _placeholder(like: torch.Tensor) -> nn.Parameter:
    """A weightless stand-in for a stacked parameter (``functional_call`` supplies it)."""
    return nn.Parameter(torch.empty(0, device="meta"), requires_grad=like.requires_grad)


def _optional_placeholder(like: torch.Tensor | None) -> nn.Parameter | None:
    return None if like is None else _placeholder(like)


class FoldedConv2d(nn.Module):
    """K ``Conv2d`` layers as one grouped convolution; ``weight`` is ``(K, C_out, C_in/g, kh, kw)``."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.weight = _placeholder(conv.weight)
        self.bias = _optional_placeholder(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        models = self.weight.shape[0]
        bias = None if self.bias is None else self.bias.flatten()
        return F.conv2d(
            x, self.weight.flatten(0, 1), bias, self.stride, self.padding, self.dilation, self.groups * models
        )


class FoldedLinear(nn.Module):
    """K ``Linear`` layers on the K feature blocks ``(..., K * F)``; ``weight`` is ``(K, D, F)``."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = _placeholder(linear.weight)
        self.bias = _optional_placeholder(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        models, _, features = self.weight.shape
        blocks = x.unflatten(-1, (models, features))
        out = torch.einsum("...kf,kdf->...kd", blocks, self.weight)
        if self.bias is not None:
            out = out + self.bias
        return out.flatten(-2)


class FoldedBatchNorm(nn.Module):
    """K BatchNorm layers as one over ``K * C`` channels; tensors are ``(K, C)`` (``(K,)`` for
    the batch count). Same arguments as torch's ``_BatchNorm.forward`` (momentum set)."""

    def __init__(self, norm: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        self.eps, self.momentum, self.track_running_stats = norm.eps, norm.momentum, norm.track_running_stats
        self.weight = _optional_placeholder(norm.weight)
        self.bias = _optional_placeholder(norm.bias)
        self.running_mean: torch.Tensor | None
        self.running_var: torch.Tensor | None
        self.num_batches_tracked: torch.Tensor | None
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self.register_buffer(name, None if getattr(norm, name) is None else torch.empty(0, device="meta"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        running_mean = None if self.running_mean is None else self.running_mean.flatten()
        running_var = None if self.running_var is None else self.running_var.flatten()
        normalise_by_batch = self.training or (running_mean is None and running_var is None)
        return F.batch_norm(
            x,
            running_mean if not self.training or self.track_running_stats else None,
            running_var if not self.training or self.track_running_stats else None,
            None if self.weight is None else self.weight.flatten(),
            None if self.bias is None else self.bias.flatten(),
            normalise_by_batch,
            self.momentum or 0.0,
            self.eps,
        )


_FOLDED: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv2d: FoldedConv2d,
    nn.Linear: FoldedLinear,
    nn.BatchNorm1d: FoldedBatchNorm,
    nn.BatchNorm2d: FoldedBatchNorm,
}


def _foldable(module: nn.Module) -> bool:
    kind = type(module)
    if kind is nn.Conv2d:
        return module.padding_mode == "zeros"
    if kind in (nn.BatchNorm1d, nn.BatchNorm2d):
        return module.momentum is not None  # the cumulative average needs a count per model
    return kind in _FOLDED


def fold(network: nn.Module) -> nn.Module | None:
    """A copy of ``network`` whose layers act on K folded models (see the module
    docstring), or ``None`` when one of its layers with weights has no folded form."""
    for module in network.modules():
        holds = any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))
        if holds and not _foldable(module):
            return None
    folded = copy.deepcopy(network).to("meta")
    for parent in list(folded.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in _FOLDED:
                replacement = _FOLDED[type(child)](child)
                replacement.train(child.training)
                setattr(parent, name, replacement)
    return folded


def fold_inputs(x: torch.Tensor) -> torch.Tensor:
    """K batches ``(K, B, C, ...)`` as one folded batch ``(B, K*C, ...)`` (a view when
    ``x`` is laid out as :func:`encircle.batched._stack_inputs` lays images out)."""
    moved = x.movedim(0, 1)
    return moved.reshape(moved.shape[0], -1, *moved.shape[3:])


def unfold_outputs(out: torch.Tensor, models: int) -> torch.Tensor:
    """A folded output ``(B, K*D)`` as K outputs ``(K, B, D)``."""
    return out.unflatten(1, (models, -1)).movedim(1, 0)
