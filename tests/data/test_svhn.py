import importlib

import numpy as np
import pytest
import torch

from encircle.data import load_dataset
from encircle.data.svhn import read_svhn
from encircle.errors import DataError
from tests.data._published import serve

scipy_io = pytest.importorskip("scipy.io")
registry = importlib.import_module("encircle.data.registry")


@pytest.fixture(autouse=True)
def _fresh_probe_memo(monkeypatch):
    monkeypatch.setattr(registry, "_UNREACHABLE", {})


def write_mat(path, n=7, seed=0, labels=None):
    """A ``*_32x32.mat`` file as published: X (32, 32, 3, N) uint8, y (N, 1) with 10 for the digit 0."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8) if labels is None else labels
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy_io.savemat(path, {"X": x, "y": y})
    return x, y


def test_layout_and_label_ten_is_zero(tmp_path):
    x, y = write_mat(tmp_path / "test_32x32.mat", n=12)
    images, labels = read_svhn(tmp_path / "test_32x32.mat")
    assert images.shape == (12, 3, 32, 32) and images.dtype == np.uint8 and images.flags.c_contiguous
    assert np.array_equal(images[5, 2, 7, 30], x[7, 30, 2, 5])  # (N, C, H, W) from (H, W, C, N)
    assert labels.dtype == np.int64 and labels.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]
    assert y[9, 0] == 10 and labels[9] == 0


def test_download_and_cache(isolated_cache, http_server, monkeypatch):
    base, served, handler = http_server
    x, _ = write_mat(served / "train_32x32.mat", n=9)
    write_mat(served / "test_32x32.mat", n=4, seed=1)
    serve(monkeypatch, "svhn", base, served, checks="both")
    train = load_dataset("svhn", "train")
    assert len(train) == 9 and train.shape == (3, 32, 32) and train.images.dtype == torch.uint8
    assert np.array_equal(train.images.numpy(), x.transpose(3, 2, 0, 1))
    assert (
        train.source
        == f"svhn: {isolated_cache / 'svhn' / 'train_32x32.mat'} (cache; downloaded, sha256 and md5 verified)"
    )
    assert len(load_dataset("svhn", "test")) == 4
    assert handler.requests == ["", ""]  # one file per split
    assert torch.equal(load_dataset("svhn", "train").images, train.images)  # from the array cache
    assert len(handler.requests) == 2


def test_checksum_mismatch_removes_the_download(isolated_cache, http_server, monkeypatch):
    base, served, _ = http_server
    write_mat(served / "train_32x32.mat")
    write_mat(served / "test_32x32.mat")
    serve(monkeypatch, "svhn", base, served, checks="wrong")
    with pytest.raises(DataError, match=r"svhn' \(test\) not found; .*checksum mismatch for .*test_32x32\.mat"):
        load_dataset("svhn", "test")
    assert list((isolated_cache / "svhn").iterdir()) == []


def test_truncated_file_is_reported(isolated_cache, tmp_path):
    write_mat(tmp_path / "test_32x32.mat", n=20)
    data = (tmp_path / "test_32x32.mat").read_bytes()
    (tmp_path / "test_32x32.mat").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"SVHN file '.*test_32x32\.mat' is not a readable MATLAB v5 file"):
        load_dataset("svhn", "test", root=tmp_path)
    assert not (isolated_cache / "svhn" / "arrays").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"X": np.zeros((32, 32, 3, 2), np.uint8)}, r"has no 'X' and 'y' variables; got \['X'\]"),
        ({"X": np.zeros((32, 32, 3, 2)), "y": np.ones((2, 1))}, r"'X' is float64 \(32, 32, 3, 2\), expected uint8"),
        ({"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.ones((3, 1))}, r"2 images but 3 labels"),
        ({"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[0], [3]])}, r"integers 1-10 .* from 0 to 3"),
        ({"X": np.zeros((32, 32, 3, 1), np.uint8), "y": np.array([[2.5]])}, r"labels must be integers 1-10"),
    ],
)
def test_malformed_files(tmp_path, content, message):
    scipy_io.savemat(tmp_path / "f.mat", content)
    with pytest.raises(DataError, match=rf"SVHN file '.*f\.mat'.*{message}"):
        read_svhn(tmp_path / "f.mat")


def test_not_a_mat_file_and_missing_file(tmp_path):
    (tmp_path / "f.mat").write_bytes(b"plain text, not MATLAB")
    with pytest.raises(DataError, match=r"not a readable MATLAB v5 file"):
        read_svhn(tmp_path / "f.mat")
    with pytest.raises(DataError, match=r"SVHN file '.*none\.mat' does not exist"):
        read_svhn(tmp_path / "none.mat")


def test_missing_split_message(isolated_cache):
    with pytest.raises(DataError) as info:
        load_dataset("svhn", "test")
    message = str(info.value)
    assert f"cache {isolated_cache / 'svhn'}" in message and "downloads disabled ($ENCIRCLE_OFFLINE is set)" in message
    assert "Supply test_32x32.mat (http://ufldl.stanford.edu/housenumbers/test_32x32.mat, sha256 cdce80df" in message
    assert f"put the file at {isolated_cache / 'svhn' / 'test_32x32.mat'}" in message
