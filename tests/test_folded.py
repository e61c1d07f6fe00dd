"""Folded networks (:mod:`encircle.folded`): K models in one network equal K separate ones."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state

from encircle.batched import _FoldedLoss, _Stack, _stack_inputs
from encircle.folded import fold, fold_inputs, unfold_outputs
from encircle.methods import create_method
from encircle.models import create_model
from encircle.models.base import Backbone

MODELS = 3
BATCH = 16


def _networks(name: str, **kwargs: object) -> list[nn.Module]:
    torch.manual_seed(0)
    return [create_model(name, **kwargs) for _ in range(MODELS)]


def _inputs(shape: tuple[int, ...]) -> list[torch.Tensor]:
    torch.manual_seed(1)
    return [torch.randn(BATCH, *shape) for _ in range(MODELS)]


def _close(a: torch.Tensor, b: torch.Tensor, scale: float = 1e-4) -> bool:
    """Equal to float32 rounding: the largest difference within ``scale`` of the largest value."""
    return bool((a - b).abs().max() <= scale * b.abs().max() + 1e-6)


def _folded_forward(nets: list[nn.Module], xs: list[torch.Tensor]) -> tuple[torch.Tensor, dict, dict]:
    params, buffers = stack_module_state(nets)
    folded = fold(nets[0])
    assert folded is not None
    folded.train(nets[0].training)
    out = functional_call(folded, (params, buffers), (fold_inputs(_stack_inputs(xs)),), strict=True)
    return unfold_outputs(out, len(nets)), params, buffers


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [
        ("lenet-mnist", {}, (1, 28, 28)),
        ("lenet-mnist", {"widen_factor": 2}, (1, 28, 28)),
        ("seed000", {}, (1, 28, 28)),
        ("mlp", {"in_features": 12}, (12,)),
        ("classifier32-small", {"dropout": 0.0}, (1, 28, 28)),
    ],
)
@pytest.mark.parametrize("training", [True, False])
def test_folded_network_equals_each_model(name: str, kwargs: dict, shape: tuple, training: bool) -> None:
    nets = _networks(name, **kwargs)
    for net in nets:
        net.train(training)
        for module in net.modules():  # non-trivial running statistics for eval mode
            if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    xs = _inputs(shape)
    outputs, params, buffers = _folded_forward(nets, xs)
    outputs.square().sum().backward()
    for k, (net, x) in enumerate(zip(nets, xs, strict=True)):
        own = net(x)
        own.square().sum().backward()
        assert _close(outputs[k], own), k
        for pname, p in net.named_parameters():  # the gradient reaching model k's slice is its own
            assert _close(params[pname].grad[k], p.grad), (k, pname)
        for bname, b in net.named_buffers():  # BatchNorm's running statistics, updated per model
            assert _close(buffers[bname][k].to(b.dtype), b), (k, bname)


class _Decoderish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(2, 1, 3)


@pytest.mark.parametrize(
    "network",
    [
        _Decoderish(),
        nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)),
        nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, momentum=None)),
        nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect")),
    ],
)
def test_fold_refuses_layers_it_cannot_fold(network: nn.Module) -> None:
    assert fold(network) is None


class _MixesChannels(Backbone):
    """A network whose code mixes its channels (a mean over them): every layer folds, but
    the folded network then mixes the models."""

    input_shape = (1, 28, 28)

    def __init__(self) -> None:
        super().__init__()
        self.out_features = 8
        self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.fc = nn.Linear(4 * 7 * 7, 8, bias=False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return F.max_pool2d(h - h.mean(1, keepdim=True), 4).flatten(1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)


class _NoFeed:
    device = torch.device("cpu")


def _stack(net_name: str | None) -> tuple[_Stack, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    nets = [create_model(net_name) if net_name else _MixesChannels() for _ in range(MODELS)]
    methods = [create_method("deep-svdd", net) for net in nets]
    for method in methods:
        method.center.copy_(torch.randn_like(method.center))
    stack = _Stack(methods, _NoFeed(), {})  # type: ignore[arg-type]
    x = _stack_inputs(_inputs((1, 28, 28)))
    return stack, x, torch.zeros(MODELS, BATCH, dtype=torch.long)


def test_the_stack_folds_the_lenet_and_matches_vmap() -> None:
    stack, x, y = _stack("lenet-mnist")
    stack.train()
    assert isinstance(stack.folded, _FoldedLoss)
    losses, aux = stack._group_loss(list(range(MODELS)), x, y)
    assert stack.folded is not None  # the check on the first batch kept the folded form
    reference, reference_aux = stack._vmapped(stack.params, {n: b.clone() for n, b in stack.buffers_.items()}, x, y)
    assert torch.allclose(losses, reference, rtol=1e-4)
    assert torch.allclose(aux["dist"], reference_aux["dist"], rtol=1e-3, atol=1e-5)


def test_the_stack_keeps_vmap_when_folding_changes_the_losses() -> None:
    stack, x, y = _stack(None)
    stack.train()
    assert isinstance(stack.folded, _FoldedLoss)  # every layer folds, but the code mixes channels
    losses, _ = stack._group_loss(list(range(MODELS)), x, y)
    assert stack.folded is None
    reference, _ = stack._vmapped(stack.params, stack.buffers_, x, y)
    assert torch.allclose(losses, reference)


def test_the_autoencoder_folds_its_encoder_and_matches_vmap() -> None:
    # the rest of the loss (decoder, reconstruction error) reads the real input: the folded
    # encoder's output reaches it as the precomputed network output, not as the input
    torch.manual_seed(0)
    methods = [create_method("autoencoder", create_model("lenet-mnist")) for _ in range(MODELS)]
    stack = _Stack(methods, _NoFeed(), {})  # type: ignore[arg-type]
    stack.train()
    x = _stack_inputs(_inputs((1, 28, 28)))
    y = torch.zeros(MODELS, BATCH, dtype=torch.long)
    losses, _ = stack._group_loss(list(range(MODELS)), x, y)
    assert stack.folded is not None  # the check on the first batch kept the folded form
    reference, _ = stack._vmapped(stack.params, {n: b.clone() for n, b in stack.buffers_.items()}, x, y)
    assert torch.allclose(losses, reference, rtol=1e-4)
