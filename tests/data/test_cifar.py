import hashlib
import importlib
import json
import logging
import pickle
import tarfile

import numpy as np
import pytest
import torch

from encircle.data import describe_datasets, load_dataset
from encircle.data.cifar import BATCH_MD5, read_batch, read_cifar10
from encircle.errors import DataError
from tests.data._published import add_bytes, cifar_batches, py2_batch_pickle, serve, sha256, write_cifar_tarball

registry = importlib.import_module("encircle.data.registry")
catalog = importlib.import_module("encircle.data.catalog")
ARCHIVE = "cifar-10-python.tar.gz"


@pytest.fixture(autouse=True)
def _fresh_probe_memo(monkeypatch):
    monkeypatch.setattr(registry, "_UNREACHABLE", {})


def expected(batches, split):
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images = np.concatenate([batches[n][0] for n in names]).reshape(-1, 3, 32, 32)
    return images, np.concatenate([batches[n][1] for n in names])


def test_batch_pickle_is_read_without_unpickling_code(tmp_path):
    data = np.arange(2 * 3072).astype(np.uint8).reshape(2, 3072)
    raw = py2_batch_pickle(data, [3, 9])
    assert np.array_equal(pickle.loads(raw, encoding="bytes")[b"data"], data)  # a genuine NumPy pickle
    (tmp_path / "b").write_bytes(raw)
    images, labels, md5 = read_batch(tmp_path / "b")
    assert images.shape == (2, 3, 32, 32) and images.dtype == np.uint8 and labels.tolist() == [3, 9]
    # row layout: 1024 red, 1024 green, 1024 blue values, each plane row-major
    assert (
        images[1, 0, 0, 1] == data[1, 1] and images[1, 1, 0, 0] == data[1, 1024] and images[1, 2, 31, 31] == data[1, -1]
    )
    assert labels.dtype == np.int64 and len(md5) == 32


def test_download_extract_and_cache(isolated_cache, http_server, monkeypatch, caplog):
    base, served, handler = http_server
    batches = cifar_batches()
    write_cifar_tarball(served / ARCHIVE, batches)
    serve(monkeypatch, "cifar10", base, served, checks="both")
    with caplog.at_level(logging.INFO):
        train = load_dataset("cifar10", "train")
    images, labels = expected(batches, "train")
    assert train.images.dtype == torch.uint8 and train.shape == (3, 32, 32) and len(train) == 20
    assert np.array_equal(train.images.numpy(), images) and np.array_equal(train.labels.numpy(), labels)
    folder = isolated_cache / "cifar10"
    assert train.source == f"cifar10: {folder / ARCHIVE} (cache; downloaded, sha256 and md5 verified)"
    extracted = [p.name for p in folder.iterdir() if p.is_dir() and p.name.startswith("cifar-10-python-")]
    assert len(extracted) == 1 and (folder / extracted[0] / "cifar-10-batches-py" / "test_batch").is_file()
    assert sorted(p.name.split("-", 1)[0] for p in (folder / "arrays").iterdir()) == ["train"] * 3
    test = load_dataset("cifar10", "test")
    assert len(test) == 4 and np.array_equal(test.images.numpy(), expected(batches, "test")[0])
    assert len(handler.requests) == 1  # one archive for both splits
    # later loads: one read from the array cache; nothing fetched, nothing extracted
    (served / ARCHIVE).unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        again = load_dataset("cifar10", "train")
    assert "from the array cache" in caplog.text and torch.equal(again.images, train.images)
    assert again.source == train.source and len(handler.requests) == 1


def test_checksum_mismatch_leaves_nothing(isolated_cache, http_server, monkeypatch):
    base, served, _ = http_server
    write_cifar_tarball(served / ARCHIVE, cifar_batches())
    serve(monkeypatch, "cifar10", base, served, checks="wrong")
    with pytest.raises(DataError, match=rf"not found; .*checksum mismatch for {base}{ARCHIVE}: expected sha256 0000"):
        load_dataset("cifar10", "train")
    assert list((isolated_cache / "cifar10").iterdir()) == []


