"""OGNet's two-phase training loop (Zaheer et al., "Old is Gold", CVPR 2020, Sec. 3).

Read :func:`fit_ognet` top to bottom: phase one trains ``G`` (Adam, ``train.lr``) and
``D`` (Adam, ``method.d_lr``) adversarially for ``train.epochs`` epochs of shuffled
``train.batch_size`` batches and freezes ``G_old`` after ``method.old_epoch`` epochs;
phase two freezes ``G`` and trains ``D`` alone (a fresh Adam, ``method.phase2_lr``) for
``method.phase2_iterations`` steps. The losses are those of :mod:`encircle.methods.ognet`.

**Order of a phase-one step.** The authors' code computes ``D(G(x~))`` once, steps
``D``, then back-propagates ``G``'s adversarial loss through that old ``D`` output with
``retain_graph=True``; PyTorch >= 1.5 refuses this, because ``d_optim.step()`` changed
``D``'s weights in place that the saved graph still needs. Here, as in the PyTorch DCGAN
example, ``D`` steps first on ``G(x~).detach()``, then ``G``'s loss uses a fresh ``D``
forward pass through the *updated* ``D``, and its backward pass computes gradients for
``G``'s parameters only (``backward(inputs=...)``), so ``D`` gets no stray gradient.

**Checkpoints** (``checkpoint_path``) hold ``G``, ``G_old``, ``D``, the three Adam states,
the global and data-order RNG states, the phase and the position in it, and the
history. They are written at the end of each phase, and with ``train.checkpoint_every =
k > 0`` also after every ``k``-th phase-one epoch and every ``k``-th phase-two step.
``resume=True`` continues from the checkpoint in the phase it records; on the CPU the
result is bit-identical to an uninterrupted run. Resuming, the checkpoint's common
entries, the history file and the progress bar are :class:`~encircle.training_run.TrainingRun`'s,
as in the engine's loop.

Not used here: ``train.optimizer`` must be ``"adam"`` (the paper's); ``train.scheduler``
and ``train.lr_milestones`` are ignored (the paper uses constant learning rates);
``train.amp`` may be ``"off"`` or ``"bf16"``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from encircle.config import TrainConfig
from encircle.engine import EvalHook, FitResult, data_device, resolve_device, start_training
from encircle.errors import ConfigError, DataError, TrainingError
from encircle.methods.ognet import OGNet, add_noise, to_signed
from encircle.preprocess import Preprocess
from encircle.training_run import TrainingRun

log = logging.getLogger(__name__)

PHASE_ONE, PHASE_TWO = 1, 2
Autocast = Callable[[], AbstractContextManager[Any]]


@dataclass
class OGNetFitResult(FitResult):
    """:class:`~encircle.engine.FitResult` plus where a resumed run started.

    ``history`` holds one record per phase-one epoch (``phase`` 1) and one for phase two
    (``phase`` 2); the evaluation hook's metrics join the last record of each phase.
    """

    resumed_phase: int = 0
    resumed_from_iteration: int = 0

    def phase_record(self, phase: int) -> dict[str, Any]:
        """The last history record of ``phase`` (1 or 2)."""
        records = [r for r in self.history if r.get("phase") == phase]
        if not records:
            raise TrainingError(f"no history record of phase {phase}: the run did not reach it")
        return records[-1]


def check_settings(method: OGNet, config: TrainConfig) -> None:
    """Raise :class:`ConfigError` for settings the two-phase loop cannot run with."""
    if method.old_epoch >= config.epochs:
        raise ConfigError(
            f"method.old_epoch must be < train.epochs (G_old is G after old_epoch of the train.epochs "
            f"phase-one epochs, and must be older than G), got old_epoch={method.old_epoch} with "
            f"train.epochs={config.epochs}"
        )
    if config.optimizer != "adam":
        raise ConfigError(f"OGNet trains with Adam: train.optimizer must be 'adam', got {config.optimizer!r}")
    if config.amp == "fp16":
        raise ConfigError("OGNet supports train.amp 'off' or 'bf16', got 'fp16' (two optimisers, no GradScaler)")
    if config.augment != "none":
        raise ConfigError(
            f"OGNet adds its own input noise and does not augment: train.augment must be 'none', got {config.augment!r}"
        )


def phase_one_step(
    method: OGNet,
    x: torch.Tensor,
    g_optimizer: torch.optim.Optimizer,
    d_optimizer: torch.optim.Optimizer,
    autocast: Autocast = contextlib.nullcontext,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One phase-one step on signed images ``x``: ``D`` first, then ``G`` against the new ``D``.

    ``G`` and ``D`` run in training mode (``G_old`` in eval mode). Returns the detached
    ``(L_D, L_G)``.
    """
    method.train()
    method.g_old.eval()
    with autocast():
        fake = method.generator(add_noise(x, method.noise_std))
        d_loss = method.d_loss(x, fake)
    d_optimizer.zero_grad(set_to_none=True)
    d_loss.backward()
    d_optimizer.step()
    with autocast():
        g_loss = method.g_loss(x, fake)  # a fresh pass through the updated D
    g_optimizer.zero_grad(set_to_none=True)
    g_loss.backward(inputs=list(method.generator.parameters()))
    g_optimizer.step()
    return d_loss.detach(), g_loss.detach()


