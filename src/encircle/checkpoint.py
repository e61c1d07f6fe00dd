"""Saving and loading encircle files (training checkpoints and detectors) safely.

A file is a dict of state dicts, tensors and plain values with a header:
``format`` (``"encircle-checkpoint"`` or ``"encircle-detector"``), ``format_version``,
``encircle_version`` and ``method``. It is written atomically and read with
``torch.load(..., weights_only=True)`` only, so a file carrying a pickled object that
would run code is refused instead of executed.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from encircle import __version__
from encircle._io import atomic_torch_save
from encircle.errors import CheckpointError

FORMAT_VERSION = 1


def save_file(path: str | Path, kind: str, method: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` under a header to ``path`` atomically."""
    header = {
        "format": f"encircle-{kind}",
        "format_version": FORMAT_VERSION,
        "encircle_version": __version__,
        "method": method,
    }
    atomic_torch_save(path, {**header, **payload})


def load_file(path: str | Path, kind: str, method: str | None = None) -> dict[str, Any]:
    """Read an encircle file of ``kind``, checking its header.

    Raises:
        CheckpointError: the file is missing, not an encircle ``kind`` file, from a newer
            format version, for another method, or holds objects that safe loading refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{kind} file {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = re.search(r"Unsupported global: (?:GLOBAL )?(\S+)", str(exc))
        if refused:
            raise CheckpointError(
                f"refused to load {str(path)!r}: it holds an object ({refused.group(1)}) that "
                "safe loading (weights_only=True) does not allow, since loading it could run code"
            ) from None
        raise CheckpointError(f"{str(path)!r} is not a readable {kind} file") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{str(path)!r} is not a readable {kind} file: {exc}") from None
    expected = f"encircle-{kind}"
    if not isinstance(state, dict) or state.get("format") != expected:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{str(path)!r} is not an {expected} file (format: {got!r})")
    version = state.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} has format version {version!r}; this encircle "
            f"({__version__}) reads versions up to {FORMAT_VERSION}: upgrade encircle"
        )
    if method is not None and state.get("method") != method:
        raise CheckpointError(f"{str(path)!r} was written by method {state.get('method')!r}, expected {method!r}")
    return state
