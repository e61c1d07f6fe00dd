"""`load_path`: one entry point that picks the reader from the file or folder."""

import gzip
import io
import json
import tarfile

import numpy as np
import pytest
import torch

from encircle.data import load_path
from encircle.errors import DataError
from tests.data._helpers import idx_bytes, make_npm_tarball, write_idx_set


def test_dispatch_arrays_and_csv(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((3, 4), np.float32))
    assert load_path(tmp_path / "a.npy").images.shape == (3, 4)
    np.savez(tmp_path / "b.npz", x=np.zeros((2, 4, 4), np.uint8))
    assert load_path(tmp_path / "b.npz").shape == (1, 4, 4)
    pixels = np.arange(8).reshape(2, 4) * 30
    text = "\n".join(",".join(map(str, [*row, k])) for k, row in enumerate(pixels))
    (tmp_path / "c.csv.gz").write_bytes(gzip.compress(text.encode()))
    ds = load_path(tmp_path / "c.csv.gz", shape=(1, 2, 2))
    assert ds.images.dtype == torch.uint8 and ds.labels.tolist() == [0, 1]
    assert load_path(str(tmp_path / "c.csv.gz")).images.dtype == torch.float32


def test_dispatch_npm(tmp_path):
    make_npm_tarball(tmp_path / "m.tgz")
    assert len(load_path(tmp_path / "m.tgz")) == 20
    with tarfile.open(tmp_path / "m.tgz") as tar:
        tar.extractall(tmp_path / "u", filter="data")
    assert len(load_path(tmp_path / "u")) == 20
    assert load_path(tmp_path / "u" / "package" / "src" / "digits" / "5.json").labels.tolist() == [5, 5]


def test_dispatch_image_folder(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((3, 3), np.uint8)).save(tmp_path / "a.png")
    assert load_path(tmp_path).shape == (1, 3, 3)


def test_idx_with_and_without_labels(tmp_path):
    write_idx_set(tmp_path, 12, "train")
    ds = load_path(tmp_path / "train-images-idx3-ubyte.gz")
    assert ds.shape == (1, 28, 28) and ds.labels.tolist() == [i % 10 for i in range(12)]
    assert "train-labels-idx1-ubyte.gz" in ds.source
    (tmp_path / "alone.idx").write_bytes(idx_bytes(np.zeros((2, 3, 3), np.uint8)))
    alone = load_path(tmp_path / "alone.idx")
    assert alone.labels.tolist() == [0, 0] and "no labels file" in alone.source


def test_idx_labels_count_must_match(tmp_path):
    (tmp_path / "x-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((2, 3, 3), np.uint8)))
    (tmp_path / "x-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(DataError, match=r"2 images in '.*x-images-idx3-ubyte' but 3 labels in"):
        load_path(tmp_path / "x-images-idx3-ubyte")


def test_errors(tmp_path):
    with pytest.raises(DataError, match=r"data path '.*nothing.npy' does not exist"):
        load_path(tmp_path / "nothing.npy")
    (tmp_path / "x.weird").write_text("")
    with pytest.raises(DataError, match="cannot tell the format of .*x.weird"):
        load_path(tmp_path / "x.weird")
    np.save(tmp_path / "a.npy", np.zeros((3, 4), np.float32))
    with pytest.raises(DataError, match=r"option\(s\) shape do not apply to .*a.npy'; only CSV files take options"):
        load_path(tmp_path / "a.npy", shape=(1, 2, 2))
    (tmp_path / "c.csv").write_text("1,2\n")
    with pytest.raises(DataError, match=r"option\(s\) colour do not apply"):
        load_path(tmp_path / "c.csv", colour=True)


def test_json_that_is_not_digits(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps({"other": 1}))
    with pytest.raises(DataError, match=r"d.json: expected JSON"):
        load_path(tmp_path / "d.json")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz"):
        pass
    (tmp_path / "empty.tar.gz").write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match="no package/src/digits/0.json in the archive"):
        load_path(tmp_path / "empty.tar.gz")
