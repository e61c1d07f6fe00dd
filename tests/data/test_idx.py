import gzip
import hashlib
import struct
import tracemalloc

import numpy as np
import pytest
import torch

from encircle.data.idx import read_idx, read_idx_header, read_idx_images, read_idx_labels, read_idx_with_sha256
from encircle.errors import DataError
from tests.data._helpers import idx_bytes


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


def test_gzip_is_detected_by_content_not_name(tmp_path, images):
    (tmp_path / "compressed.idx").write_bytes(gzip.compress(idx_bytes(images)))
    assert np.array_equal(read_idx(tmp_path / "compressed.idx").numpy(), images)


def test_content_digest_is_the_same_raw_or_gz(tmp_path, images):
    (tmp_path / "raw").write_bytes(idx_bytes(images))
    (tmp_path / "z.gz").write_bytes(gzip.compress(idx_bytes(images), mtime=0))
    expected = hashlib.sha256(idx_bytes(images)).hexdigest()
    assert read_idx_with_sha256(tmp_path / "raw")[1] == expected
    assert read_idx_with_sha256(tmp_path / "z.gz")[1] == expected


@pytest.mark.parametrize(
    ("values", "code"),
    [
        (np.array([1.5, -2.0], dtype=np.float32), 0x0D),
        (np.array([[1.5], [-2.0]], dtype=np.float64), 0x0E),
        (np.array([-3, 7], dtype=np.int16), 0x0B),
        (np.array([-3, 70000], dtype=np.int32), 0x0C),
        (np.array([-3, 7], dtype=np.int8), 0x09),
    ],
)
def test_other_types_come_back_in_native_order(tmp_path, values, code):
    (tmp_path / "f.idx").write_bytes(idx_bytes(values, code))
    out = read_idx(tmp_path / "f.idx")
    assert out.shape == values.shape and np.array_equal(out.numpy(), values)


def test_labels(tmp_path):
    (tmp_path / "l.idx").write_bytes(idx_bytes(np.array([3, 1], dtype=np.uint8)))
    labels = read_idx_labels(tmp_path / "l.idx")
    assert labels.dtype == torch.int64 and labels.tolist() == [3, 1]


def test_header_only(tmp_path, images):
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(images)))
    header = read_idx_header(tmp_path / "a.gz")
    assert header.shape == (2, 3, 4) and header.payload_bytes == 24 and header.header_bytes == 16


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"IDX file '.*none.idx' does not exist"):
        read_idx(tmp_path / "none.idx")


def test_wrong_magic(tmp_path, images):
    (tmp_path / "bad").write_bytes(b"\x01\x02" + idx_bytes(images)[2:])
    with pytest.raises(DataError, match=r"'.*bad' is not an IDX file: magic bytes b'\\x01\\x02\\x08\\x03'"):
        read_idx(tmp_path / "bad")


def test_empty_file(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(DataError, match="is not an IDX file: magic bytes b''"):
        read_idx(tmp_path / "empty")


def test_unknown_type_code(tmp_path, images):
    (tmp_path / "bad").write_bytes(bytes([0, 0, 0x07, 3]) + idx_bytes(images)[4:])
    with pytest.raises(DataError, match="unknown IDX type code 0x07; expected one of"):
        read_idx(tmp_path / "bad")


def test_zero_dimensions(tmp_path):
    (tmp_path / "bad").write_bytes(bytes([0, 0, 0x08, 0]))
    with pytest.raises(DataError, match="declares 0 dimensions"):
        read_idx(tmp_path / "bad")


def test_truncated_header(tmp_path):
    (tmp_path / "bad").write_bytes(bytes([0, 0, 0x08, 3]) + b"\x00\x00\x00\x02")
    with pytest.raises(DataError, match="IDX header is truncated: 3 dimensions declared, expected 12 bytes"):
        read_idx(tmp_path / "bad")


def test_dimensions_do_not_match_file_size(tmp_path, images):
    (tmp_path / "short").write_bytes(idx_bytes(images)[:-5])
    with pytest.raises(DataError, match=r"declares shape \(2, 3, 4\) \(40 bytes with the header\) but the file has 35"):
        read_idx(tmp_path / "short")
    (tmp_path / "long").write_bytes(idx_bytes(images) + b"x")
    with pytest.raises(DataError, match="but the file has 41 bytes"):
        read_idx_header(tmp_path / "long")


def test_absurd_size_refused_before_allocation(tmp_path):
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 4_000_000_000, 28, 28)
    (tmp_path / "huge.gz").write_bytes(gzip.compress(header + b"\x00" * 16))
    (tmp_path / "huge").write_bytes(header + b"\x00" * 16)
    for name in ("huge.gz", "huge"):
        with pytest.raises(DataError, match=r"declares shape \(4000000000, 28, 28\) .* more than the limit"):
            read_idx(tmp_path / name)


def test_large_declared_gz_payload_allocates_only_what_is_there(tmp_path):
    # 1 GB declared (under the 4 GiB limit) but 100 bytes present: must fail fast and small.
    header = bytes([0, 0, 0x08, 1]) + struct.pack(">I", 1_000_000_000)
    (tmp_path / "liar.gz").write_bytes(gzip.compress(header + b"\x00" * 100))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="IDX data is truncated: expected 1,000,000,000 bytes .* got 100"):
            read_idx(tmp_path / "liar.gz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20


def test_custom_limit(tmp_path, images):
    (tmp_path / "a").write_bytes(idx_bytes(images))
    with pytest.raises(DataError, match="more than the limit of 10 bytes"):
        read_idx(tmp_path / "a", max_bytes=10)


def test_truncated_gz(tmp_path):
    data = gzip.compress(idx_bytes(np.random.default_rng(0).integers(0, 255, (50, 28, 28), dtype=np.uint8)))
    (tmp_path / "cut.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"'.*cut.gz' is a truncated or corrupt gzip file"):
        read_idx(tmp_path / "cut.gz")


def test_corrupt_gz(tmp_path, images):
    data = bytearray(gzip.compress(idx_bytes(images)))
    data[12:16] = b"\xff\xff\xff\xff"
    (tmp_path / "bad.gz").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"'.*bad.gz'"):
        read_idx(tmp_path / "bad.gz")


def test_gz_with_fewer_bytes_than_declared(tmp_path, images):
    (tmp_path / "few.gz").write_bytes(gzip.compress(idx_bytes(images)[:-3]))
    with pytest.raises(DataError, match="IDX data is truncated: expected 24 bytes"):
        read_idx(tmp_path / "few.gz")


def test_gz_with_trailing_data(tmp_path, images):
    (tmp_path / "long.gz").write_bytes(gzip.compress(idx_bytes(images) + b"xx"))
    with pytest.raises(DataError, match="more data than the IDX header's shape"):
        read_idx(tmp_path / "long.gz")


def test_images_must_be_3d_uint8(tmp_path):
    (tmp_path / "v.idx").write_bytes(idx_bytes(np.zeros(4, dtype=np.uint8)))
    with pytest.raises(DataError, match=r"expected uint8 images of shape \(N, H, W\), got torch.uint8 \(4,\)"):
        read_idx_images(tmp_path / "v.idx")


def test_labels_must_be_1d_integers(tmp_path):
    (tmp_path / "l.idx").write_bytes(idx_bytes(np.zeros(2, dtype=np.float32), 0x0D))
    with pytest.raises(DataError, match=r"expected integer labels of shape \(N,\), got torch.float32"):
        read_idx_labels(tmp_path / "l.idx")