def test_torchvision_folder_in_root(isolated_cache, tmp_path, caplog):
    batches = cifar_batches(per_batch=3)
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, (data, labels) in batches.items():
        (folder / name).write_bytes(py2_batch_pickle(data, labels))
    with caplog.at_level(logging.WARNING):
        test = load_dataset("cifar10", "test", root=tmp_path / "data")
    assert len(test) == 3 and np.array_equal(test.labels.numpy(), expected(batches, "test")[1])
    assert test.source == f"cifar10: {folder} (root; extracted folder; not the published files)"
    assert "not the published files" in caplog.text  # synthetic batches: a warning, still used


def test_published_md5s_make_a_folder_canonical(tmp_path, monkeypatch):
    batches = cifar_batches(per_batch=1)
    for name, (data, labels) in batches.items():
        (tmp_path / name).write_bytes(py2_batch_pickle(data, labels))
    assert read_cifar10(tmp_path, "test")[2] is False
    digests = {name: hashlib.md5((tmp_path / name).read_bytes()).hexdigest() for name in batches}
    monkeypatch.setattr(importlib.import_module("encircle.data.cifar"), "BATCH_MD5", {**BATCH_MD5, **digests})
    assert read_cifar10(tmp_path, "train")[2] is True


def test_local_archive_in_root_is_checked_once(isolated_cache, tmp_path, monkeypatch):
    batches = cifar_batches(seed=1)
    write_cifar_tarball(tmp_path / ARCHIVE, batches)
    ds = load_dataset("cifar10", "test", root=tmp_path)
    assert np.array_equal(ds.images.numpy(), expected(batches, "test")[0])
    assert ds.source.startswith(f"cifar10: {tmp_path / ARCHIVE} (root; not the published file: sha256 ")
    monkeypatch.setattr(catalog, "file_digests", lambda *a: pytest.fail("the checksum is remembered"))
    assert load_dataset("cifar10", "test", root=tmp_path).source == ds.source


def test_a_replaced_archive_is_decoded_again(isolated_cache, tmp_path):
    old = cifar_batches(seed=2)
    write_cifar_tarball(isolated_cache / "cifar10" / ARCHIVE, old)
    first = load_dataset("cifar10", "test")
    new = cifar_batches(seed=3)
    write_cifar_tarball(isolated_cache / "cifar10" / ARCHIVE, new)
    second = load_dataset("cifar10", "test")
    assert np.array_equal(first.images.numpy(), expected(old, "test")[0])
    assert np.array_equal(second.images.numpy(), expected(new, "test")[0])
    folder = isolated_cache / "cifar10"
    assert len([p for p in folder.iterdir() if p.name.startswith("cifar-10-python-")]) == 1  # old extraction removed
    assert len(list((folder / "arrays").glob("test-*.json"))) == 1


def test_truncated_archive_leaves_no_extraction(isolated_cache, tmp_path):
    write_cifar_tarball(tmp_path / ARCHIVE, cifar_batches())
    data = (tmp_path / ARCHIVE).read_bytes()
    (tmp_path / ARCHIVE).write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"cannot extract '.*{ARCHIVE}': the archive is truncated or corrupt"):
        load_dataset("cifar10", "train", root=tmp_path)
    assert not (isolated_cache / "cifar10").exists() or not any(
        p.is_dir() for p in (isolated_cache / "cifar10").iterdir()
    )


def test_hostile_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "ran"
    evil = b"\x80\x02cos\nsystem\nU" + bytes([len(f"touch {marker}")]) + f"touch {marker}".encode() + b"\x85R."
    (tmp_path / "test_batch").write_bytes(evil)
    with pytest.raises(DataError, match=r"cannot be read safely: refusing to load the global os\.system"):
        read_cifar10(tmp_path, "test")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x80\x02]q\x00.", r"expected a dict with b'data' and b'labels', got list"),
        (b"not a pickle", r"cannot be read safely"),
        (py2_batch_pickle(np.zeros((2, 3072), np.uint8), [1]), r"2 images but 1 labels"),
        (py2_batch_pickle(np.zeros((2, 100), np.uint8), [1, 2]), r"b'data' has shape \(2, 100\), expected \(N, 3072\)"),
        (py2_batch_pickle(np.zeros((1, 3072), np.uint8), [12]), r"b'labels' must be a list of ints 0-9"),
        (py2_batch_pickle(np.zeros((1, 3072), np.uint8), [1]).replace(b"u1", b"f8"), r"not a pickled uint8 NumPy"),
    ],
)
def test_malformed_batches(tmp_path, payload, message):
    (tmp_path / "test_batch").write_bytes(payload)
    with pytest.raises(DataError, match=rf"CIFAR-10 batch '.*test_batch'.*{message}"):
        read_cifar10(tmp_path, "test")