def phase_two_step(
    method: OGNet,
    x: torch.Tensor,
    x_a: torch.Tensor,
    x_b: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    autocast: Autocast = contextlib.nullcontext,
) -> torch.Tensor:
    """One phase-two step of ``D`` on signed images (``x_a``, ``x_b`` make the
    pseudo-anomalies). ``G`` and ``G_old`` run in eval mode and get no gradient, so their
    weights and BatchNorm statistics stay as they are. Returns the detached loss."""
    method.train()
    method.generator.eval()
    method.g_old.eval()
    with autocast():
        loss = method.d_loss_phase_two(x, x_a, x_b)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def _adam(params: Any, lr: float, config: TrainConfig) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)


def _check_finite(loss: torch.Tensor, where: str) -> None:
    if not torch.isfinite(loss):
        raise TrainingError(
            f"the OGNet loss is {loss.item()} at {where}; try a lower train.lr or method.d_lr, or check the input data"
        )


def fit_ognet(
    method: OGNet,
    samples: torch.Tensor,
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
) -> OGNetFitResult:
    """Train ``method`` on the raw normal ``samples`` in two phases, in place.

    Args:
        method: the OGNet method (networks and hyperparameters).
        samples: raw normal training samples, ``uint8`` images ``(N, C, H, W)``.
        config: epochs, batch size, ``G``'s learning rate, device, checkpoint interval.
        preprocess: fitted batch transform to ``[0, 1]`` images of the networks' shape.
        seed: seeds the global torch RNG (input noise) and the data-order generator.
        eval_hook: called with the method (eval mode) at the end of each phase; its
            metrics join that phase's last history record.
        checkpoint_path, history_path, resume, metadata, progress: the run's files, resume
            flag and progress bar (:class:`~encircle.training_run.TrainingRun`); when
            checkpoints are written is in the module docstring.

    Raises:
        ConfigError: ``old_epoch >= train.epochs`` or unsupported settings.
        DataError: fewer than 3 samples, or samples the networks cannot take.
        TrainingError: a loss became NaN or infinite (names the phase and step).
    """
    n = samples.shape[0]
    if n < 3:
        raise DataError(f"OGNet needs at least 3 training samples (phase two draws three batches per step), got {n}")
    check_settings(method, config)
    method.net.check_input(tuple(preprocess(samples[:1]).shape[1:]))
    device = resolve_device(config.device)
    pipeline = start_training(method, config, device, preprocess, seed)
    order_rng = torch.Generator().manual_seed(seed)
    samples = samples.to(data_device(samples.nbytes, device))
    g_optimizer = _adam(method.generator.parameters(), config.lr, config)
    d_optimizer = _adam(method.discriminator.parameters(), method.d_lr, config)
    d2_optimizer = _adam(method.discriminator.parameters(), method.phase2_lr, config)
    optimizers = {"generator": g_optimizer, "discriminator": d_optimizer, "phase_two": d2_optimizer}

    run = TrainingRun(method.name, config.checkpoint_every, checkpoint_path, history_path, resume, metadata, progress)
    result = OGNetFitResult()
    epoch, iteration, phase_two_loss_sum = 0, 0, 0.0

    def restore(state: dict[str, Any]) -> None:
        nonlocal epoch, iteration, phase_two_loss_sum
        method.load_state_dict(state["model"])
        for key, optimizer in optimizers.items():
            optimizer.load_state_dict(state["optimizers"][key])
        order_rng.set_state(state["rng"]["order"])
        epoch, iteration = int(state["epoch"]), int(state["iteration"])
        phase_two_loss_sum = float(state["phase_two_loss_sum"])
        result.resumed_phase = int(state["phase"])

    if run.restore(restore):
        result.resumed_from_epoch, result.resumed_from_iteration = epoch, iteration
        log.info(
            "resumed from %s in phase %d (epoch %d, iteration %d)",
            run.checkpoint_path,
            result.resumed_phase,
            epoch,
            iteration,
        )

    def save_if_due(count: int, last: bool) -> None:
        if not run.checkpoint_due(count, last):
            return
        entries = {
            "phase": PHASE_ONE if epoch < config.epochs else PHASE_TWO,
            "epoch": epoch,
            "iteration": iteration,
            "model": method.state_dict(),
            "optimizers": {key: optimizer.state_dict() for key, optimizer in optimizers.items()},
            "phase_two_loss_sum": phase_two_loss_sum,
        }
        run.save(entries, {"order": order_rng.get_state()})

    def add_record(record: dict[str, Any], evaluate: bool) -> None:
        if evaluate and eval_hook is not None:
            record.update(eval_hook(method))
        run.record(record)
        log.info("%s", " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))

    steps = math.ceil(n / config.batch_size)
    done = min(epoch, config.epochs) * steps + iteration
    bar = run.progress_bar(config.epochs * steps + method.phase2_iterations, done, "step")
    started = time.perf_counter()
    dummy_labels = torch.zeros(n, dtype=torch.int64, device=samples.device)

    # -- phase one: G and D adversarially; G_old frozen after old_epoch epochs ---------
    while epoch < config.epochs:
        order = torch.randperm(n, generator=order_rng).to(samples.device)
        d_sum = torch.zeros((), device=device, dtype=torch.float64)
        g_sum = torch.zeros((), device=device, dtype=torch.float64)
        epoch_start = time.perf_counter()
        for batch, (x, _) in enumerate(pipeline.batches(samples, dummy_labels, config.batch_size, order)):
            d_loss, g_loss = phase_one_step(method, to_signed(x), g_optimizer, d_optimizer, pipeline.autocast)
            _check_finite(d_loss + g_loss, f"phase one, epoch {epoch + 1}, batch {batch + 1}")
            d_sum += d_loss * len(x)
            g_sum += g_loss * len(x)
            bar.update()
        epoch += 1
        if epoch == method.old_epoch:
            method.snapshot_old()
        seconds = time.perf_counter() - epoch_start
        last = epoch == config.epochs
        method.eval()
        add_record(
            {
                "phase": PHASE_ONE,
                "epoch": epoch,
                "d_loss": float(d_sum) / n,
                "g_loss": float(g_sum) / n,
                "seconds": seconds,
                "images_per_s": n / seconds,
            },
            evaluate=last,
        )
        bar.set_postfix(d_loss=f"{float(d_sum) / n:.4g}", g_loss=f"{float(g_sum) / n:.4g}")
        save_if_due(epoch, last)

    # -- phase two: G and G_old frozen, D alone on good vs bad reconstructions ---------
    batch_size = min(method.phase2_batch_size, n // 3)
    phase_start = time.perf_counter()
    start_iteration = iteration
    while iteration < method.phase2_iterations:
        chosen = torch.randperm(n, generator=order_rng)[: 3 * batch_size].to(samples.device)
        x, x_a, x_b = to_signed(pipeline(samples[chosen])).split(batch_size)
        loss = phase_two_step(method, x, x_a, x_b, d2_optimizer, pipeline.autocast)
        _check_finite(loss, f"phase two, iteration {iteration + 1}")
        phase_two_loss_sum += float(loss)
        iteration += 1
        bar.update()
        last = iteration == method.phase2_iterations
        if last:
            seconds = time.perf_counter() - phase_start
            method.eval()
            add_record(
                {
                    "phase": PHASE_TWO,
                    "iterations": iteration,
                    "loss": phase_two_loss_sum / iteration,
                    "seconds": seconds,
                    "images_per_s": 3 * batch_size * (iteration - start_iteration) / seconds,
                },
                evaluate=True,
            )
        save_if_due(iteration, last)
    bar.close()
    method.eval()
    result.history = run.history
    result.seconds = time.perf_counter() - started
    return result
