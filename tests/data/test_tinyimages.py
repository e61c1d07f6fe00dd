import dataclasses
import importlib
import logging

import numpy as np
import pytest
import torch

from encircle.data import describe_datasets, load_dataset
from encircle.data.tinyimages import read_tinyimages
from encircle.errors import DataError
from tests.data._published import md5, serve, sha256

registry = importlib.import_module("encircle.data.registry")
catalog = importlib.import_module("encircle.data.catalog")
FILE = "300K_random_images.npy"


@pytest.fixture(autouse=True)
def _fresh_probe_memo(monkeypatch):
    monkeypatch.setattr(registry, "_UNREACHABLE", {})


def write_npy(path, n=6, seed=0):
    """The published layout: uint8 (N, 32, 32, 3)."""
    array = np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return array


def test_download_verified_by_md5_only(isolated_cache, http_server, monkeypatch, caplog):
    base, served, handler = http_server
    array = write_npy(served / FILE)
    serve(monkeypatch, "tinyimages300k", base, served, checks="md5")  # upstream publishes no sha256
    assert catalog.DATASETS["tinyimages300k"].files[FILE].sha256 is None
    with caplog.at_level(logging.INFO, logger="encircle.data.download"):
        ds = load_dataset("tinyimages300k", "train")
    assert "md5 verified" in caplog.text
    assert len(ds) == 6 and ds.shape == (3, 32, 32) and ds.images.dtype == torch.uint8 and ds.images.is_contiguous()
    assert np.array_equal(ds.images.numpy(), array.transpose(0, 3, 1, 2))
    assert ds.labels.tolist() == [-1] * 6 and ds.labels.dtype == torch.int64
    cached = isolated_cache / "tinyimages300k" / FILE
    assert ds.source == f"tinyimages300k: {cached} (cache; downloaded, md5 verified (no sha256 is published))"
    row = next(r for r in describe_datasets() if r["name"] == "tinyimages300k")
    assert row["sha256"] == {FILE: sha256(cached)} and row["size"] == 6  # the sha256 is recorded for pinning
    arrays = sorted(p.suffix for p in (isolated_cache / "tinyimages300k" / "arrays").iterdir())
    assert arrays == [".json"]  # the .npy is already the fast form: no second copy
    assert torch.equal(load_dataset("tinyimages300k", "train").images, ds.images) and len(handler.requests) == 1


def test_md5_mismatch_removes_the_download(isolated_cache, http_server, monkeypatch):
    base, served, _ = http_server
    write_npy(served / FILE)
    serve(monkeypatch, "tinyimages300k", base, served, checks="md5")
    spec = catalog.DATASETS["tinyimages300k"]
    wrong = {FILE: catalog.Remote(spec.files[FILE].url, sha256=None, md5="0" * 32)}
    monkeypatch.setitem(catalog.DATASETS, "tinyimages300k", dataclasses.replace(spec, files=wrong))
    got = md5(served / FILE)
    with pytest.raises(DataError, match=rf"checksum mismatch for {base}{FILE}: expected md5 0{{32}}, got {got}"):
        load_dataset("tinyimages300k", "train")
    assert list((isolated_cache / "tinyimages300k").iterdir()) == []


def test_local_file_is_hashed_once(isolated_cache, tmp_path, monkeypatch):
    write_npy(tmp_path / FILE, n=3)
    ds = load_dataset("tinyimages300k", "train", root=tmp_path)
    assert ds.source.startswith(f"tinyimages300k: {tmp_path / FILE} (root; not the published file: md5 ")
    monkeypatch.setattr(catalog, "file_digests", lambda *a: pytest.fail("the checksum is remembered"))
    assert torch.equal(load_dataset("tinyimages300k", "train", root=tmp_path).images, ds.images)


def test_only_a_train_split(isolated_cache):
    with pytest.raises(DataError, match=r"unknown split 'test' of tinyimages300k; expected one of train"):
        load_dataset("tinyimages300k", "test")


def test_missing_file_message(isolated_cache, tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("tinyimages300k", "train", root=tmp_path)
    message = str(info.value)
    url = "https://people.eecs.berkeley.edu/~hendrycks/300K_random_images.npy"
    assert f"Supply {FILE} ({url}, md5 64ca64357de98351f28454274a112dc3)" in message
    assert f"put the file at {isolated_cache / 'tinyimages300k' / FILE}" in message
    assert "downloads disabled ($ENCIRCLE_OFFLINE is set)" in message


def test_malformed_files(tmp_path):
    np.save(tmp_path / "f.npy", np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(DataError, match=r"holds float32 \(2, 32, 32, 3\), expected uint8 \(N, 32, 32, 3\)"):
        read_tinyimages(tmp_path / "f.npy")
    np.save(tmp_path / "f.npy", np.zeros((2, 3, 32, 32), np.uint8))
    with pytest.raises(DataError, match=r"holds uint8 \(2, 3, 32, 32\)"):
        read_tinyimages(tmp_path / "f.npy")
    np.save(tmp_path / "f.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match=r"refused to load \(object arrays need pickle, which is off\)"):
        read_tinyimages(tmp_path / "f.npy")
    write_npy(tmp_path / "cut.npy", n=4)
    data = (tmp_path / "cut.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        DataError,
        match=r"TinyImages300k file '.*cut\.npy': \.npy header declares shape \(4, 32, 32, 3\) uint8 "
        r"\(12,288 bytes of data\) but only 6,\d+ bytes follow the header; the file is truncated or corrupt",
    ):
        read_tinyimages(tmp_path / "cut.npy")
    with pytest.raises(DataError, match=r"'.*none\.npy' does not exist"):
        read_tinyimages(tmp_path / "none.npy")