def test_missing_batch_and_bad_split(tmp_path):
    with pytest.raises(DataError, match=r"CIFAR-10 batch '.*data_batch_1' does not exist"):
        read_cifar10(tmp_path, "train")
    with pytest.raises(DataError, match=r"unknown CIFAR-10 split 'val'; expected one of train, test"):
        read_cifar10(tmp_path, "val")
    with pytest.raises(DataError, match=r"unknown split 'val' of cifar10; expected one of train, test"):
        load_dataset("cifar10", "val")


def test_missing_data_says_where_it_looked_and_how_to_supply_it(isolated_cache, tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "_probe", lambda *a: pytest.fail("offline: nothing is probed"))
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", "train", root=tmp_path)
    message = str(info.value)
    assert message.startswith(f"dataset 'cifar10' (train) not found; looked in: root {tmp_path}; ")
    for part in (
        f"root {tmp_path / 'cifar10'}",
        f"cache {isolated_cache / 'cifar10'}",
        "system /usr/share/datasets/cifar10",
        "downloads disabled ($ENCIRCLE_OFFLINE is set)",
        "Supply cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, sha256 6d958be0",
        "or its extracted folder cifar-10-batches-py/",
        "--set data.root=DIR",
        f"put the file at {isolated_cache / 'cifar10' / ARCHIVE}",
    ):
        assert part in message, part


def test_describe_before_and_after_loading(isolated_cache, tmp_path):
    write_cifar_tarball(isolated_cache / "cifar10" / ARCHIVE, cifar_batches())
    rows = {(r["name"], r["split"]): r for r in describe_datasets()}
    row = rows[("cifar10", "train")]
    assert row["kind"] == "cache" and row["resolved_from"] == str(isolated_cache / "cifar10" / ARCHIVE)
    assert row["sha256"] == {ARCHIVE: sha256(isolated_cache / "cifar10" / ARCHIVE)} and row["canonical"] is False
    assert "size" not in row and row["source"].endswith("not loaded yet")
    assert [p.name for p in (isolated_cache / "cifar10").iterdir()] == [ARCHIVE]  # describing writes nothing
    load_dataset("cifar10", "train")
    row = next(r for r in describe_datasets() if (r["name"], r["split"]) == ("cifar10", "train"))
    assert row["size"] == 20 and row["shape"] == [3, 32, 32] and row["canonical"] is False
    svhn = rows[("svhn", "test")]
    assert svhn["resolved_from"] == "missing" and "not found locally" in svhn["error"]


def test_archive_without_the_batch_folder(isolated_cache, tmp_path):
    with tarfile.open(tmp_path / ARCHIVE, "w:gz") as tar:
        add_bytes(tar, "other/file", b"x")
    with pytest.raises(DataError, match=rf"cifar10: the archive '.*{ARCHIVE}' has no folder 'cifar-10-batches-py'"):
        load_dataset("cifar10", "train", root=tmp_path)


def test_a_cache_record_without_its_fields_is_rebuilt(isolated_cache, http_server, monkeypatch):
    base, served, _ = http_server
    write_cifar_tarball(served / ARCHIVE, cifar_batches())
    serve(monkeypatch, "cifar10", base, served, checks="both")
    first = load_dataset("cifar10", "train")
    (record,) = (isolated_cache / "cifar10" / "arrays").glob("train-*.json")
    meta = json.loads(record.read_text())
    del meta["source"]
    record.write_text(json.dumps(meta))
    again = load_dataset("cifar10", "train")
    assert again.source.startswith("cifar10: ") and torch.equal(again.images, first.images)
    assert "source" in json.loads(record.read_text())
