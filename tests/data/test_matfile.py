import struct
import zlib

import numpy as np
import pytest
import scipy.io as scipy_io

from encircle.data import matfile
from encircle.data.matfile import read_mat_arrays
from encircle.errors import DataError

HEADER = b"MATLAB 5.0 MAT-file, written by a test".ljust(116) + b"\x00" * 8 + b"\x00\x01" + b"IM"


def element(kind: int, body: bytes) -> bytes:
    return struct.pack("<II", kind, len(body)) + body + b"\x00" * (-len(body) % 8)


def matrix(name: str, class_code: int, dims: tuple[int, ...], storage: int, data: bytes, flags: int = 0) -> bytes:
    body = element(6, struct.pack("<II", class_code | flags, 0))
    body += element(5, struct.pack(f"<{len(dims)}i", *dims))
    body += element(1, name.encode())
    body += element(storage, data)
    return element(matfile.MI_MATRIX, body)


def compressed(inner: bytes) -> bytes:
    packed = zlib.compress(inner)
    return struct.pack("<II", matfile.MI_COMPRESSED, len(packed)) + packed


@pytest.mark.parametrize("compress", [False, True])
def test_reads_what_scipy_writes(tmp_path, compress):
    rng = np.random.default_rng(0)
    arrays = {
        "X": rng.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8),
        "y": np.arange(1, 6, dtype=np.float64).reshape(5, 1),
        "f": rng.standard_normal((3, 4)).astype(np.float32),
        "i": rng.integers(-(2**40), 2**40, (2, 3, 4), dtype=np.int64),
    }
    scipy_io.savemat(tmp_path / "a.mat", {**arrays, "note": "text", "cell": np.array([1, "x"], dtype=object)},
                     do_compression=compress)  # fmt: skip
    got = read_mat_arrays(tmp_path / "a.mat", ("X", "y", "f", "i"))
    reference = scipy_io.loadmat(tmp_path / "a.mat")
    for name in arrays:
        assert got[name].dtype == reference[name].dtype and np.array_equal(got[name], reference[name]), name
    assert read_mat_arrays(tmp_path / "a.mat", ("missing",)) == {}


def test_small_integers_stored_in_a_smaller_type_keep_their_class(tmp_path):
    # MATLAB stores a double array of small integers as miUINT8; column-major order
    (tmp_path / "m.mat").write_bytes(HEADER + matrix("y", 6, (2, 3), 2, bytes([1, 2, 3, 4, 5, 6])))
    y = read_mat_arrays(tmp_path / "m.mat", ("y",))["y"]
    assert y.dtype == np.float64 and y.tolist() == [[1, 3, 5], [2, 4, 6]]


def test_skips_variables_not_asked_for_even_when_they_are_not_numeric(tmp_path):
    struct_var = matrix("s", 2, (1, 1), 2, b"\x00")  # mxSTRUCT class, not readable here
    numeric = matrix("x", 9, (1, 2), 2, b"\x07\x08")
    (tmp_path / "m.mat").write_bytes(HEADER + struct_var + compressed(numeric))
    assert read_mat_arrays(tmp_path / "m.mat", ("x",))["x"].tolist() == [[7, 8]]
    with pytest.raises(DataError, match="variable 's' is not a real numeric array"):
        read_mat_arrays(tmp_path / "m.mat", ("s",))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"plain text", r"is not a MATLAB v5 file \(no 128-byte v5 header\)"),
        (HEADER[:126] + b"MI", r"only little-endian MATLAB v5 files are supported"),
        (HEADER + b"\x0e\x00\x00\x00", r"is truncated: a data element tag at byte 128 is cut off"),
        (HEADER + struct.pack("<II", 14, 6_029_320) + b"\x00" * 64, r"declares 6029320 bytes but only 64 follow"),
        (HEADER + struct.pack("<II", 15, 10) + b"0123456789", r"a compressed variable does not inflate"),
        (HEADER + compressed(struct.pack("<II", 14, 6_029_320)), r"declares 6029320 bytes but only 0 follow"),
        (HEADER + matrix("x", 9, (4, 4), 2, b"\x00" * 8), r"variable 'x' of shape \(4, 4\) holds 8 bytes"),
        (HEADER + matrix("x", 9, (2, -2), 2, b""), r"variable 'x' has dimensions \[2, -2\]"),
        (HEADER + matrix("x", 6, (1, 1), 9, b"\x00" * 8, flags=0x800), r"'x' is not a real numeric array"),
        (
            HEADER + matrix("x", 9, (1, 1), 99, b"\x00"),
            r"'x' of shape \(1, 1\) holds 1 bytes of storage type 99",
        ),
        (HEADER + element(14, element(6, b"\x00" * 8)), r"a variable has 1 of its 3 header parts"),
    ],
)
def test_damaged_files_are_data_errors(tmp_path, content, message):
    (tmp_path / "bad.mat").write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_mat_arrays(tmp_path / "bad.mat", ("x",))


def test_a_compressed_variable_cannot_inflate_without_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(matfile, "MAX_VARIABLE_BYTES", 1000)
    (tmp_path / "bomb.mat").write_bytes(HEADER + compressed(matrix("x", 9, (100, 100), 2, b"\x00" * 10_000)))
    with pytest.raises(DataError, match="a compressed variable inflates to more than 1000 bytes"):
        read_mat_arrays(tmp_path / "bomb.mat", ("x",))


def test_a_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot read .*none.mat"):
        read_mat_arrays(tmp_path / "none.mat", ("x",))
