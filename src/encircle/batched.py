"""K independent models of one architecture trained at once, in the one engine.

The sweeps users run most (``oneclass``: one Deep SVDD per normal class and seed) train
many small networks one after another; a paper-width MNIST LeNet is far too small to use
a GPU well, and on a CPU its kernels run below their best on 8 and 4 channels.
:func:`fit_many` trains K such models together, each exactly as
:func:`encircle.engine.fit` would train it alone:

* **One engine.** The K methods are wrapped in one :class:`_Stack` (a
  :class:`~encircle.methods.base.Method`) and their data in one :class:`_Feed` (an engine
  source), and :func:`encircle.engine._train` runs them: the same phases, reseeding,
  ``_run_phase`` epochs, schedulers, history, checkpoints (``TrainingRun``), resume and
  progress bar as a single model. Nothing here re-implements the epoch loop.
* **Stacked weights, one step for all.** The K methods' parameters and buffers are
  stacked (``torch.func.stack_module_state``'s layout: model first) and each method's
  tensors are re-pointed at its slice of the stack (``tensor.data = stacked[k]`` shares
  storage), so the K real modules see the trained weights in their hooks, ``score`` and
  ``save``. A step computes the K losses of each method's *pure*
  :meth:`~encircle.methods.base.Method.batch_loss` and back-propagates their sum: model
  k's loss depends only on model k's slice, so each slice's gradient is that model's own.
  The batch-dependent state (Deep SVDD's output spread, the soft-boundary radius) is kept
  per model by ``observe`` and ``after_step``.
* **Folded networks, vmap for the rest.** The K networks run as one folded network
  (:mod:`encircle.folded`: one grouped convolution per layer, batched matmuls, BatchNorm
  over ``K * C`` channels, the K batches laid side by side in the channels, channels-last),
  and ``torch.vmap`` over ``functional_call`` runs only the rest of ``batch_loss`` on the
  K outputs (distances to the centre, the loss). Measured on this project's 2-core CPU
  (K = 6 paper-width MNIST LeNets, batch 200, forward and backward): ``vmap`` over the
  whole ``batch_loss`` took 150-200 ms a step, the folded network 59-86 ms (``vmap``'s
  batching rules move the model axis between batch and channels from layer to layer,
  each move a strided copy), and K = 6 plain LeNet steps about 6 x 20 ms. The rest of
  ``batch_loss`` gets the real input and the folded output separately
  (:class:`_Precomputed`), so a loss that reads its input (the autoencoder's) folds too.
  A folded network whose code mixes channels, or random layers, would give other losses:
  the first batch's losses of both forms are compared (on :data:`FOLD_CHECK_SAMPLES`
  samples) and ``vmap`` over the whole ``batch_loss`` is kept when they differ. Under
  ``vmap``, BatchNorm is computed by reductions (:class:`_BatchNormByOps`).
* **Own data streams.** Model k has its own training set (sizes differ per class), its
  own preprocessing and its own shuffling generator seeded as its sequential run, so it
  sees exactly the batches it would see alone. Models whose epoch has fewer batches, or
  whose last batch is smaller, are grouped by batch size at each step (most steps: one
  group of all K) and each group is one ``vmap`` call on the indexed subset of the stack;
  a model with no batch left sits the step out.
* **Own optimiser state.** :class:`BatchedAdam` and :class:`BatchedSGD` hold the moments
  and a *step count per model*, and step only the models that had a batch: torch's Adam
  keeps one step count per tensor, so a model that skips a step would get another model's
  bias correction. Weight decay is torch's (L2 added to the gradient).
* **Failures stay with their model.** A non-finite or diverged loss, or a hook's
  :class:`~encircle.errors.TrainingError` (Deep SVDD's collapse check), stops that model
  alone; the error names its tag (e.g. ``class3/seed1``) and the others train on.

Equality with the sequential run: the same batches, initial weights, centres and
schedules; the arithmetic differs in rounding only (grouped vs plain convolutions,
the optimiser's operation order). Tested on CPU float32 (``tests/test_batched.py``):
final weights within ``atol=1e-4`` after 2 epochs (measured <= 5e-7) and AUROC within
1e-3 for one-class and soft-boundary Deep SVDD and CAC (SGD); with pretraining the
following Deep SVDD epochs can drift one model's first layer by ~2e-3 (``atol=5e-3``).
Random layers (dropout) draw differently when batched, so they do not match bitwise.

Speed, measured on this project's 2-core CPU (``benchmarks/many_models.py``,
``docs/scaling.md``): the 30-model one-class sweep of paper-width LeNets 1.6-2.0x faster
than one model after another (1.3x with 5 autoencoder epochs, whose decoder costs as much
batched as alone); a LeNet step at batch 200 is bound by its convolution, BatchNorm and
pooling kernels, not by per-step overhead, on a CPU, so folding gains only what the
layout makes those kernels cheaper per model (its two grouped convolutions alone bound a
step of six at 2.9x). Hence :func:`models_in_flight`'s CPU default.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import torch
from torch import nn
from torch.func import functional_call

from encircle import distributed, footprint
from encircle.engine import (
    FitResult,
    InputPipeline,
    _epoch_order,
    _InMemory,
    _PhaseRun,
    _train,
    data_device,
    inference_batch_size,
    loss_problem,
    resolve_device,
)
from encircle.errors import ConfigError, DataError, TrainingError
from encircle.folded import fold, fold_inputs, unfold_outputs
from encircle.methods.base import Batches, Method, Phase, Step
from encircle.models.base import Backbone
from encircle.preprocess import Preprocess
from encircle.train_config import TrainConfig
from encircle.training_run import TrainingRun

M = TypeVar("M", bound=nn.Module)
log = logging.getLogger(__name__)
#: Models in flight on a CPU with ``train.batch_models = 0``. Measured end to end (the
#: 30-model one-class sweep, paper-width LeNet, all ~800 images per class, 10 epochs,
#: 2-core CPU, one run each): sequential 26.7 s; K = 6: 17.8 s, 10: 19.7 s, 30: 20.7 s;
#: K models' activations leave the cache as K grows.
CPU_MODELS_IN_FLIGHT = 6

#: Share of the free memory that an automatic ``train.batch_models`` fills with models in flight.
MEMORY_SHARE = 0.5
#: Samples per model on which the folded loss is checked against ``vmap`` (the check costs
#: about one ``vmap`` step on this many samples).
FOLD_CHECK_SAMPLES = 32


def models_in_flight(
    batch_models: int,
    total: int,
    device: torch.device,
    per_model_bytes: int = 0,
    budget_bytes: int | None = None,
) -> int:
    """How many models train at once: ``train.batch_models``, where 0 means automatic:
    all of them on a GPU, :data:`CPU_MODELS_IN_FLIGHT` on a CPU and, given
    ``per_model_bytes`` (:func:`encircle.footprint.training_bytes`), no more than fit in
    :data:`MEMORY_SHARE` of ``budget_bytes`` (default: the device's free memory), and at
    least one."""
    if batch_models:
        return batch_models
    wanted = total if device.type == "cuda" else min(total, CPU_MODELS_IN_FLIGHT)
    if per_model_bytes:
        budget = MEMORY_SHARE * (footprint.free_bytes(device) if budget_bytes is None else budget_bytes)
        wanted = max(1, min(wanted, int(budget // per_model_bytes)))
    return wanted


@dataclass
class Member:
    """One of the K models: its method, training data, preprocessing, seed and tag.

    ``phases`` are the method's phases, taken (by :func:`member`) right after the method
    was built, so that a phase's own module (an autoencoder's decoder) draws its initial
    weights from the global RNG exactly where the sequential run draws them.
    """

    method: Method
    samples: torch.Tensor
    labels: torch.Tensor
    preprocess: Preprocess
    seed: int
    tag: str
    phases: list[Phase] = field(default_factory=list)


def member(
    method: Method,
    samples: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig,
    *,
    preprocess: Preprocess,
    seed: int,
    tag: str,
) -> Member:
    """A :class:`Member` whose phases are drawn now (call it right after building ``method``)."""
    if len(labels) != samples.shape[0] or len(labels) == 0:
        raise DataError(f"{tag}: {samples.shape[0]} samples but {len(labels)} labels (need >= 1)")
    return Member(method, samples, labels, preprocess, seed, tag, method.phases(config, len(labels)))


def fit_many(
    members: Sequence[Member],
    config: TrainConfig,
    *,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    metadata: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> list[FitResult | TrainingError]:
    """Train every member's method in place, all K at once (see the module docstring).

    Args:
        members: the models (one architecture, one method kind and hyperparameters).
        config: the training settings, shared by all (each model's seed is its own).
        checkpoint_path, resume, metadata, progress: one checkpoint for the K models
            (every ``config.checkpoint_every`` epochs and at the end); ``resume`` continues
            all of them from it, exactly.

    Returns:
        Per member, in order: its :class:`FitResult` (its own history), or the
        :class:`TrainingError` that stopped it.

    Raises:
        ConfigError: a method or setting the batched trainer cannot run (a method
            without ``batch_loss`` or with its own ``training_step``, step-based phases,
            fp16 AMP, augmentation, several processes).
    """
    if not members:
        return []
    _check_batchable(members, config)
    device = resolve_device(config.device)
    pipelines = [InputPipeline(m.preprocess, device, config.channels_last, config.amp) for m in members]
    sources = []
    for m in members:
        where = data_device(m.samples.nbytes + m.labels.nbytes, device)
        generator = torch.Generator().manual_seed(m.seed)
        sources.append(_InMemory(m.samples.to(where), m.labels.to(where), len(m.labels), 0, generator))
    tags = [m.tag for m in members]
    feed = _Feed(sources, pipelines, [m.seed for m in members], tags, device)
    for m in members:
        m.method.to(device)
        for phase in m.phases:
            if phase.module is not None:
                phase.module.to(device)
    shared: dict[int, torch.Tensor] = {}
    stack = _Stack([m.method for m in members], feed, shared)
    phases = []
    for index, first in enumerate(members[0].phases):
        module = None
        if first.module is not None:
            module = _Stack([m.phases[index].module for m in members], feed, shared)  # type: ignore[misc]
        phases.append(Phase(first.name, first.train, first.steps, first.reseed, module, first.evaluate))
    stack.planned = phases
    name = members[0].method.name
    label = f"{name} train, {len(members)} models ({tags[0]}" + (f" .. {tags[-1]})" if len(tags) > 1 else ")")
    run = TrainingRun(name, config.checkpoint_every, checkpoint_path, None, resume, metadata, progress, label)
    # the engine's own pipeline serves only its device and autocast: the feed preprocesses per model
    combined = _train(stack, feed, config, device, members[0].preprocess, members[0].seed, None, run)
    results: list[FitResult | TrainingError] = []
    for k, m in enumerate(members):
        m.method.eval()
        if k in feed.failed:
            results.append(TrainingError(feed.failed[k]))
            continue
        history = [_own_record(record, k) for record in combined.history]
        results.append(FitResult(history, combined.seconds, combined.resumed_phase, combined.resumed_from))
    return results


def unbatchable(kind: type[Method], config: TrainConfig) -> str:
    """Why models of method ``kind`` cannot train batched with ``config`` (``""``: they can)."""
    if kind.batch_loss is Method.batch_loss or kind.training_step is not Method.training_step:
        return f"method {kind.name!r} has no pure batch_loss, or its own training_step"
    if config.amp == "fp16" or config.augment != "none" or distributed.is_distributed():
        return "fp16 AMP, augmentation and several processes are not batched"
    return ""


def _check_batchable(members: Sequence[Member], config: TrainConfig) -> None:
    kinds = {type(m.method) for m in members}
    if len(kinds) != 1:
        raise ConfigError(f"fit_many trains one method kind at a time, got {sorted(k.__name__ for k in kinds)}")
    reason = unbatchable(kinds.pop(), config)
    if reason:
        raise ConfigError(f"cannot train these models batched: {reason}; use train.batch_models=1")
    names = [[p.name for p in m.phases] for m in members]
    if any(n != names[0] for n in names) or any(p.steps for m in members for p in m.phases):
        raise ConfigError(f"batched models need the same epoch-based phases, got {names}")
    shapes = {tuple(m.samples.shape[1:]) for m in members}
    if len(shapes) != 1:
        raise DataError(f"batched models need samples of one shape, got {sorted(shapes)}")


def _own_record(record: dict[str, Any], k: int) -> dict[str, Any]:
    """Model ``k``'s history record from the combined one: its own loss metrics."""
    own = {key: value for key, value in record.items() if "/" not in key and "loss" not in key}
    seen = record.get(f"seen/{k}", 0.0)
    for key, value in record.items():
        if key.endswith(f"/{k}") and not key.startswith("seen/") and seen:
            own[key.rsplit("/", 1)[0]] = value / seen
    return own


class _Feed:
    """The engine source of K models: each model's own ``_InMemory`` source (its own
    data, preprocessing and shuffling generator), batched step by step.

    ``epoch`` yields, per step, ``(empty, labels of all models)`` for the engine's
    bookkeeping and leaves the step's batches in :attr:`groups`: per batch size, the
    models with that size, their inputs ``(K_g, B, ...)`` and labels ``(K_g, B)``.
    """

    def __init__(
        self,
        sources: list[_InMemory],
        pipelines: list[InputPipeline],
        seeds: list[int],
        tags: list[str],
        device: torch.device,
    ) -> None:
        self.sources, self.pipelines, self.seeds, self.tags, self.device = sources, pipelines, seeds, tags, device
        self.failed: dict[int, str] = {}
        self.groups: list[tuple[list[int], torch.Tensor, torch.Tensor]] = []

    def active(self) -> list[int]:
        return [k for k in range(len(self.sources)) if k not in self.failed]

    def fail(self, k: int, message: str) -> None:
        if k not in self.failed:
            self.failed[k] = f"{self.tags[k]}: {message}"
            log.warning("%s stopped, the other models train on: %s", self.tags[k], message)

    def train_size(self) -> int:
        return max(s.train_size() for s in self.sources)

    def epoch_size(self) -> int:
        return max(s.epoch_size() for s in self.sources)

    def draw(self, size: int, pipeline: InputPipeline) -> tuple[torch.Tensor, torch.Tensor]:
        raise ConfigError("step-based phases cannot be trained batched; use train.batch_models=1")

    def reseed(self, seed: int) -> None:
        for source, own in zip(self.sources, self.seeds, strict=True):
            source.reseed(own)

    def epoch(self, epoch: int, pipeline: InputPipeline, batch_size: int) -> Batches:
        orders = {}
        for k in self.active():  # drawn now, in model order, as each sequential run draws them
            s = self.sources[k]
            orders[k] = _epoch_order(s.n, len(s.pool) - s.n, s.n_outliers, s.shuffle).to(s.pool.device)
        steps = max((math.ceil(len(o) / batch_size) for o in orders.values()), default=0)
        return self._steps(orders, steps, batch_size)

    def _steps(self, orders: dict[int, torch.Tensor], steps: int, batch_size: int) -> Batches:
        for step in range(steps):
            by_size: dict[int, list[tuple[int, torch.Tensor, torch.Tensor]]] = {}
            for k, order in orders.items():
                chunk = order[step * batch_size : (step + 1) * batch_size]
                if k in self.failed or len(chunk) == 0:
                    continue
                x, y = self.sources[k].batch(chunk, self.pipelines[k])
                by_size.setdefault(len(chunk), []).append((k, x, y))
            self.groups = [(idx, _stack_inputs(xs), torch.stack(ys)) for idx, xs, ys in map(_unzip, by_size.values())]
            labels = torch.cat([y.flatten() for _, _, y in self.groups]) if self.groups else torch.empty(0)
            yield torch.empty(0, device=self.device), labels

    def local(self, pipeline: InputPipeline, batch_size: int) -> Batches:
        """Nothing: each model's hooks read their own data (:meth:`own_local`)."""
        return iter(())

    def own_local(self, k: int) -> Batches:
        return self.sources[k].local(self.pipelines[k], inference_batch_size(self.device))

    def state(self) -> dict[str, Any]:
        return {"shuffle": [s.shuffle.get_state() for s in self.sources], "failed": dict(self.failed)}

    def load_state(self, state: dict[str, Any]) -> None:
        for source, shuffle in zip(self.sources, state["shuffle"], strict=True):
            source.shuffle.set_state(shuffle)
        self.failed = {int(k): str(v) for k, v in state["failed"].items()}


def _unzip(
    items: list[tuple[int, torch.Tensor, torch.Tensor]],
) -> tuple[list[int], list[torch.Tensor], list[torch.Tensor]]:
    return [k for k, _, _ in items], [x for _, x, _ in items], [y for _, _, y in items]


def _stack_inputs(xs: list[torch.Tensor]) -> torch.Tensor:
    """``(K, B, C, H, W)`` images stored as ``(B, H, W, K, C)``: the folded view
    ``(B, K*C, H, W)`` (:func:`encircle.folded.fold_inputs`, and ``vmap``'s grouped
    convolutions) is then channels-last, without a copy."""
    if xs[0].ndim != 4:
        return torch.stack(xs)
    return torch.stack([x.permute(0, 2, 3, 1) for x in xs], dim=3).permute(3, 0, 4, 1, 2)


class _BatchNormByOps(nn.modules.batchnorm._BatchNorm):
    """BatchNorm written with reductions and elementwise operations.

    Why: under ``vmap`` the K models' BatchNorm becomes one over ``K * C`` channels of a
    channels-last view, and torch's CPU ``native_batch_norm_backward`` took ~0.5 s per
    call there (K = 15, batch 200), a third of the whole step; these operations
    vmap and differentiate at the cost of a few elementwise passes. Same formulas as
    torch's (biased variance to normalise, unbiased for the running variance, momentum or
    the cumulative average when ``momentum is None``), so results agree to rounding.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = [0, *range(2, x.ndim)]
        shape = [1, -1] + [1] * (x.ndim - 2)
        if self.training or not self.track_running_stats:
            mean = x.mean(dims)
            centered = x - mean.view(shape)
            var = centered.pow(2).mean(dims)  # 3x faster than x.var under vmap, here
            if self.training and self.track_running_stats and self.num_batches_tracked is not None:
                running_mean, running_var = self._running()
                with torch.no_grad():
                    self.num_batches_tracked.add_(1)
                    momentum = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked
                    n = x.numel() / x.shape[1]
                    running_mean.mul_(1 - momentum).add_(mean.detach() * momentum)
                    unbiased = var.detach() * (n / max(n - 1, 1))
                    running_var.mul_(1 - momentum).add_(unbiased * momentum)
        else:
            running_mean, running_var = self._running()
            var, centered = running_var, x - running_mean.view(shape)
        y = centered * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y

    def _running(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The running statistics (``track_running_stats``: they exist)."""
        if self.running_mean is None or self.running_var is None:
            raise TrainingError("BatchNorm without running statistics cannot update or use them")
        return self.running_mean, self.running_var


def _vmap_friendly(module: M) -> M:
    """``module`` (a private copy) with its BatchNorm layers computed by :class:`_BatchNormByOps`."""
    for sub in module.modules():
        if type(sub) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
            sub.__class__ = _BatchNormByOps
    return module


class _LossCall(nn.Module):
    """``forward`` = the method's pure ``batch_loss`` (what ``functional_call`` calls)."""

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.method.batch_loss(x, y)


class _Precomputed(Backbone):
    """A network whose output is already computed (by the folded network): the caller
    supplies it as the buffer ``out`` through ``functional_call``, and the input is not
    read, so the rest of ``batch_loss`` sees the real input (an autoencoder compares its
    reconstruction with it)."""

    def __init__(self) -> None:
        super().__init__()
        self.out: torch.Tensor
        self.register_buffer("out", torch.empty(0))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.out

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return features


class _EmbedCall(nn.Module):
    """``forward`` = the method's ``embed`` (what ``functional_call`` calls); the method
    here is a copy whose network is folded."""

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.method.embed(x)


@dataclass
class _FoldedLoss:
    """The K models' losses with their networks folded (:mod:`encircle.folded`): the
    folded network computes the K outputs in one pass, and ``vmap`` runs only the rest of
    each method's ``batch_loss`` on them (``loss``: a copy of the method with
    :class:`_Precomputed` for a network)."""

    embed: _EmbedCall
    loss: _LossCall

    @classmethod
    def build(cls, method: Method) -> _FoldedLoss | None:
        net = getattr(method, "net", None)
        folded = fold(net) if isinstance(net, Backbone) else None
        if not isinstance(folded, Backbone):
            return None
        embed, rest = copy.deepcopy(method), _vmap_friendly(copy.deepcopy(method))
        embed.net, rest.net = folded, _Precomputed()
        return cls(_EmbedCall(embed), _LossCall(rest))

    def __call__(
        self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        net = [{n: t for n, t in d.items() if n.startswith(_NET)} for d in (params, buffers)]
        rest = [{n: t for n, t in d.items() if not n.startswith(_NET)} for d in (params, buffers)]
        # strict=False: embed reads only the network; the copy's other tensors stay its own
        out = functional_call(self.embed, (net[0], net[1]), (fold_inputs(x),), strict=False)
        loss = self.loss

        def one(
            p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], xk: torch.Tensor, zk: torch.Tensor, yk: torch.Tensor
        ) -> Any:
            return functional_call(loss, (p, {**b, _PRECOMPUTED: zk}), (xk, yk), strict=False)

        return cast(
            tuple[torch.Tensor, dict[str, torch.Tensor]],
            torch.vmap(one, randomness="different")(rest[0], rest[1], x, unfold_outputs(out, x.shape[0]), y),
        )


def _mirror_modes(source: nn.Module, copy_: nn.Module) -> None:
    """Give every module of ``copy_`` the training flag of its namesake in ``source`` (a
    method may keep some of its modules in eval mode while it trains)."""
    flags = {name: module.training for name, module in source.named_modules()}
    for name, module in copy_.named_modules():
        module.training = flags.get(name, source.training)


def _same_up_to_rounding(a: torch.Tensor, b: torch.Tensor | None) -> bool:
    """``b`` is ``a`` computed another way: the largest difference within 1e-3 of ``a``'s
    largest magnitude (folded and ``vmap``'ed outputs differ by ~1e-5 of it in float32)."""
    if b is None or a.shape != b.shape:
        return False
    a, b = a.float(), b.float()
    return bool((a - b).abs().max() <= 1e-3 * a.abs().max() + 1e-6) if a.numel() else True


#: the stacked tensors' name prefix of the method's network
_NET = "method.net."
#: the name under which :class:`_FoldedLoss` hands each model its network's output
_PRECOMPUTED = _NET + "out"


class _Stack(Method):
    """K methods (or a phase's K modules) as one method for the engine.

    Holds the stacked tensors (registered, so its state dict is the K models' state);
    ``training_step`` runs each batch-size group's ``vmap`` call, checks every model's
    loss, back-propagates and steps the batched optimiser; the hooks call each model's
    own. Tensors shared with another stack (the network inside the pretraining
    autoencoder) are stacked once (``shared``, keyed by model 0's tensor).
    """

    name = "batched"

    def __init__(self, members: list[Method], feed: _Feed, shared: dict[int, torch.Tensor]) -> None:
        nn.Module.__init__(self)
        self.num_classes = members[0].num_classes
        self.members, self.feed = members, feed
        self.planned: list[Phase] = []
        self.first_loss: dict[int, float] = {}
        self.call = [
            _LossCall(_vmap_friendly(copy.deepcopy(members[0])))
        ]  # a list: not a submodule, not in the state dict
        self.folded = _FoldedLoss.build(members[0])
        self.fold_checked = False
        self.params: dict[str, torch.Tensor] = {}
        self.buffers_: dict[str, torch.Tensor] = {}
        for kind, named in (("param", members[0].named_parameters()), ("buffer", members[0].named_buffers())):
            for name, first in named:
                stacked = shared.get(id(first))
                if stacked is None:
                    tensors = [m.get_parameter(name) if kind == "param" else m.get_buffer(name) for m in members]
                    data = torch.stack([t.detach() for t in tensors])
                    stacked = nn.Parameter(data, requires_grad=first.requires_grad) if kind == "param" else data
                    for k, t in enumerate(tensors):
                        t.data = stacked.data[k]  # model k's tensor is now a view of its slice
                    shared[id(first)] = stacked
                key = "method." + name
                safe = key.replace(".", "-")
                if isinstance(stacked, nn.Parameter):
                    self.register_parameter(safe, stacked)
                    self.params[key] = stacked
                else:
                    self.register_buffer(safe, stacked)
                    self.buffers_[key] = stacked
        self.metrics: dict[str, torch.Tensor] = {}

    def to(self, *args: Any, **kwargs: Any) -> _Stack:
        """Nothing to move: the stack is built on the device, and memory formats do not
        apply to stacked (5-D) convolution weights."""
        return self

    def train(self, mode: bool = True) -> _Stack:
        super().train(mode)
        for m in self.members:
            m.train(mode)
        _mirror_modes(self.members[0], self.call[0].method)
        if self.folded is not None:
            _mirror_modes(self.members[0], self.folded.loss.method)
            _mirror_modes(self.members[0], self.folded.embed.method)
        return self

    def phases(self, train: TrainConfig, num_samples: int) -> list[Phase]:
        return self.planned

    def configure_optimizers(self, phase: Phase) -> dict[str, torch.optim.Optimizer]:
        module = phase.module if isinstance(phase.module, _Stack) else self
        params = [p for p in module.params.values() if p.requires_grad]
        return {"main": make_batched_optimizer(params, phase.train, len(module.members))}

    @torch.no_grad()
    def setup(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        for k in self.feed.active():
            self._guard(k, self.members[k].setup, self.feed.own_local(k))

    def _guard(self, k: int, hook: Callable[..., None], *args: Any) -> None:
        """Run model ``k``'s hook; its :class:`TrainingError` stops that model only."""
        try:
            hook(*args)
        except TrainingError as exc:
            self.feed.fail(k, str(exc))

    def training_step(self, x: torch.Tensor, y: torch.Tensor, step: Step) -> dict[str, torch.Tensor]:
        total = torch.zeros((), device=self.feed.device)
        losses_of: dict[int, torch.Tensor] = {}
        self.auxes: dict[int, dict[str, torch.Tensor]] = {}
        for idx, xg, yg in self.feed.groups:
            with step.autocast():
                losses, aux = self._group_loss(idx, xg, yg)
            for j, k in enumerate(idx):
                losses_of[k] = losses[j]
                self.auxes[k] = {name: value[j] for name, value in aux.items()}
        values = torch.stack(list(losses_of.values())).detach().tolist() if losses_of else []
        stepping = []
        for (k, loss), value in zip(losses_of.items(), values, strict=True):
            problem = self._problem(k, value, step)
            if problem:
                self.feed.fail(k, problem)
                self.auxes.pop(k)
            else:
                stepping.append(k)
                total = total + loss
        opt = cast(_PhaseRun, step).optimizers["main"]
        if not isinstance(opt, _BatchedOptimizer):
            raise TrainingError(f"a batched run needs its batched optimiser, got {type(opt).__name__}")
        opt.zero_grad(set_to_none=True)
        if stepping:
            total.backward()
            opt.step_models(stepping)
        # per-model sums for the history: the engine adds value * len(y); loss/k over seen/k is model k's mean
        size = float(len(y)) or 1.0
        sizes = {k: yg.shape[1] for idx, _, yg in self.feed.groups for k in idx}
        metrics: dict[str, torch.Tensor] = {}
        weighted = 0.0
        for k, value in zip(losses_of, values, strict=True):
            if k in stepping:
                metrics[f"loss/{k}"] = torch.tensor(value * sizes[k] / size, dtype=torch.float64)
                metrics[f"seen/{k}"] = torch.tensor(sizes[k] / size, dtype=torch.float64)
                weighted += value * sizes[k] / size
        metrics["loss"] = torch.tensor(weighted, dtype=torch.float64)
        return metrics

    def _group_loss(
        self, idx: list[int], x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The losses (and aux) of the models ``idx`` on their batches, in one call: folded
        (checked against ``vmap`` on the first batch) or ``vmap``."""
        everyone = len(idx) == len(self.members)
        if everyone:
            params, buffers = self.params, self.buffers_
        else:
            rows = torch.tensor(idx, device=x.device)
            params = {n: p[rows] for n, p in self.params.items()}
            buffers = {n: b[rows] for n, b in self.buffers_.items()}
        if not self.fold_checked:
            self.folded = self._fold_if_equal(params, buffers, x, y)
            self.fold_checked = True
        compute = self.folded or self._vmapped
        losses, aux = compute(params, buffers, x, y)
        if not everyone:  # the subset's buffers (BatchNorm statistics) were updated on copies
            with torch.no_grad():
                for n, b in self.buffers_.items():
                    b[rows] = buffers[n]
        return losses, aux

    def _vmapped(
        self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The losses (and aux) of every model, by ``vmap`` over the whole ``batch_loss``."""
        call = self.call[0]

        def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], xk: torch.Tensor, yk: torch.Tensor) -> Any:
            return functional_call(call, (p, b), (xk, yk), strict=True)

        return cast(
            tuple[torch.Tensor, dict[str, torch.Tensor]],
            torch.vmap(one, randomness="different")(params, buffers, x, y),
        )

    @torch.no_grad()
    def _fold_if_equal(
        self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
    ) -> _FoldedLoss | None:
        """The folded loss if it gives ``vmap``'s losses and aux on the first
        :data:`FOLD_CHECK_SAMPLES` samples of this batch (on copies of the buffers), else
        ``None``: a network whose code mixes the folded channels, random layers."""
        if self.folded is None:
            return None
        x, y = x[:, :FOLD_CHECK_SAMPLES], y[:, :FOLD_CHECK_SAMPLES]
        reference = self._vmapped(params, {n: b.clone() for n, b in buffers.items()}, x, y)
        try:
            folded = self.folded(params, {n: b.clone() for n, b in buffers.items()}, x, y)
        except (RuntimeError, ValueError):  # shapes the folded network cannot take
            return None
        pairs = [(reference[0], folded[0])] + [(v, folded[1].get(k)) for k, v in reference[1].items()]
        return self.folded if all(_same_up_to_rounding(a, b) for a, b in pairs) else None

    def _problem(self, k: int, value: float, step: Step) -> str:
        """The engine's NaN / divergence guard (:func:`~encircle.engine.loss_problem`), per model."""
        first = self.first_loss.setdefault(k, abs(value))
        lr = cast(_PhaseRun, step).optimizers["main"].param_groups[0]["lr"]
        where = f"phase {step.phase.name!r}, epoch {step.epoch + 1}"
        return loss_problem(value, first, self.members[k].name, where, lr)

    def after_step(self, epoch: int) -> None:
        for k, aux in self.auxes.items():
            self.members[k].observe(aux)
            self._guard(k, self.members[k].after_step, epoch)

    def after_epoch(self, epoch: int, batches: Callable[[], Batches]) -> None:
        for k in self.feed.active():
            self._guard(k, self.members[k].after_epoch, epoch, functools.partial(self.feed.own_local, k))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        raise ConfigError("score each trained model (Member.method), not the batch of them")


class _BatchedOptimizer(torch.optim.Optimizer):
    """Adam or SGD over stacked ``(K, ...)`` tensors with a step count per model; only
    the models passed to :meth:`step_models` step."""

    def __init__(self, params: list[torch.Tensor], defaults: dict[str, Any], models: int) -> None:
        super().__init__(params, defaults)
        self.models = models

    def step_models(self, models: list[int]) -> None:
        """Step the models ``models`` (indices into the stack), through :meth:`step` (which
        the learning-rate schedulers watch)."""
        self._rows = None if len(models) == self.models else torch.tensor(models)
        self.step()

    @torch.no_grad()
    def step_rows(self, rows: torch.Tensor | None) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    self.init_state(p, state)
                if rows is None:
                    self.update(p, p.grad, state, group)
                    continue
                rows = rows.to(p.device)
                sub_p = p[rows]
                sub_state = {name: value[rows] for name, value in state.items()}
                self.update(sub_p, p.grad[rows], sub_state, group)
                p[rows] = sub_p
                for name, value in state.items():
                    value[rows] = sub_state[name]

    def step(self, closure: Callable[[], float] | None = None) -> None:  # type: ignore[override]
        rows, self._rows = getattr(self, "_rows", None), None
        self.step_rows(rows)

    def init_state(self, p: torch.Tensor, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def update(self, p: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        raise NotImplementedError


def _per_model(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(K,)`` values shaped to broadcast over ``(K, ...)`` tensors."""
    return values.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


class BatchedAdam(_BatchedOptimizer):
    """torch's Adam (``foreach=False``), elementwise, with one step count per model.

    Why not ``torch.optim.Adam``: it keeps one step count per tensor, and the bias
    corrections ``1 - beta^t`` need each model's own ``t`` when models skip steps.
    """

    def __init__(self, params: list[torch.Tensor], models: int, lr: float = 1e-3, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": weight_decay}, models)

    def init_state(self, p: torch.Tensor, state: dict[str, Any]) -> None:
        state["step"] = torch.zeros(p.shape[0], dtype=torch.float64, device=p.device)
        state["exp_avg"] = torch.zeros_like(p)
        state["exp_avg_sq"] = torch.zeros_like(p)

    def update(self, p: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        beta1, beta2 = group["betas"]
        if group["weight_decay"]:
            grad = grad.add(p, alpha=group["weight_decay"])
        state["step"].add_(1)
        state["exp_avg"].lerp_(grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = state["step"]
        step_size = _per_model(group["lr"] / (1 - beta1**step), p)
        bias2_sqrt = _per_model((1 - beta2**step).sqrt(), p)
        denom = (state["exp_avg_sq"].sqrt() / bias2_sqrt).add_(group["eps"])
        p.sub_(step_size * state["exp_avg"] / denom)


class BatchedSGD(_BatchedOptimizer):
    """torch's SGD with momentum (no dampening, no Nesterov), per model: a model's first
    step starts its momentum buffer from its gradient, as torch's does."""

    def __init__(
        self, params: list[torch.Tensor], models: int, lr: float, momentum: float = 0.0, weight_decay: float = 0.0
    ) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}, models)

    def init_state(self, p: torch.Tensor, state: dict[str, Any]) -> None:
        state["step"] = torch.zeros(p.shape[0], dtype=torch.float64, device=p.device)
        state["momentum_buffer"] = torch.zeros_like(p)

    def update(self, p: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        if group["weight_decay"]:
            grad = grad.add(p, alpha=group["weight_decay"])
        if group["momentum"]:
            first = _per_model((state["step"] == 0).double(), p).bool()
            buf = state["momentum_buffer"]
            buf.copy_(torch.where(first, grad, buf * group["momentum"] + grad))
            grad = buf
        state["step"].add_(1)
        p.add_(grad, alpha=-group["lr"])


def make_batched_optimizer(params: list[torch.Tensor], train: TrainConfig, models: int) -> _BatchedOptimizer:
    """``train.optimizer`` over the stacked tensors of ``models`` models (as ``make_optimizer``)."""
    if train.optimizer == "sgd":
        return BatchedSGD(params, models, train.lr, train.momentum, train.weight_decay)
    return BatchedAdam(params, models, train.lr, train.weight_decay)
