"""Atomic file writes: nothing half-written is ever left under the final name.

Each writer writes to a temporary file in the destination's folder, flushes and fsyncs
it, then ``os.replace``-s it over the target, which is atomic on POSIX file systems.
On any error the temporary file is removed and the previous file (if any) is untouched,
and an ``OSError`` without a file name (a full disk: ``ENOSPC``) gets the target's name.
A process killed mid-write (``SIGKILL``, power loss) can leave a hidden ``.NAME.*.tmp``
file behind; readers only ever open ``NAME``, so such a file is never mistaken for the
real one and may be deleted.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success rename it to ``path``."""
    target = Path(path)
    if target.is_dir():  # else os.replace would name the temporary file in its error
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(target))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file stands where a folder of the path should be
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(target.parent)) from None
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None and exc.strerror:
            exc.filename = str(target)  # "[Errno 28] No space left on device: 'out/d.pt'"
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_torch_save(path: str | os.PathLike[str], obj: Any) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically."""
    save: Callable[[Any, IO[bytes]], None] = torch.save
    with atomic_open(path, "wb") as handle:
        save(obj, handle)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    item = getattr(obj, "item", None)  # NumPy scalars
    if callable(item):
        return item()
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")
