"""Datasets larger than memory: ``.npy`` files read in shuffled chunks by a prefetch thread.

Format: a folder with two standard NumPy ``.npy`` files (format 1.0, C order, the data
64-byte aligned), so ``np.load(..., mmap_mode="r")`` maps them:

* ``images.npy``: ``uint8`` ``(N, C, H, W)`` (or ``uint8`` ``(N, D)`` features);
* ``labels.npy``: ``int64`` ``(N,)``.

:func:`write_memmap_dataset` writes one from iterables of chunks without holding more
than one chunk, into a temporary folder renamed into place at the end. :class:`MemmapDataset`
reads sample ranges with positional reads (``os.preadv``) into fresh buffers rather than
through a memory map, so pages of the file never count towards the process's resident
memory (the page cache keeps them, outside it).

Training order (:func:`epoch_ranges`, :func:`stream_batches`): the ``N`` samples are cut
into chunks of consecutive samples; each epoch visits the chunks in a seeded order that
is the same on every rank, a prefetch thread reads them ahead, and a shuffle buffer of a
few chunks is permuted before it is cut into batches. This is an approximate shuffle
(as with WebDataset or ``tf.data`` shuffle buffers): a batch mixes samples from about
``shuffle_chunks`` random chunks. Under DDP the chunk sequence is padded by wrapping
around to ``world * ceil(N / world)`` samples and cut into ``world`` contiguous parts,
so every rank trains on exactly ``ceil(N / world)`` samples (the same number of steps).

Memory bound: at most ``(2 * shuffle_chunks + prefetch + 3) * chunk_size`` samples are
held at once (the shuffle buffer's pieces and their concatenation, the prefetch queue,
the chunk being read), plus a batch, whatever ``N`` is.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encircle.data.npy_header import read_header
from encircle.errors import DataError

IMAGES, LABELS = "images.npy", "labels.npy"
#: Default bytes of image data per chunk (a sequential read of this size is efficient).
CHUNK_BYTES = 4 << 20
#: Name of the prefetch threads.
THREAD_NAME = "encircle-memmap-prefetch"
_NPY_ALIGN = 64
_MAGIC = b"\x93NUMPY\x01\x00"

Range = tuple[int, int]
Batch = tuple[torch.Tensor, torch.Tensor]


class _NpyWriter:
    """Appends chunks to a ``.npy`` file whose length is only known at the end."""

    def __init__(self, path: Path, dtype: np.dtype[Any], what: str) -> None:
        self.path, self.dtype, self.what = path, dtype, what
        self.handle = open(path, "wb")  # noqa: SIM115 - closed in finish()/close()
        self.count = 0
        self.sample_shape: tuple[int, ...] | None = None
        self.header_bytes = 0

    def append(self, chunk: np.ndarray) -> None:
        if self.sample_shape is None:
            self.sample_shape = tuple(chunk.shape[1:])
            # room for the header with the longest possible sample count
            self.header_bytes = len(_npy_header(self.dtype, (2**63 - 1, *self.sample_shape)))
            self.handle.seek(self.header_bytes)
        elif tuple(chunk.shape[1:]) != self.sample_shape:
            raise DataError(
                f"{self.what}: every chunk must hold samples of shape {self.sample_shape}, "
                f"got a chunk of shape {tuple(chunk.shape)}"
            )
        self.handle.write(np.ascontiguousarray(chunk).data)
        self.count += chunk.shape[0]

    def finish(self) -> None:
        if self.sample_shape is None:
            raise DataError(f"{self.what}: no samples were written")
        header = _npy_header(self.dtype, (self.count, *self.sample_shape), self.header_bytes)
        self.handle.seek(0)
        self.handle.write(header)
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()

    def close(self) -> None:
        self.handle.close()


def _npy_header(dtype: np.dtype[Any], shape: tuple[int, ...], size: int = 0) -> bytes:
    """A ``.npy`` 1.0 header, space-padded to ``size`` bytes (or to a multiple of 64)."""
    text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    body = len(_MAGIC) + 2 + len(text) + 1
    total = size or math.ceil(body / _NPY_ALIGN) * _NPY_ALIGN
    padded = text + " " * (total - body) + "\n"
    return _MAGIC + (total - len(_MAGIC) - 2).to_bytes(2, "little") + padded.encode("latin1")


def _as_array(chunk: Any, dtype: type[np.generic], what: str) -> np.ndarray:
    if isinstance(chunk, torch.Tensor):
        chunk = chunk.detach().cpu().numpy()
    if not isinstance(chunk, np.ndarray):
        raise DataError(f"{what} chunks must be NumPy arrays or tensors, got {type(chunk).__name__}")
    if dtype is np.uint8 and chunk.dtype != np.uint8:
        raise DataError(f"{what} chunks must be uint8, got {chunk.dtype}")
    if dtype is np.int64:
        if chunk.dtype.kind not in "iu":
            raise DataError(f"{what} chunks must hold integers, got {chunk.dtype}")
        chunk = chunk.astype(np.int64, copy=False)
    min_ndim = 2 if dtype is np.uint8 else 1
    if chunk.ndim < min_ndim or (dtype is np.int64 and chunk.ndim != 1):
        expected = "(n, C, H, W) or (n, D)" if dtype is np.uint8 else "(n,)"
        raise DataError(f"{what} chunks must have shape {expected}, got {tuple(chunk.shape)}")
    return chunk


def write_memmap_dataset(
    path: str | os.PathLike[str],
    images: Iterable[np.ndarray | torch.Tensor],
    labels: Iterable[np.ndarray | torch.Tensor],
) -> MemmapDataset:
    """Write a dataset folder (``images.npy`` + ``labels.npy``) from chunk iterables.

    The two iterables are consumed in lockstep, one chunk of each at a time, so they may
    chunk differently and memory holds one chunk of each; the totals must agree. Chunks
    are ``uint8`` ``(n, C, H, W)`` (or ``(n, D)``) images and integer ``(n,)`` labels,
    as NumPy arrays or tensors. The folder is written under a temporary name next to
    ``path`` and renamed to ``path`` when complete, so ``path`` never holds a partial
    dataset.

    Raises:
        DataError: ``path`` exists, a chunk has the wrong dtype or shape, or the image
            and label counts differ or are zero.
    """
    target = Path(path)
    if target.exists():
        raise DataError(f"write_memmap_dataset: {str(target)!r} already exists; remove it or pick another path")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        writers = (
            _NpyWriter(tmp / IMAGES, np.dtype(np.uint8), "images"),
            _NpyWriter(tmp / LABELS, np.dtype(np.int64), "labels"),
        )
        try:
            for x, y in itertools.zip_longest(images, labels):
                if x is not None:
                    writers[0].append(_as_array(x, np.uint8, "images"))
                if y is not None:
                    writers[1].append(_as_array(y, np.int64, "labels"))
            n_images, n_labels = writers[0].count, writers[1].count
            if n_images != n_labels or n_images == 0:
                raise DataError(
                    f"write_memmap_dataset: got {n_images} images and {n_labels} labels; need the same, > 0"
                )
            for writer in writers:
                writer.finish()
        finally:
            for writer in writers:
                writer.close()
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return MemmapDataset(target)


def _read_header(path: Path) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    """``(shape, dtype, data offset)`` of a ``.npy`` file, checked against its size."""
    try:
        with open(path, "rb") as handle:
            header = read_header(handle, repr(str(path)))
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataError(f"memmap dataset file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise DataError(f"cannot read memmap dataset file {str(path)!r}: {exc}") from None
    if header.fortran_order:
        raise DataError(f"{str(path)!r} is stored in Fortran order; expected C order")
    expected = header.offset + header.data_bytes
    if size != expected:
        raise DataError(
            f"{str(path)!r} holds {size} bytes but its header {header.shape} {header.dtype} needs {expected}"
        )
    return header.shape, header.dtype, header.offset


class MemmapDataset:
    """A dataset folder written by :func:`write_memmap_dataset` (or by ``np.save``).

    Args:
        path: the folder holding ``images.npy`` (``uint8``) and ``labels.npy`` (``int64``).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        shape, dtype, self._image_offset = _read_header(self.path / IMAGES)
        label_shape, label_dtype, self._label_offset = _read_header(self.path / LABELS)
        if dtype != np.uint8 or len(shape) < 2:
            raise DataError(f"{str(self.path / IMAGES)!r} must hold uint8 samples (N, ...), got {dtype} {shape}")
        if label_dtype != np.int64 or len(label_shape) != 1 or label_shape[0] != shape[0]:
            raise DataError(
                f"{str(self.path / LABELS)!r} must hold {shape[0]} int64 labels, got {label_dtype} {label_shape}"
            )
        self.sample_shape: tuple[int, ...] = shape[1:]
        self.sample_bytes = math.prod(self.sample_shape)
        self._n = shape[0]

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"MemmapDataset({str(self.path)!r}, n={self._n}, sample_shape={self.sample_shape})"

    def read(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples ``start:stop`` as fresh ``uint8`` images and ``int64`` labels (CPU)."""
        if not 0 <= start <= stop <= self._n:
            raise DataError(f"read({start}, {stop}) is outside the dataset's {self._n} samples")
        images = np.empty((stop - start, *self.sample_shape), dtype=np.uint8)
        labels = np.empty(stop - start, dtype=np.int64)
        _pread(self.path / IMAGES, images, self._image_offset + start * self.sample_bytes)
        _pread(self.path / LABELS, labels, self._label_offset + start * 8)
        return torch.from_numpy(images), torch.from_numpy(labels)


def _pread(path: Path, out: np.ndarray, offset: int) -> None:
    """Fill ``out`` with the bytes of ``path`` from ``offset`` (positional reads, thread-safe)."""
    view = out.data.cast("B")
    fd = os.open(path, os.O_RDONLY)
    try:
        done = 0
        while done < len(view):
            got = os.preadv(fd, [view[done:]], offset + done)
            if got == 0:
                raise DataError(f"{str(path)!r} ended early: the file shrank while it was read")
            done += got
    finally:
        os.close(fd)


def chunk_size_for(dataset: MemmapDataset, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Samples per chunk: ``chunk_bytes`` of images, at least one sample."""
    return max(1, chunk_bytes // max(1, dataset.sample_bytes))


def epoch_ranges(
    n: int, chunk_size: int, generator: torch.Generator | None, rank: int = 0, world: int = 1
) -> list[Range]:
    """This rank's sample ranges for one epoch.

    The ``n`` samples are cut into chunks of ``chunk_size`` consecutive samples, ordered
    by a permutation from ``generator`` (file order when ``None``); with ``world > 1`` the
    sequence is padded by wrapping around to ``world * ceil(n / world)`` samples and cut
    into ``world`` contiguous parts; rank ``rank`` takes part ``rank``. Every rank must
    pass a generator in the same state.
    """
    chunks = [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]
    if generator is not None:
        chunks = [chunks[i] for i in torch.randperm(len(chunks), generator=generator).tolist()]
    per_rank = math.ceil(n / world)
    return _window(chunks, rank * per_rank, per_rank)


def shard_ranges(n: int, chunk_size: int, rank: int = 0, world: int = 1) -> list[Range]:
    """Rank ``rank``'s contiguous share of ``n`` samples (no padding), in chunks; the
    shares in rank order are the samples in file order (as :func:`encircle.distributed.shard_range`)."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    stop = start + base + (1 if rank < extra else 0)
    return [(s, min(s + chunk_size, stop)) for s in range(start, stop, chunk_size)]


def _window(chunks: Sequence[Range], skip: int, take: int) -> list[Range]:
    """Samples ``skip:skip + take`` of the concatenated ``chunks``, wrapping around."""
    out: list[Range] = []
    position = 0  # of the current chunk's start in the endless repetition of `chunks`
    for start, stop in itertools.cycle(chunks):
        if take == 0:
            break
        size = stop - start
        if position + size > skip:
            lo = start + max(0, skip - position)
            hi = min(stop, lo + take)
            out.append((lo, hi))
            take -= hi - lo
            skip = position + size
        position += size
    return out


def stream_batches(
    dataset: MemmapDataset,
    ranges: Sequence[Range],
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    shuffle_samples: int = 0,
    prefetch: int = 2,
) -> Iterator[Batch]:
    """``(images, labels)`` CPU batches of the samples in ``ranges``, read ahead by a thread.

    A background thread reads the ranges in order (at most ``prefetch`` ahead). With a
    ``generator``, ranges are gathered until at least ``shuffle_samples`` samples are in
    the buffer, which is permuted and cut into batches; the remainder (fewer than
    ``batch_size``) joins the next buffer. Only the last batch may be short, so there are
    ``ceil(total / batch_size)`` batches. Closing the iterator early stops the thread.
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    reader = _Prefetcher(dataset.read, ranges, max(1, prefetch))
    try:
        pieces: list[Batch] = []
        held = 0
        for piece in reader:
            pieces.append(piece)
            held += len(piece[1])
            if held >= max(shuffle_samples, batch_size):
                rest = yield from _cut(pieces, batch_size, generator, last=False)
                pieces, held = ([rest], len(rest[1])) if rest is not None else ([], 0)
        if held:
            yield from _cut(pieces, batch_size, generator, last=True)
    finally:
        reader.close()


def _cut(
    pieces: list[Batch], batch_size: int, generator: torch.Generator | None, last: bool
) -> Generator[Batch, None, Batch | None]:
    """Yield the full batches of ``pieces`` joined (permuted with ``generator``), and all
    of them when ``last``; return the rest (``None`` when nothing is left)."""
    x = torch.cat([p[0] for p in pieces]) if len(pieces) > 1 else pieces[0][0]
    y = torch.cat([p[1] for p in pieces]) if len(pieces) > 1 else pieces[0][1]
    n = len(y)
    order = torch.randperm(n, generator=generator) if generator is not None else None
    stop = n if last else n // batch_size * batch_size
    for start in range(0, stop, batch_size):
        end = min(start + batch_size, stop)
        index = order[start:end] if order is not None else slice(start, end)  # views without a shuffle
        yield x[index], y[index]
    if stop == n:
        return None
    index = order[stop:] if order is not None else slice(stop, n)
    return x[index], y[index]


_END = object()


class _Prefetcher:
    """Runs ``read(start, stop)`` for each range in a daemon thread, ``depth`` ahead."""

    def __init__(self, read: Callable[[int, int], Any], ranges: Sequence[Range], depth: int) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(read, list(ranges)), daemon=True, name=THREAD_NAME)
        self._thread.start()

    def _run(self, read: Callable[[int, int], Any], ranges: list[Range]) -> None:
        try:
            for start, stop in ranges:
                if not self._put(read(start, stop)):
                    return
            self._put(_END)
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            with contextlib.suppress(queue.Full):
                self._queue.put(item, timeout=0.1)
                return True
        return False

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        self._thread.join()
