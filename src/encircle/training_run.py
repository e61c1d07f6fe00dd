"""The bookkeeping around a training loop: resume or start, checkpoints, history, progress bar.

The one training loop (:func:`encircle.engine.fit`, every phase of every method) keeps
its steps and its own checkpoint entries (weights, optimisers, the phase and step where
it stopped); a :class:`TrainingRun` does the rest, so resuming and the files a run
writes stay in one place:

* :meth:`TrainingRun.restore` loads the checkpoint when ``resume`` is asked for and one
  exists (agreed on by every rank under DDP), lets the loop restore its entries,
  restores the global torch RNG and the history, and turns a checkpoint that does not fit
  the run into one :class:`~encircle.errors.CheckpointError`;
* :meth:`TrainingRun.record` appends a history record and rewrites the JSON-lines
  history file atomically;
* :meth:`TrainingRun.checkpoint_due` and :meth:`TrainingRun.save` write a checkpoint at
  the end and after every ``train.checkpoint_every``-th epoch or step, with the loop's
  entries plus ``rng`` (the global torch RNG state and the loop's data-order state),
  ``history`` and ``metadata``.

Under DDP only rank 0 writes files; every rank restores.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from encircle import distributed
from encircle._io import atomic_write_text
from encircle.checkpoint import load_file, save_file
from encircle.errors import CheckpointError

Record = dict[str, Any]


def write_history(path: str | Path, records: list[Record]) -> None:
    """``records`` as a JSON-lines file, written atomically."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


class TrainingRun:
    """Resume, checkpoints, history and progress bar of one training run of ``method_name``.

    Args:
        method_name: the method whose checkpoints these are (checked on resume).
        checkpoint_every: ``train.checkpoint_every``; 0 writes a checkpoint only at the end.
        checkpoint_path: where checkpoints go; ``None`` writes none (and resumes from none).
        history_path: a JSON-lines file rewritten atomically after every record.
        resume: continue from ``checkpoint_path`` when it exists.
        metadata: extra plain values stored in checkpoints (e.g. the run config).
        progress: show a tqdm bar; ``None`` shows it only on a terminal (rank 0 only).
        label: the bar's description (default: ``"METHOD train"``).
    """

    def __init__(
        self,
        method_name: str,
        checkpoint_every: int,
        checkpoint_path: str | Path | None = None,
        history_path: str | Path | None = None,
        resume: bool = False,
        metadata: dict[str, Any] | None = None,
        progress: bool | None = None,
        label: str | None = None,
    ) -> None:
        self.method_name = method_name
        self.label = label or f"{method_name} train"
        self.checkpoint_every = checkpoint_every
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.history_path = history_path
        self.resume = resume
        self.metadata = metadata or {}
        self.progress = progress
        self.writes = distributed.is_main()
        self.history: list[Record] = []

    def restore(self, apply: Callable[[dict[str, Any]], None]) -> bool:
        """Resume from the checkpoint when asked and present; ``False`` starts afresh.

        ``apply`` restores the loop's own entries from the loaded checkpoint; the global
        torch RNG state and the history are restored here. A missing entry or one that does
        not fit (another architecture, another optimiser) is a ``CheckpointError``.
        """
        if not self._resuming() or self.checkpoint_path is None:
            return False
        state = load_file(self.checkpoint_path, "checkpoint", self.method_name)
        try:
            apply(state)
            torch.set_rng_state(state["rng"]["torch"])
            self.history = list(state["history"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(
                f"cannot resume from {str(self.checkpoint_path)!r}: it does not fit this run ({exc})"
            ) from None
        return True

    def _resuming(self) -> bool:
        """Whether to resume: asked for and the checkpoint present (on every rank, under DDP)."""
        if not self.resume or self.checkpoint_path is None:
            return False
        found = self.checkpoint_path.is_file()
        agreeing = int(distributed.all_reduce_sum(torch.tensor(int(found))))
        if agreeing not in (0, distributed.world_size()):
            raise CheckpointError(
                f"checkpoint {str(self.checkpoint_path)!r} exists for {agreeing} of {distributed.world_size()} "
                "processes: resuming under DDP needs the output folder on a file system that every process sees"
            )
        return found

    def record(self, record: Record) -> None:
        """Append ``record`` to the history and rewrite the history file (rank 0)."""
        self.history.append(record)
        if self.writes and self.history_path is not None:
            write_history(self.history_path, self.history)

    def checkpoint_due(self, count: int, last: bool) -> bool:
        """Whether this rank writes a checkpoint after epoch or step ``count`` (1-based)."""
        periodic = self.checkpoint_every > 0 and count % self.checkpoint_every == 0
        return self.writes and self.checkpoint_path is not None and (last or periodic)

    def save(self, entries: dict[str, Any], data_order: dict[str, Any]) -> None:
        """Write the loop's ``entries`` plus ``rng`` (the global torch RNG state and the
        ``data_order`` state), ``history`` and ``metadata`` atomically."""
        if self.checkpoint_path is None:
            return
        rng = {"torch": torch.get_rng_state(), **data_order}
        payload = {**entries, "rng": rng, "history": self.history, "metadata": self.metadata}
        save_file(self.checkpoint_path, "checkpoint", self.method_name, payload)

    def progress_bar(self, total: int, initial: int, unit: str) -> tqdm:
        """A tqdm bar over ``total`` steps, ``initial`` of them done (shown on rank 0 only)."""
        disable = True if not self.writes else None if self.progress is None else not self.progress
        return tqdm(total=total, initial=initial, desc=self.label, unit=unit, disable=disable, leave=False)
