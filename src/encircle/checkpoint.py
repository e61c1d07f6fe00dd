"""Saving and loading encircle files (training checkpoints and detectors) safely.

A file is a dict of state dicts, tensors and plain values with a header:
``format`` (``"encircle-checkpoint"`` or ``"encircle-detector"``), ``format_version``,
``encircle_version``, ``method`` and ``payload_sha256``. It is written atomically and
read with ``torch.load(..., weights_only=True)`` only, so a file carrying a pickled object
that would run code is refused instead of executed. torch's zip reader does not check
the archive's CRCs, so a flipped bit in a tensor would load silently: ``payload_sha256``
(a digest of every tensor's bytes, dtype and shape and of every plain value) is checked
on loading instead. Files written before it existed (no ``payload_sha256``) still load.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from encircle import __version__
from encircle._io import atomic_torch_save
from encircle.errors import CheckpointError

FORMAT_VERSION = 1
HEADER_KEYS = ("format", "format_version", "encircle_version", "method", "payload_sha256")
#: How torch names a global that safe loading refused (wording differs between torch versions).
_REFUSED_GLOBAL = re.compile(r"unsupported (?:global: )?GLOBAL (\S+)", re.IGNORECASE)


def save_file(path: str | Path, kind: str, method: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` under a header to ``path`` atomically."""
    header = {
        "format": f"encircle-{kind}",
        "format_version": FORMAT_VERSION,
        "encircle_version": __version__,
        "method": method,
        "payload_sha256": payload_sha256(payload),
    }
    atomic_torch_save(path, {**header, **payload})


def payload_sha256(payload: dict[str, Any]) -> str:
    """Digest of a payload's structure and content: tensors by dtype, shape and bytes;
    dicts, lists and tuples item by item; other values by type and ``repr``."""
    digest = hashlib.sha256()
    _update(digest, payload)
    return digest.hexdigest()


def _update(digest: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        flat = obj.detach().cpu().contiguous().reshape(-1)
        digest.update(f"T{flat.dtype}{tuple(obj.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        digest.update(f"D{len(obj)}".encode())
        for key, value in obj.items():
            _update(digest, key)
            _update(digest, value)
    elif isinstance(obj, list | tuple):
        digest.update(f"L{len(obj)}".encode())
        for value in obj:
            _update(digest, value)
    else:
        digest.update(f"{type(obj).__name__}:{obj!r};".encode())


def load_file(path: str | Path, kind: str, method: str | None = None) -> dict[str, Any]:
    """Read an encircle file of ``kind``, checking its header.

    Raises:
        CheckpointError: the file is missing, not an encircle ``kind`` file, from a newer
            format version, for another method, or holds objects that safe loading refuses.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{kind} file {str(path)!r} is a folder, expected a file")
    if not path.is_file():
        raise CheckpointError(f"{kind} file {str(path)!r} does not exist")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols before refusing them
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _REFUSED_GLOBAL.search(str(exc))
        if refused:
            raise CheckpointError(
                f"refused to load {str(path)!r}: it holds an object ({refused.group(1)}) that "
                "safe loading (weights_only=True) does not allow, since loading it could run code"
            ) from None
        raise CheckpointError(
            f"{str(path)!r} is not a readable {kind} file: safe loading (weights_only=True) cannot read "
            f"its pickle data ({_gist(exc)})"
        ) from None
    except PermissionError:
        raise CheckpointError(f"cannot read {kind} file {str(path)!r}: permission denied") from None
    except Exception as exc:  # garbage makes torch's reader fail in many ways (IndexError, EOFError, ...)
        raise CheckpointError(
            f"{str(path)!r} is not a readable {kind} file: it is truncated or corrupt ({_gist(exc)})"
        ) from None
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
    recorded = state.get("payload_sha256")
    if recorded is not None:
        got = payload_sha256({k: v for k, v in state.items() if k not in HEADER_KEYS})
        if got != recorded:
            raise CheckpointError(
                f"{str(path)!r} is corrupt: its content does not match the sha256 recorded when it was written "
                f"(expected {recorded}, got {got}); it was damaged after saving"
            )
    return state


def _gist(exc: BaseException) -> str:
    """The informative part of torch's (long, multi-line) loading errors."""
    text = str(exc)
    detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if detail:
        text = detail.group(1)
    text = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", text.strip())
    first = text.splitlines()[0].split(". ")[0].strip() if text.strip() else ""
    return first or "no data where data was expected"
