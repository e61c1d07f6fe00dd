"""Memory-mapped datasets: the file format, chunked shuffled reading, and streamed training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from encircle.config import TrainConfig
from encircle.data.memmap import (
    IMAGES,
    LABELS,
    THREAD_NAME,
    MemmapDataset,
    epoch_ranges,
    shard_ranges,
    stream_batches,
    write_memmap_dataset,
)
from encircle.engine import fit, fit_stream
from encircle.errors import DataError
from encircle.methods import create_method
from encircle.models import create_model
from encircle.preprocess import Preprocess

ROOT = Path(__file__).resolve().parents[1]


def indexed_images(start: int, stop: int) -> np.ndarray:
    """``(n, 1, 2, 2)`` uint8 images whose four bytes spell their index (base 256)."""
    index = np.arange(start, stop, dtype=np.int64)
    return np.stack([(index >> (8 * k)) & 255 for k in range(4)], axis=1).astype(np.uint8).reshape(-1, 1, 2, 2)


def index_of(images: torch.Tensor) -> torch.Tensor:
    flat = images.reshape(len(images), 4).to(torch.int64)
    return sum(flat[:, k] << (8 * k) for k in range(4))  # type: ignore[return-value]


def make_indexed(path: Path, n: int, chunk: int = 100) -> MemmapDataset:
    images = (indexed_images(s, min(s + chunk, n)) for s in range(0, n, chunk))
    labels = (torch.arange(s, min(s + 37, n)) for s in range(0, n, 37))  # other chunking, tensors
    return write_memmap_dataset(path, images, labels)


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


# -- the format ------------------------------------------------------------------------------------


def test_write_and_read_back(tmp_path: Path) -> None:
    ds = make_indexed(tmp_path / "ds", 1000)
    assert (len(ds), ds.sample_shape) == (1000, (1, 2, 2))
    images, labels = ds.read(0, 1000)
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert torch.equal(index_of(images), torch.arange(1000)) and torch.equal(labels, torch.arange(1000))
    x, y = ds.read(250, 260)
    assert torch.equal(index_of(x), torch.arange(250, 260)) and torch.equal(y, torch.arange(250, 260))
    # standard .npy files, data 64-byte aligned: NumPy maps them as they are
    mapped = np.load(tmp_path / "ds" / IMAGES, mmap_mode="r")
    assert mapped.shape == (1000, 1, 2, 2) and mapped.offset % 64 == 0
    assert np.array_equal(mapped, indexed_images(0, 1000))
    assert np.array_equal(np.load(tmp_path / "ds" / LABELS), np.arange(1000))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temporary folder left


def test_reads_files_written_by_numpy(tmp_path: Path) -> None:
    (tmp_path / "np").mkdir()
    np.save(tmp_path / "np" / IMAGES, np.zeros((3, 5), dtype=np.uint8))
    np.save(tmp_path / "np" / LABELS, np.array([1, 2, 3], dtype=np.int64))
    ds = MemmapDataset(tmp_path / "np")
    assert ds.sample_shape == (5,) and ds.read(1, 3)[1].tolist() == [2, 3]


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    def failing() -> Iterator[np.ndarray]:
        yield indexed_images(0, 10)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_memmap_dataset(tmp_path / "ds", failing(), [np.arange(10)])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        ([np.zeros((4, 1, 2, 2), np.float32)], [np.arange(4)], "images chunks must be uint8, got float32"),
        ([np.zeros((4, 1, 2, 2), np.uint8)], [np.zeros(4, np.float32)], "labels chunks must hold integers"),
        ([np.zeros((4,), np.uint8)], [np.arange(4)], r"must have shape \(n, C, H, W\) or \(n, D\), got \(4,\)"),
        ([np.zeros((4, 1, 2, 2), np.uint8)], [np.arange(3)], "got 4 images and 3 labels"),
        ([], [], "got 0 images and 0 labels"),
        (
            [np.zeros((4, 1, 2, 2), np.uint8), np.zeros((4, 1, 3, 3), np.uint8)],
            [np.arange(8)],
            r"samples of shape \(1, 2, 2\), got a chunk of shape \(4, 1, 3, 3\)",
        ),
        ([[1, 2]], [np.arange(2)], "must be NumPy arrays or tensors, got list"),
    ],
)
def test_bad_chunks_are_refused(tmp_path: Path, images: list, labels: list, message: str) -> None:
    with pytest.raises(DataError, match=message):
        write_memmap_dataset(tmp_path / "ds", images, labels)
    assert list(tmp_path.iterdir()) == []


def test_bad_files_are_refused(tmp_path: Path) -> None:
    ds = make_indexed(tmp_path / "ds", 50)
    with pytest.raises(DataError, match="already exists"):
        make_indexed(tmp_path / "ds", 50)
    with pytest.raises(DataError, match=r"read\(40, 51\) is outside the dataset's 50 samples"):
        ds.read(40, 51)
    with open(tmp_path / "ds" / IMAGES, "r+b") as handle:
        handle.truncate(os.path.getsize(tmp_path / "ds" / IMAGES) - 1)
    with pytest.raises(DataError, match=r"images.npy' holds \d+ bytes but its header \(50, 1, 2, 2\) uint8 needs"):
        MemmapDataset(tmp_path / "ds")
    with pytest.raises(DataError, match="does not exist"):
        MemmapDataset(tmp_path / "missing")
    (tmp_path / "f").mkdir()
    np.save(tmp_path / "f" / IMAGES, np.zeros((3, 2), np.uint8))
    np.save(tmp_path / "f" / LABELS, np.zeros(2, np.int64))
    with pytest.raises(DataError, match="must hold 3 int64 labels, got int64 \\(2,\\)"):
        MemmapDataset(tmp_path / "f")


# -- the reading order -----------------------------------------------------------------------------


def covered(ranges: list[tuple[int, int]]) -> list[int]:
    return [i for start, stop in ranges for i in range(start, stop)]


def test_epoch_ranges_one_process_visits_every_sample_once() -> None:
    ranges = epoch_ranges(1000, 64, torch.Generator().manual_seed(0))
    assert sorted(covered(ranges)) == list(range(1000))
    assert covered(ranges) != list(range(1000))  # chunks in a shuffled order
    assert all(stop - start <= 64 and start % 64 == 0 for start, stop in ranges)
    again = epoch_ranges(1000, 64, torch.Generator().manual_seed(0))
    assert ranges == again
    assert epoch_ranges(10, 4, None) == [(0, 4), (4, 8), (8, 10)]


@pytest.mark.parametrize(("n", "world"), [(1000, 3), (10, 4), (3, 3)])
def test_epoch_ranges_are_equal_shares_of_one_sequence(n: int, world: int) -> None:
    per_rank = -(-n // world)
    single = covered(epoch_ranges(n, 7, torch.Generator().manual_seed(1)))
    parts = [covered(epoch_ranges(n, 7, torch.Generator().manual_seed(1), r, world)) for r in range(world)]
    assert all(len(p) == per_rank for p in parts)  # the same number of steps on every rank
    joined = [i for p in parts for i in p]
    # the single-process sequence, padded by wrapping around to its beginning
    assert joined == (single * 2)[: per_rank * world]


def test_shard_ranges_split_the_file_in_order() -> None:
    parts = [covered(shard_ranges(10, 3, r, 3)) for r in range(3)]
    assert parts == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert shard_ranges(10, 3, 0, 3) == [(0, 3), (3, 4)]


def test_stream_batches_shuffle_within_a_buffer_and_keep_pairs(tmp_path: Path) -> None:
    ds = make_indexed(tmp_path / "ds", 1000)
    ranges = epoch_ranges(1000, 50, torch.Generator().manual_seed(0))
    batches = list(stream_batches(ds, ranges, 64, generator=torch.Generator().manual_seed(1), shuffle_samples=200))
    assert [len(y) for _, y in batches] == [64] * 15 + [40]
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == list(range(1000))
    assert all(torch.equal(index_of(x), y) for x, y in batches)  # labels stay with their images
    assert seen.tolist() != covered(ranges)  # shuffled within the buffer too
    plain = list(stream_batches(ds, [(0, 130)], 64))
    assert [y.tolist() for _, y in plain] == [list(range(64)), list(range(64, 128)), [128, 129]]
    assert prefetch_threads() == []


def test_reader_errors_reach_the_consumer_and_early_exit_stops_the_thread(tmp_path: Path) -> None:
    ds = make_indexed(tmp_path / "ds", 1000)
    calls = 0
    original = ds.read

    def failing_read(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise DataError("bad sector")
        return original(start, stop)

    ds.read = failing_read  # type: ignore[method-assign]
    with pytest.raises(DataError, match="bad sector"):
        list(stream_batches(ds, [(i, i + 10) for i in range(0, 100, 10)], 10))
    assert prefetch_threads() == []
    ds.read = original  # type: ignore[method-assign]
    batches = stream_batches(ds, [(i, i + 10) for i in range(0, 1000, 10)], 10, prefetch=1)
    next(batches)
    batches.close()
    assert prefetch_threads() == []


# -- training from it ------------------------------------------------------------------------------


def gaussian_dataset(path: Path, n: int = 600) -> MemmapDataset:
    g = torch.Generator().manual_seed(0)
    images = (128 + 20 * torch.randn(n, 1, 4, 4, generator=g)).clamp(0, 255).to(torch.uint8)
    return write_memmap_dataset(path, [images[: n // 2], images[n // 2 :]], [torch.zeros(n, dtype=torch.int64)])


def stream_train(ds: MemmapDataset, epochs: int, tmp: Path | None = None, resume: bool = False):
    torch.manual_seed(0)
    method = create_method("deep-svdd", create_model("mlp", in_features=16, hidden=(16,), out_features=4))
    result = fit_stream(
        method,
        ds,
        TrainConfig(epochs=epochs, batch_size=32, lr=1e-2, device="cpu", checkpoint_every=1),
        preprocess=Preprocess("unit"),
        seed=0,
        checkpoint_path=tmp / "ckpt.pt" if tmp else None,
        resume=resume,
        progress=False,
        chunk_size=64,
        shuffle_chunks=2,
    )
    return method, result


def test_fit_stream_trains_and_sets_the_same_center_as_fit(tmp_path: Path) -> None:
    ds = gaussian_dataset(tmp_path / "ds")
    method, result = stream_train(ds, 3)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    torch.manual_seed(0)
    in_memory = create_method("deep-svdd", create_model("mlp", in_features=16, hidden=(16,), out_features=4))
    images, labels = ds.read(0, len(ds))
    fit(in_memory, images, labels, TrainConfig(epochs=1, device="cpu"), preprocess=Preprocess("unit"), seed=0)
    assert torch.equal(method.center, in_memory.center)  # setup saw the same batches, in file order


def test_fit_stream_sees_every_sample_once_per_epoch(tmp_path: Path) -> None:
    ds = make_indexed(tmp_path / "ds", 300)
    torch.manual_seed(0)
    method = create_method("deep-svdd", create_model("mlp", in_features=4, hidden=(8,), out_features=2))
    seen: list[torch.Tensor] = []
    original_loss = method.loss

    def recording_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seen.append(y.clone())
        return original_loss(x, y)

    method.loss = recording_loss  # type: ignore[method-assign]
    config = TrainConfig(epochs=2, batch_size=32, lr=1e-3, device="cpu")
    fit_stream(method, ds, config, preprocess=Preprocess("unit"), seed=0, progress=False, chunk_size=40)
    steps = -(-300 // 32)
    assert len(seen) == 2 * steps
    epochs = [torch.cat(seen[:steps]), torch.cat(seen[steps:])]
    assert all(sorted(e.tolist()) == list(range(300)) for e in epochs)
    assert epochs[0].tolist() != epochs[1].tolist()  # a new order every epoch


def test_fit_stream_resume_is_exact(tmp_path: Path) -> None:
    ds = gaussian_dataset(tmp_path / "ds")
    straight, full = stream_train(ds, 3)
    stream_train(ds, 2, tmp_path)
    resumed, rest = stream_train(ds, 3, tmp_path, resume=True)
    assert (rest.resumed_phase, rest.resumed_from) == ("train", 2)
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert [r["loss"] for r in rest.history] == [r["loss"] for r in full.history]


MEMORY_PROBE = ROOT / "benchmarks" / "memmap_probe.py"  # shared with benchmarks/throughput.py


def write_synthetic(path: Path, n: int, chunk: int = 1 << 20) -> MemmapDataset:
    """``n`` random 1x8x8 images (64 bytes each), generated and written chunk by chunk."""
    g = torch.Generator().manual_seed(0)
    starts = range(0, n, chunk)
    images = (torch.randint(0, 256, (min(chunk, n - s), 1, 8, 8), dtype=torch.uint8, generator=g) for s in starts)
    labels = (torch.zeros(min(chunk, n - s), dtype=torch.int64) for s in starts)
    return write_memmap_dataset(path, images, labels)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_ten_million_images_train_in_bounded_memory(tmp_path: Path) -> None:
    """One epoch over 10M images (a 640 MB file) adds less than 150 MiB to the peak RSS."""
    ds = write_synthetic(tmp_path / "big", 10_000_000)
    assert os.path.getsize(tmp_path / "big" / IMAGES) > 640_000_000
    probe = subprocess.run(
        [sys.executable, str(MEMORY_PROBE), str(ds.path)], capture_output=True, text=True, timeout=1200, cwd=ROOT
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    report = json.loads(probe.stdout.strip().splitlines()[-1])
    print(report)
    assert report["rss_peak_after_mib"] - report["rss_peak_before_mib"] < 150
