"""The fit loop every method trains with.

Read :func:`_train` top to bottom: it seeds, sets up the method's state (or restores a
checkpoint), then runs epochs of shuffled mini-batches preprocessed batch-wise on the
device. Each epoch appends a record to the history (loss, learning rate, throughput,
and the evaluation hook's metrics), and checkpoints are written atomically so
``resume=True`` continues exactly where a run stopped. Batches come from a source:
:func:`fit` slices them from tensors in memory, :func:`fit_stream` reads them from a
:class:`~encircle.data.memmap.MemmapDataset` larger than memory.

**Distributed data parallel.** Launched by torchrun with several processes (see
``docs/scaling.md``), every rank runs this same loop on its shard of each epoch:

* ``train.batch_size`` is the *global* batch; each rank takes ``ceil(batch_size /
  world)`` samples per step, so a recipe keeps its batch size and learning rate.
* Sharding follows ``DistributedSampler``: the epoch's seeded order (and outlier draw)
  is the same on every rank, padded to a multiple of the world size, and rank ``r``
  takes indices ``r::world``. Step ``k`` of all ranks together is then step ``k`` of one
  process with the global batch.
* Gradients are averaged with one all-reduce after ``backward``
  (:func:`encircle.distributed.average_gradients`) rather than by wrapping the method in
  ``DistributedDataParallel``: DDP arms its gradient hooks in ``forward``, while the
  engine calls ``method.loss``; the explicit all-reduce needs no wrapper, works for any
  method and leaves the method (and its state dict) as it is. It does not overlap
  communication with the backward pass, which costs little for networks of this size.
* ``setup`` and ``after_epoch`` see this rank's contiguous share of the training data:
  state that depends on all of it (a center, a radius) is combined with
  :mod:`encircle.distributed`'s collectives by the method.
* BatchNorm normalises with per-rank batch statistics; running statistics are averaged
  over the ranks after every epoch so every rank holds the same model.
* Every rank evaluates (``score_samples`` gathers the ranks' scores); only rank 0
  writes the history and checkpoints; on ``resume`` every rank loads the same checkpoint.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from encircle import distributed
from encircle.augment import training_augmentation
from encircle.data import memmap
from encircle.errors import ConfigError, DataError, TrainingError
from encircle.host_memory import keep_freed_memory
from encircle.methods.base import Batches, Method, Phase
from encircle.preprocess import Preprocess
from encircle.train_config import TrainConfig
from encircle.training_run import TrainingRun

log = logging.getLogger(__name__)

EvalHook = Callable[[Method], dict[str, float]]
#: In-memory training data moves to the GPU when it takes at most this share of its free memory.
DEVICE_DATA_SHARE = 0.5
#: A loss this many times its phase's first value has diverged (a learning rate far too high).
DIVERGENCE_FACTOR = 1e6
#: ... where a first loss below this counts as this (a loss starting near 0 may grow a little).
DIVERGENCE_FLOOR = 1e-3


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; an unavailable CUDA is an error.

    Under DDP a bare ``"cuda"`` (or ``"auto"`` on a GPU machine) is this process's GPU,
    ``cuda:LOCAL_RANK``.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device is {name!r} but CUDA is not available here; use 'cpu' or 'auto'")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None and distributed.is_distributed():
        index, count = distributed.local_rank(), torch.cuda.device_count()
        if index >= count:
            raise ConfigError(
                f"process LOCAL_RANK={index} has no GPU of its own: this machine has {count}; "
                "start at most that many processes per machine, or use train.device='cpu'"
            )
        return torch.device("cuda", index)
    return device


def resolve_amp(amp: str, device: torch.device) -> str:
    """The autocast mode ``train.amp`` means on ``device``.

    ``"auto"`` is ``"bf16"`` on a GPU that supports it, ``"fp16"`` (with a GradScaler)
    on an older GPU and ``"off"`` on the CPU; other values are kept.
    """
    if amp != "auto":
        return amp
    if device.type != "cuda":
        return "off"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


@dataclass
class InputPipeline:
    """Turns raw samples into network input on the device, batch-wise.

    A CPU batch bound for a GPU is first copied into pinned memory, so the copy to the
    device does not block the host. ``amp`` may be ``"auto"`` (see :func:`resolve_amp`).
    """

    preprocess: Preprocess
    device: torch.device
    channels_last: bool = True
    amp: str = "off"

    def __post_init__(self) -> None:
        self.amp = resolve_amp(self.amp, self.device)

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        if raw.device.type == "cpu" and self.device.type == "cuda":
            raw = raw.pin_memory()
        return self.layout(self.preprocess(raw.to(self.device, non_blocking=True)))

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed ``x`` in the memory format the network trains in (channels-last images when asked)."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def autocast(self) -> torch.autocast:
        """Autocast context for the network body (a no-op when ``amp == "off"``)."""
        dtype = torch.float16 if self.amp == "fp16" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype, enabled=self.amp != "off")

    def batches(
        self,
        samples: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        order: torch.Tensor | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Preprocessed ``(x, y)`` batches, in ``order`` when given."""
        index = order if order is not None else torch.arange(len(labels), device=labels.device)
        return self.prepare((samples[chunk], labels[chunk]) for chunk in index.split(batch_size))

    def prepare(self, raw: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Raw ``(x, y)`` batches (sliced here or streamed from disk) as network input on the device."""
        for x, y in raw:
            yield self(x), y.to(self.device)


def inference_batch_size(device: torch.device) -> int:
    """Batch size of no-grad passes (center, radius, scoring): 128 on CPU, 1024 on CUDA.

    Measured on this project's 2-core CPU: large batches are 2.5-3.6x slower per image
    there (the first conv's activations leave the cache), while a GPU wants big batches.
    """
    return 1024 if device.type == "cuda" else 128


def data_device(nbytes: int, device: torch.device) -> torch.device:
    """Where ``nbytes`` of in-memory training data should live for training on ``device``.

    On a GPU: there, when the data takes at most ``DEVICE_DATA_SHARE`` of the GPU's free
    memory (``torch.cuda.mem_get_info``), so batches are sliced on the GPU; otherwise on
    the host, and each batch is copied from pinned memory without blocking. On the CPU:
    the CPU.
    """
    if device.type != "cuda":
        return torch.device("cpu")
    free, _total = torch.cuda.mem_get_info(device)
    if nbytes <= DEVICE_DATA_SHARE * free:
        return device
    log.info(
        "training data (%.2f GiB) is more than %.0f%% of %s's free memory (%.2f GiB): it stays in host memory",
        nbytes / 2**30,
        100 * DEVICE_DATA_SHARE,
        device,
        free / 2**30,
    )
    return torch.device("cpu")


@torch.no_grad()
def score_samples(
    method: Method, samples: torch.Tensor, pipeline: InputPipeline, batch_size: int | None = None
) -> torch.Tensor:
    """Outlier scores (higher = more anomalous) of ``samples``, float32, on the device.

    Under DDP this is a collective: every rank calls it with the same ``samples``, scores
    a contiguous share, and gets the scores of all samples, in order, from every rank.
    """
    if samples.shape[0] == 0:
        raise DataError("cannot score an empty set of samples")
    start, stop = distributed.shard_range(samples.shape[0])
    was_training = method.training
    method.eval()
    dummy = torch.zeros(stop - start, dtype=torch.int64)
    parts = []
    for x, _ in pipeline.batches(samples[start:stop], dummy, batch_size or inference_batch_size(pipeline.device)):
        with pipeline.autocast():
            parts.append(method.score(x).float())
    method.train(was_training)
    local = torch.cat(parts) if parts else torch.empty(0, device=pipeline.device)
    return distributed.all_gather_cat(local)


@dataclass
class FitResult:
    """What :func:`fit` returns: the history of every phase and the training wall time.

    Each history record names its ``phase``; a resumed run says where it resumed
    (``resumed_phase``, and the epochs or steps of that phase already done).
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_phase: str = ""
    resumed_from: int = 0

    def phase_record(self, phase: str) -> dict[str, Any]:
        """The last history record of ``phase``."""
        records = [r for r in self.history if r.get("phase") == phase]
        if not records:
            raise TrainingError(f"no history record of phase {phase!r}: the run did not reach it")
        return records[-1]


def fit(
    method: Method,
    samples: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig,
    *,
    preprocess: Preprocess,
    seed: int,
    eval_hook: EvalHook | None = None,
    checkpoint_path: str | Path | None = None,
    history_path: str | Path | None = None,
    resume: bool = False,
    metadata: dict[str, Any] | None = None,
    progress: bool | None = None,
    outliers: torch.Tensor | None = None,
) -> FitResult:
    """Train ``method`` on in-memory ``samples``/``labels``.

    On CUDA the data moves to the GPU when it fits (:func:`data_device`). Under DDP
    every rank passes the same data and trains on its shard (see the module docstring).

    Args:
        method: the method (network + objective) to train, in place.
        samples: raw samples, ``uint8`` images ``(N, C, H, W)`` or float features.
        labels: ``int64`` labels ``(N,)`` (ignored by one-class methods).
        config: optimiser, schedule, epochs, device, AMP and checkpoint settings.
        preprocess: fitted batch transform applied on the device.
        seed: seeds the global torch RNG (initialisation) and the shuffling generator.
        eval_hook: called with the method (eval mode) every ``config.eval_every`` epochs
            and after the last; its metrics join that epoch's history record. Under DDP
            it runs on every rank.
        checkpoint_path, history_path, resume, metadata, progress: the run's files, resume
            flag and progress bar (:class:`~encircle.training_run.TrainingRun`): a
            checkpoint every ``config.checkpoint_every`` epochs and at the end, a history
            record after every epoch.
        outliers: raw outlier samples for outlier exposure (Hendrycks et al., ICLR 2019).
            Each epoch draws ``min(N, len(outliers))`` of them without replacement (a
            fresh draw every epoch, as the MCHAD seed does), labels them ``-1`` and
            shuffles them in with the ``N`` training samples. ``setup`` sees only the
            training samples.

    Raises:
        TrainingError: the loss became NaN or infinite (names the epoch and batch).
    """
    if len(labels) != samples.shape[0]:
        raise DataError(f"fit: {samples.shape[0]} samples but {len(labels)} labels")
    _check_size(len(labels))
    method.net.check_input(tuple(preprocess(samples[:1]).shape[1:]))
    n = len(labels)
    n_outliers = 0
    if outliers is not None:
        if outliers.shape[1:] != samples.shape[1:] or outliers.dtype != samples.dtype:
            raise DataError(
                f"fit: outliers of shape {tuple(outliers.shape[1:])} {outliers.dtype} do not match the samples' "
                f"{tuple(samples.shape[1:])} {samples.dtype}"
            )
        n_outliers = min(n, len(outliers))
        pool = torch.cat([samples, outliers])
        pool_labels = torch.cat([labels, torch.full((len(outliers),), -1, dtype=labels.dtype)])
    else:
        pool, pool_labels = samples, labels
    device = resolve_device(config.device)
    where = data_device(pool.nbytes + pool_labels.nbytes, device)
    source = _InMemory(pool.to(where), pool_labels.to(where), n, n_outliers, torch.Generator().manual_seed(seed))
    run = TrainingRun(method.name, config.checkpoint_every, checkpoint_path, history_path, resume, metadata, progress)
    return _train(method, source, config, device, preprocess, seed, eval_hook, run)


def fit_stream(
    method: Method,
    dataset: memmap.MemmapDataset,
    config: TrainConfig,
    *,
    preprocess: Preprocess,
    seed: int,
    eval_hook: EvalHook | None = None,
    checkpoint_path: str | Path | None = None,
    history_path: str | Path | None = None,
    resume: bool = False,
    metadata: dict[str, Any] | None = None,
    progress: bool | None = None,
    chunk_size: int | None = None,
    shuffle_chunks: int = 8,
    prefetch: int = 2,
) -> FitResult:
    """Train ``method`` on a memory-mapped dataset with bounded memory.

    The same loop as :func:`fit`, with batches read from ``dataset`` in chunks of
    ``chunk_size`` consecutive samples (default: 4 MiB of images) by a prefetch thread
    (``prefetch`` chunks ahead), visited in a seeded order per epoch and shuffled within
    a buffer of ``shuffle_chunks`` chunks (:mod:`encircle.data.memmap`). Memory holds at
    most ``(2 * shuffle_chunks + prefetch + 3) * chunk_size`` samples besides a batch.
    Each epoch's order depends only on ``seed`` and the epoch, so ``resume`` is exact.
    Under DDP each rank reads its ``ceil(N / world)`` samples of the chunk sequence.
    ``preprocess`` must be fitted already (e.g. on ``dataset.read(0, 10_000)[0]``);
    outlier exposure is not supported here.
    """
    _check_size(len(dataset))
    for name, value in (("chunk_size", chunk_size or 1), ("shuffle_chunks", shuffle_chunks), ("prefetch", prefetch)):
        if value < 1:
            raise ConfigError(f"fit_stream: {name} must be >= 1, got {value}")
    method.net.check_input(tuple(preprocess(dataset.read(0, 1)[0]).shape[1:]))
    source = _Streamed(dataset, seed, chunk_size or memmap.chunk_size_for(dataset), shuffle_chunks, prefetch)
    run = TrainingRun(method.name, config.checkpoint_every, checkpoint_path, history_path, resume, metadata, progress)
    return _train(method, source, config, resolve_device(config.device), preprocess, seed, eval_hook, run)


def _check_size(n: int) -> None:
    if n == 0:
        raise DataError("fit: the training set is empty")
    if n < distributed.world_size():
        raise DataError(f"fit: {n} training samples cannot be shared by {distributed.world_size()} processes")


class _Source(Protocol):
    """Where training batches come from (this rank's share of them)."""

    def train_size(self) -> int:
        """Training samples (without outliers)."""

    def epoch_size(self) -> int:
        """Samples one epoch trains on, over all ranks, before padding."""

    def draw(self, size: int, pipeline: InputPipeline) -> tuple[torch.Tensor, torch.Tensor]:
        """``size`` training samples drawn without replacement (a step-based phase's batch)."""

    def reseed(self, seed: int) -> None:
        """Restart the data order from ``seed`` (a phase that starts afresh)."""

    def epoch(self, epoch: int, pipeline: InputPipeline, batch_size: int) -> Batches:
        """This rank's shuffled training batches of ``epoch``."""

    def local(self, pipeline: InputPipeline, batch_size: int) -> Batches:
        """This rank's contiguous share of the training samples (no outliers), in order."""

    def state(self) -> dict[str, Any]:
        """Data-order state for checkpoints."""

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""


#: An in-memory training set is preprocessed once, not again every epoch, when its
#: preprocessed form takes at most this many bytes. Measured on this project's 2-core CPU
#: (30 one-class MNIST LeNets, gcn-minmax, 3 epochs, cProfile): re-preprocessing every
#: batch was about a fifth of the time.
PREPARED_POOL_BYTES = 256 * 2**20


class _InMemory:
    """Batches sliced from ``pool`` (the ``n`` training samples, then the outliers).

    A pool small enough (:data:`PREPARED_POOL_BYTES`) is run through the input pipeline
    once, on first use, and batches are sliced from the result: the pipeline is a fixed,
    per-sample function during training (augmentation comes after it), so the batches are
    the same as preprocessing each one.
    """

    def __init__(
        self, pool: torch.Tensor, labels: torch.Tensor, n: int, n_outliers: int, shuffle: torch.Generator
    ) -> None:
        self.pool, self.labels, self.n, self.n_outliers, self.shuffle = pool, labels, n, n_outliers, shuffle
        self._prepared: tuple[InputPipeline, torch.Tensor | None] | None = None

    def train_size(self) -> int:
        return self.n

    def epoch_size(self) -> int:
        return self.n + self.n_outliers

    def batch(self, index: torch.Tensor, pipeline: InputPipeline) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples ``index`` of the pool as network input, and their labels, on the device."""
        ready = self._ready(pipeline)
        labels = self.labels[index].to(pipeline.device)
        if ready is None:
            return pipeline(self.pool[index]), labels
        return pipeline.layout(ready[index.to(ready.device)]), labels

    def _ready(self, pipeline: InputPipeline) -> torch.Tensor | None:
        """The whole pool through ``pipeline``, or ``None`` when too big (decided once per pipeline)."""
        if self._prepared is None or self._prepared[0] is not pipeline:
            self._prepared = (pipeline, self._prepare(pipeline))
        return self._prepared[1]

    def _prepare(self, pipeline: InputPipeline) -> torch.Tensor | None:
        if not len(self.pool):
            return None
        first = pipeline(self.pool[:1])
        if first.numel() * first.element_size() * len(self.pool) > PREPARED_POOL_BYTES:
            return None
        return torch.cat([pipeline(part) for part in self.pool.split(4096)])

    def draw(self, size: int, pipeline: InputPipeline) -> tuple[torch.Tensor, torch.Tensor]:
        """The same draw on every rank under DDP (each rank then steps on the same batch)."""
        chosen = torch.randperm(self.n, generator=self.shuffle)[:size].to(self.pool.device)
        return self.batch(chosen, pipeline)

    def reseed(self, seed: int) -> None:
        self.shuffle.manual_seed(seed)

    def epoch(self, epoch: int, pipeline: InputPipeline, batch_size: int) -> Batches:
        order = distributed.shard(_epoch_order(self.n, len(self.pool) - self.n, self.n_outliers, self.shuffle))
        return (self.batch(chunk, pipeline) for chunk in order.to(self.pool.device).split(batch_size))

    def local(self, pipeline: InputPipeline, batch_size: int) -> Batches:
        start, stop = distributed.shard_range(self.n)
        index = torch.arange(start, stop, device=self.pool.device)
        return (self.batch(chunk, pipeline) for chunk in index.split(batch_size))

    def state(self) -> dict[str, Any]:
        return {"shuffle": self.shuffle.get_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.shuffle.set_state(state["shuffle"])


class _Streamed:
    """Batches read from a memory-mapped dataset in chunks (:mod:`encircle.data.memmap`)."""

    def __init__(
        self, dataset: memmap.MemmapDataset, seed: int, chunk_size: int, shuffle_chunks: int, prefetch: int
    ) -> None:
        self.dataset, self.seed, self.chunk_size = dataset, seed, chunk_size
        self.shuffle_chunks, self.prefetch = shuffle_chunks, prefetch

    def train_size(self) -> int:
        return len(self.dataset)

    def epoch_size(self) -> int:
        return len(self.dataset)

    def draw(self, size: int, pipeline: InputPipeline) -> tuple[torch.Tensor, torch.Tensor]:
        raise ConfigError("step-based phases (OGNet's phase two) need in-memory training data, not a memory map")

    def reseed(self, seed: int) -> None:
        """Nothing to do: each epoch's order depends only on the seed and the epoch."""

    def epoch(self, epoch: int, pipeline: InputPipeline, batch_size: int) -> Batches:
        rank, world = distributed.rank(), distributed.world_size()
        chunk_order = _generator(self.seed, epoch)  # the same on every rank
        ranges = memmap.epoch_ranges(len(self.dataset), self.chunk_size, chunk_order, rank, world)
        raw = memmap.stream_batches(
            self.dataset,
            ranges,
            batch_size,
            generator=_generator(self.seed, epoch, rank + 1),
            shuffle_samples=self.shuffle_chunks * self.chunk_size,
            prefetch=self.prefetch,
        )
        return pipeline.prepare(raw)

    def local(self, pipeline: InputPipeline, batch_size: int) -> Batches:
        rank, world = distributed.rank(), distributed.world_size()
        ranges = memmap.shard_ranges(len(self.dataset), self.chunk_size, rank, world)
        raw = memmap.stream_batches(self.dataset, ranges, batch_size, prefetch=self.prefetch)
        return pipeline.prepare(raw)

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass


def _generator(*keys: int) -> torch.Generator:
    """A generator seeded from ``keys`` (well mixed: nearby keys give unrelated streams)."""
    entropy = [k % 2**64 for k in keys]
    return torch.Generator().manual_seed(int(np.random.SeedSequence(entropy).generate_state(1)[0]))


def start_training(
    method: Method, config: TrainConfig, device: torch.device, preprocess: Preprocess, seed: int
) -> InputPipeline:
    """Seed the global torch RNG, keep freed host memory for reuse on a CPU (when asked),
    move ``method`` to ``device`` (channels_last when asked) and return the input pipeline."""
    torch.manual_seed(seed)
    if device.type == "cpu" and config.keep_host_memory:
        keep_freed_memory()
    pipeline = InputPipeline(preprocess, device, config.channels_last, config.amp)
    _to_device(method, device, config.channels_last)
    return pipeline


def _to_device(module: Method, device: torch.device, channels_last: bool) -> None:
    module.to(device)
    if channels_last:
        module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def loss_problem(value: float, first: float, method_name: str, where: str, lr: float) -> str:
    """Why a training loss ``value`` must stop its run (``""``: it need not): it is not
    finite, or it is ``DIVERGENCE_FACTOR`` times ``first``, the phase's first absolute loss.
    ``where`` names the phase and the step (``"phase 'train', epoch 1, batch 3"``)."""
    if not math.isfinite(value):
        return (
            f"the {method_name} loss is {value} in {where} (learning rate {lr:g}); "
            "try a lower train.lr, train.amp='off', or check the input data"
        )
    if abs(value) > DIVERGENCE_FACTOR * max(first, DIVERGENCE_FLOOR):
        return (
            f"the {method_name} loss diverged in {where}: {value:.3g}, more than "
            f"{DIVERGENCE_FACTOR:.0e} times its first value {first:.3g}; the learning rate {lr:g} is too high "
            "(lower train.lr)"
        )
    return ""


class _PhaseRun:
    """One phase in progress: what trains, its optimisers, schedules, GradScaler, the
    epochs or steps done and the sums of its step metrics; the engine's :class:`Step`."""

    def __init__(self, index: int, phase: Phase, method: Method, pipeline: InputPipeline) -> None:
        self.index, self.phase, self.pipeline = index, phase, pipeline
        self.module = phase.module or method
        self.optimizers = method.configure_optimizers(phase)
        self.schedulers = {name: make_scheduler(opt, phase.train) for name, opt in self.optimizers.items()}
        self.scaler = torch.amp.GradScaler(pipeline.device.type, enabled=pipeline.amp == "fp16")
        self.done = 0
        self.sums: dict[str, torch.Tensor] = {}
        self.seen = 0
        self.first_loss: dict[str, float] = {}
        self.epoch = 0
        self.batch = 0
        self.method_name = method.name

    @property
    def total(self) -> int:
        """Epochs or steps this phase runs."""
        return self.phase.steps or self.phase.train.epochs

    def autocast(self) -> AbstractContextManager[Any]:
        return self.pipeline.autocast()

    def optimize(self, loss: torch.Tensor, optimizer: str = "main", inputs: list[nn.Parameter] | None = None) -> None:
        """The NaN / divergence guard, then zero_grad, (scaled) backward, gradient
        averaging under DDP and the optimiser step."""
        self._check(loss, optimizer)
        opt = self.optimizers[optimizer]
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward(inputs=inputs)
        distributed.average_gradients(p for group in opt.param_groups for p in group["params"])
        self.scaler.step(opt)
        self.scaler.update()

    def _check(self, loss: torch.Tensor, optimizer: str) -> None:
        """Stop on a non-finite loss, or one ``DIVERGENCE_FACTOR`` times its phase's first."""
        value = float(loss.detach())
        first = self.first_loss.setdefault(optimizer, abs(value))
        where = f"epoch {self.epoch + 1}, batch {self.batch + 1}" if not self.phase.steps else f"step {self.done + 1}"
        lr = self.optimizers[optimizer].param_groups[0]["lr"]
        problem = loss_problem(value, first, self.method_name, f"phase {self.phase.name!r}, {where}", lr)
        if problem:
            raise TrainingError(problem)

    def add(self, metrics: dict[str, torch.Tensor], size: int) -> None:
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0) + value.double() * size
        self.seen += size

    def averages(self) -> tuple[dict[str, float], float]:
        """Mean of each step metric over the samples since the last reset, and their
        number, over all ranks."""
        keys = sorted(self.sums)
        device = self.pipeline.device
        values = [self.sums[k] for k in keys] + [torch.tensor(float(self.seen), dtype=torch.float64, device=device)]
        totals = distributed.all_reduce_sum(torch.stack(values)).tolist()
        return {key: total / totals[-1] for key, total in zip(keys, totals[:-1], strict=True)}, totals[-1]

    def reset(self) -> None:
        self.sums, self.seen = {}, 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "phase": self.index,
            "done": self.done,
            "module": self.module.state_dict() if self.phase.module is not None else {},
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "schedulers": {name: sched.state_dict() for name, sched in self.schedulers.items()},
            "scaler": self.scaler.state_dict(),
            "sums": {key: float(value) for key, value in self.sums.items()},
            "seen": self.seen,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.done = int(state["done"])
        if self.phase.module is not None:
            self.module.load_state_dict(state["module"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
            self.schedulers[name].load_state_dict(state["schedulers"][name])
        self.scaler.load_state_dict(state["scaler"])
        device = self.pipeline.device
        self.sums = {k: torch.tensor(v, dtype=torch.float64, device=device) for k, v in state["sums"].items()}
        self.seen = int(state["seen"])


def _train(
    method: Method,
    source: _Source,
    config: TrainConfig,
    device: torch.device,
    preprocess: Preprocess,
    seed: int,
    eval_hook: EvalHook | None,
    run: TrainingRun,
) -> FitResult:
    """Every phase of ``method`` in order, resumable at any checkpoint."""
    # the phases first: a phase's own module (an autoencoder's decoder) draws its initial
    # weights from the stream that drew the network's
    phases = method.phases(config, source.train_size())
    pipeline = start_training(method, config, device, preprocess, seed)
    for phase in phases:
        if phase.module is not None:
            _to_device(phase.module, device, config.channels_last)
    result = FitResult()
    current: _PhaseRun | None = None

    def restore(state: dict[str, Any]) -> None:
        nonlocal current
        method.load_state_dict(state["model"])
        index = int(state["phase"])
        current = _PhaseRun(index, phases[index], method, pipeline)
        current.load_state_dict(state)
        source.load_state(state["rng"])

    if run.restore(restore) and current is not None:
        result.resumed_phase, result.resumed_from = current.phase.name, current.done
        log.info("resumed from %s in phase %s after %d", run.checkpoint_path, current.phase.name, current.done)
    sizes = [
        _steps_per_epoch(source, phase) * phase.train.epochs if not phase.steps else phase.steps for phase in phases
    ]
    done_before = sum(sizes[: current.index]) if current else 0
    in_phase = (
        current.done * (_steps_per_epoch(source, current.phase) if not current.phase.steps else 1) if current else 0
    )
    bar = run.progress_bar(sum(sizes), done_before + in_phase, "step")
    started = time.perf_counter()
    for index in range(current.index if current else 0, len(phases)):
        if current is None or current.index != index:
            if phases[index].reseed:
                torch.manual_seed(seed)
                source.reseed(seed)
            current = _PhaseRun(index, phases[index], method, pipeline)
            current.module.setup(source.local(pipeline, inference_batch_size(device)))
        _run_phase(method, current, source, pipeline, eval_hook, run, bar)
    bar.close()
    method.eval()
    result.history = run.history
    result.seconds = time.perf_counter() - started
    return result


def _steps_per_epoch(source: _Source, phase: Phase) -> int:
    return math.ceil(
        math.ceil(source.epoch_size() / distributed.world_size()) / _local_batch_size(phase.train.batch_size)
    )


def _run_phase(
    method: Method,
    current: _PhaseRun,
    source: _Source,
    pipeline: InputPipeline,
    eval_hook: EvalHook | None,
    run: TrainingRun,
    bar: Any,
) -> None:
    """The epochs (or steps) of one phase still to do: steps, hooks, history, checkpoints."""
    phase, module = current.phase, current.module
    augment = training_augmentation(phase.train)
    batch_size = _local_batch_size(phase.train.batch_size)
    batches_of = lambda: source.local(pipeline, inference_batch_size(pipeline.device))  # noqa: E731
    started = time.perf_counter()
    steps_at_start = current.done
    while current.done < current.total:
        if phase.steps:  # one step on a random draw
            module.train()
            x, y = source.draw(phase.train.batch_size, pipeline)
            current.add(module.training_step(x, y, current), len(y))
            module.after_step(0)
            current.done += 1
            bar.update()
            last = current.done == current.total
            if last:
                seconds = time.perf_counter() - started
                averages, _ = current.averages()
                images = len(y) * (current.done - steps_at_start)
                record = {"phase": phase.name, "steps": current.done, **averages, "seconds": seconds}
                _finish(record | {"images_per_s": images / seconds}, method, current, eval_hook, run, phase.evaluate)
            if run.checkpoint_due(current.done, last):
                run.save({"model": method.state_dict(), **current.state_dict()}, source.state())
            continue
        current.epoch = current.done
        module.train()
        epoch_start = time.perf_counter()
        for batch, (x, y) in enumerate(source.epoch(current.epoch, pipeline, batch_size)):
            current.batch = batch
            if augment is not None:
                x = augment(x)
            current.add(module.training_step(x, y, current), len(y))
            module.after_step(current.epoch)
            bar.update()
        distributed.average_batchnorm_stats(module)
        module.after_epoch(current.epoch, batches_of)
        for scheduler in current.schedulers.values():
            scheduler.step()
        seconds = time.perf_counter() - epoch_start
        averages, seen = current.averages()
        lr = next(iter(current.optimizers.values())).param_groups[0]["lr"]
        record = {"phase": phase.name, "epoch": current.epoch + 1, **averages, "lr": lr, "seconds": seconds}
        current.reset()
        current.done += 1
        last = current.done == current.total
        every = phase.train.eval_every
        evaluate = phase.evaluate and (last or bool(every and current.done % every == 0))
        _finish(record | {"images_per_s": seen / seconds}, method, current, eval_hook, run, evaluate)
        bar.set_postfix(loss=f"{averages.get('loss', 0.0):.4g}", img_s=f"{seen / seconds:.0f}")
        if run.checkpoint_due(current.done, last):
            run.save({"model": method.state_dict(), **current.state_dict()}, source.state())


def _finish(
    record: dict[str, Any],
    method: Method,
    current: _PhaseRun,
    eval_hook: EvalHook | None,
    run: TrainingRun,
    evaluate: bool,
) -> None:
    """Add the evaluation hook's metrics (``method`` in eval mode) and append the record."""
    if evaluate and eval_hook is not None:
        method.eval()
        record.update(eval_hook(method))
        current.module.train()
    run.record(record)
    if run.writes:
        log.info("%s %s", current.phase.name, _fmt(record))


def _local_batch_size(batch_size: int) -> int:
    """This rank's batch: ``train.batch_size`` is the global batch, split over the ranks."""
    world = distributed.world_size()
    local = math.ceil(batch_size / world)
    if local * world != batch_size:
        log.warning(
            "train.batch_size=%d is not a multiple of the %d processes: each takes %d, %d in all",
            batch_size,
            world,
            local,
            local * world,
        )
    return local


def _epoch_order(n: int, pool_outliers: int, draw: int, shuffle: torch.Generator) -> torch.Tensor:
    """Indices of one epoch into ``[samples; outliers]``: all ``n`` samples and ``draw``
    outliers drawn without replacement from ``pool_outliers``, shuffled together."""
    if draw == 0:
        return torch.randperm(n, generator=shuffle)
    chosen = n + torch.randperm(pool_outliers, generator=shuffle)[:draw]
    index = torch.cat([torch.arange(n), chosen])
    return index[torch.randperm(len(index), generator=shuffle)]


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """``"multistep"``: lr x ``lr_gamma`` at each of ``lr_milestones``; ``"cosine"``:
    ``lr_t = lr/2 * (1 + cos(pi t / epochs))``, stepped once per epoch."""
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.lr_milestones), gamma=config.lr_gamma)


def _fmt(record: dict[str, Any]) -> str:
    shown = {
        k: v for k, v in record.items() if k in ("epoch", "steps", "images_per_s") or "loss" in k or k.endswith("auroc")
    }
    return " ".join(f"{k}={v:.4g}" for k, v in shown.items())
