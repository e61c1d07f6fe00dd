"""The fit loop every method trains with.

Read :func:`fit` top to bottom: it resolves the device, seeds, sets up the method's
state (or restores a checkpoint), then runs epochs of shuffled mini-batches that are
sliced from in-memory tensors and preprocessed batch-wise on the device. Each epoch
appends a record to the history (loss, learning rate, throughput, and the evaluation
hook's metrics), and checkpoints are written atomically so ``resume=True`` continues
exactly where a run stopped.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from encircle._io import atomic_write_text
from encircle.checkpoint import load_file, save_file
from encircle.config import TrainConfig
from encircle.errors import CheckpointError, ConfigError, DataError, TrainingError
from encircle.methods.base import Method
from encircle.preprocess import Preprocess

log = logging.getLogger(__name__)

EvalHook = Callable[[Method], dict[str, float]]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; an unavailable CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device is {name!r} but CUDA is not available here; use 'cpu' or 'auto'")
    return torch.device(name)


@dataclass
class InputPipeline:
    """Turns raw in-memory samples into network input on the device, batch-wise."""

    preprocess: Preprocess
    device: torch.device
    channels_last: bool = True
    amp: str = "off"

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(raw.to(self.device, non_blocking=True))
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

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
        """Yield preprocessed ``(x, y)`` batches, in ``order`` when given."""
        index = order if order is not None else torch.arange(len(labels), device=labels.device)
        for chunk in index.split(batch_size):
            yield self(samples[chunk]), labels[chunk].to(self.device)


def inference_batch_size(device: torch.device) -> int:
    """Batch size of no-grad passes (center, radius, scoring): 128 on CPU, 1024 on CUDA.

    Measured on this project's 2-core CPU: large batches are 2.5-3.6x slower per image
    there (the first conv's activations leave the cache), while a GPU wants big batches.
    """
    return 1024 if device.type == "cuda" else 128


@torch.no_grad()
def score_samples(
    method: Method, samples: torch.Tensor, pipeline: InputPipeline, batch_size: int | None = None
) -> torch.Tensor:
    """Outlier scores (higher = more anomalous) of ``samples``, float32, on the device."""
    if samples.shape[0] == 0:
        raise DataError("cannot score an empty set of samples")
    was_training = method.training
    method.eval()
    dummy = torch.zeros(samples.shape[0], dtype=torch.int64)
    parts = []
    for x, _ in pipeline.batches(samples, dummy, batch_size or inference_batch_size(pipeline.device)):
        with pipeline.autocast():
            parts.append(method.score(x).float())
    method.train(was_training)
    return torch.cat(parts)


@dataclass
class FitResult:
    """What :func:`fit` returns: per-epoch history and the training wall time."""

    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from_epoch: int = 0


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

    Args:
        method: the method (network + objective) to train, in place.
        samples: raw samples, ``uint8`` images ``(N, C, H, W)`` or float features.
        labels: ``int64`` labels ``(N,)`` (ignored by one-class methods).
        config: optimiser, schedule, epochs, device, AMP and checkpoint settings.
        preprocess: fitted batch transform applied on the device.
        seed: seeds the global torch RNG (initialisation) and the shuffling generator.
        eval_hook: called with the method (eval mode) every ``config.eval_every`` epochs
            and after the last; its metrics join that epoch's history record.
        checkpoint_path: where checkpoints go (every ``config.checkpoint_every`` epochs
            and at the end); ``None`` writes none.
        history_path: a JSON-lines file rewritten atomically after every epoch.
        resume: continue from ``checkpoint_path`` when it exists.
        metadata: extra plain values stored in checkpoints (e.g. the run config).
        progress: show a tqdm bar; ``None`` shows it only on a terminal.
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
    if len(labels) == 0:
        raise DataError("fit: the training set is empty")
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
    torch.manual_seed(seed)
    shuffle = torch.Generator().manual_seed(seed)
    pipeline = InputPipeline(preprocess, device, config.channels_last, config.amp)
    method.to(device)
    if config.channels_last:
        method.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if device.type == "cuda":  # small uint8 datasets live on the GPU; batches slice there
        samples, labels = samples.to(device), labels.to(device)
        pool, pool_labels = pool.to(device), pool_labels.to(device)

    optimizer = _make_optimizer(method, config)
    scheduler = make_scheduler(optimizer, config)
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
    result = FitResult()
    ckpt = Path(checkpoint_path) if checkpoint_path is not None else None
    if resume and ckpt is not None and ckpt.is_file():
        state = load_file(ckpt, "checkpoint", method.name)
        try:
            method.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            shuffle.set_state(state["rng"]["shuffle"])
            torch.set_rng_state(state["rng"]["torch"])
            result.history = list(state["history"])
            result.resumed_from_epoch = int(state["epoch"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"cannot resume from {str(ckpt)!r}: it does not fit this run ({exc})") from None
        log.info("resumed from %s at epoch %d", ckpt, result.resumed_from_epoch)
    else:
        method.setup(pipeline.batches(samples, labels, inference_batch_size(device)))

    steps = math.ceil((n + n_outliers) / config.batch_size)
    bar = tqdm(
        total=config.epochs * steps,
        initial=result.resumed_from_epoch * steps,
        desc=f"{method.name} train",
        unit="batch",
        disable=None if progress is None else not progress,
        leave=False,
    )
    started = time.perf_counter()
    for epoch in range(result.resumed_from_epoch, config.epochs):
        method.train()
        order = _epoch_order(n, len(pool) - n, n_outliers, shuffle).to(pool.device)
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        epoch_start = time.perf_counter()
        for batch, (x, y) in enumerate(pipeline.batches(pool, pool_labels, config.batch_size, order)):
            with pipeline.autocast():
                loss = method.loss(x, y)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"the {method.name} loss is {loss.item()} at epoch {epoch + 1}, batch "
                    f"{batch + 1}; try a lower train.lr, train.amp='off', or check the input data"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            method.after_step(epoch)
            loss_sum += loss.detach() * len(y)
            bar.update()
        method.after_epoch(epoch, lambda: pipeline.batches(samples, labels, inference_batch_size(device)))
        scheduler.step()
        seconds = time.perf_counter() - epoch_start
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "loss": float(loss_sum) / len(order),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": seconds,
            "images_per_s": len(order) / seconds,
        }
        last = epoch + 1 == config.epochs
        if eval_hook is not None and (last or (config.eval_every and (epoch + 1) % config.eval_every == 0)):
            record.update(eval_hook(method))
            method.train()
        result.history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.4g}", img_s=f"{record['images_per_s']:.0f}")
        log.info("epoch %d/%d %s", epoch + 1, config.epochs, _fmt(record))
        if history_path is not None:
            atomic_write_text(history_path, "".join(_json_line(r) for r in result.history))
        if ckpt is not None and (last or (config.checkpoint_every and (epoch + 1) % config.checkpoint_every == 0)):
            save_file(
                ckpt,
                "checkpoint",
                method.name,
                {
                    "epoch": epoch + 1,
                    "model": method.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": {"torch": torch.get_rng_state(), "shuffle": shuffle.get_state()},
                    "history": result.history,
                    "metadata": metadata or {},
                },
            )
    bar.close()
    method.eval()
    result.seconds = time.perf_counter() - started
    return result


def _epoch_order(n: int, pool_outliers: int, draw: int, shuffle: torch.Generator) -> torch.Tensor:
    """Indices of one epoch into ``[samples; outliers]``: all ``n`` samples and ``draw``
    outliers drawn without replacement from ``pool_outliers``, shuffled together."""
    if draw == 0:
        return torch.randperm(n, generator=shuffle)
    chosen = n + torch.randperm(pool_outliers, generator=shuffle)[:draw]
    index = torch.cat([torch.arange(n), chosen])
    return index[torch.randperm(len(index), generator=shuffle)]


def _make_optimizer(method: Method, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in method.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """``"multistep"``: lr x ``lr_gamma`` at each of ``lr_milestones``; ``"cosine"``:
    ``lr_t = lr/2 * (1 + cos(pi t / epochs))``, stepped once per epoch."""
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.lr_milestones), gamma=config.lr_gamma)


def _fmt(record: dict[str, Any]) -> str:
    shown = {k: v for k, v in record.items() if k in ("loss", "images_per_s") or k.endswith("auroc")}
    return " ".join(f"{k}={v:.4g}" for k, v in shown.items())


def _json_line(record: dict[str, Any]) -> str:
    return json.dumps(record) + "\n"
