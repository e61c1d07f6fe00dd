import gzip
import struct

import numpy as np
import pytest
import torch

from encircle.data.idx import read_idx, read_idx_images, read_idx_labels
from encircle.errors import DataError


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.fixture
def images():
    return np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)


def test_raw_and_gz_round_trip(tmp_path, images):
    (tmp_path / "a-idx3-ubyte").write_bytes(idx_bytes(images))
    (tmp_path / "a-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        out = read_idx_images(tmp_path / name)
        assert out.dtype == torch.uint8 and out.shape == (2, 1, 3, 4)
        assert np.array_equal(out[:, 0].numpy(), images)


def test_other_types_and_labels(tmp_path):
    values = np.array([1.5, -2.0], dtype=np.float32)
    (tmp_path / "f.idx").write_bytes(idx_bytes(values, 0x0D))
    assert torch.equal(read_idx(tmp_path / "f.idx"), torch.tensor([1.5, -2.0]))
    (tmp_path / "l.idx").write_bytes(idx_bytes(np.array([3, 1], dtype=np.uint8)))
    labels = read_idx_labels(tmp_path / "l.idx")
    assert labels.dtype == torch.int64 and labels.tolist() == [3, 1]


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_idx(tmp_path / "none.idx")


def test_wrong_magic(tmp_path, images):
    (tmp_path / "bad").write_bytes(b"\x01\x02" + idx_bytes(images)[2:])
    with pytest.raises(DataError, match="is not an IDX file: magic bytes"):
        read_idx(tmp_path / "bad")


def test_unknown_type_code(tmp_path, images):
    (tmp_path / "bad").write_bytes(bytes([0, 0, 0x07, 3]) + idx_bytes(images)[4:])
    with pytest.raises(DataError, match="unknown IDX type code 0x07"):
        read_idx(tmp_path / "bad")


def test_dimensions_do_not_match_file_size(tmp_path, images):
    (tmp_path / "short").write_bytes(idx_bytes(images)[:-5])
    with pytest.raises(DataError, match=r"declares shape \(2, 3, 4\) \(40 bytes with the header\) but the file has 35"):
        read_idx(tmp_path / "short")


def test_absurd_size_refused_before_allocation(tmp_path):
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 4_000_000_000, 28, 28)
    (tmp_path / "huge.gz").write_bytes(gzip.compress(header + b"\x00" * 16))
    with pytest.raises(DataError, match="more than the limit"):
        read_idx(tmp_path / "huge.gz")


def test_truncated_gz(tmp_path, images):
    data = gzip.compress(idx_bytes(np.random.default_rng(0).integers(0, 255, (50, 28, 28), dtype=np.uint8)))
    (tmp_path / "cut.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt gzip"):
        read_idx(tmp_path / "cut.gz")


def test_gz_with_fewer_bytes_than_declared(tmp_path, images):
    (tmp_path / "few.gz").write_bytes(gzip.compress(idx_bytes(images)[:-3]))
    with pytest.raises(DataError, match="IDX data is truncated: expected 24 bytes"):
        read_idx(tmp_path / "few.gz")


def test_gz_with_trailing_data(tmp_path, images):
    (tmp_path / "long.gz").write_bytes(gzip.compress(idx_bytes(images) + b"xx"))
    with pytest.raises(DataError, match="more data than the IDX header"):
        read_idx(tmp_path / "long.gz")


def test_images_must_be_3d_uint8(tmp_path):
    (tmp_path / "v.idx").write_bytes(idx_bytes(np.zeros(4, dtype=np.uint8)))
    with pytest.raises(DataError, match=r"expected uint8 images of shape \(N, H, W\)"):
        read_idx_images(tmp_path / "v.idx")
