import gzip
import hashlib
import importlib
import logging
import socket

import pytest

from encircle.data.download import download, file_sha256
from encircle.errors import DataError, DownloadError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def _no_retry_wait(monkeypatch):
    # the package re-exports the function `download`, which hides the module attribute
    monkeypatch.setattr(importlib.import_module("encircle.data.download"), "RETRY_WAIT", 0.0)


def test_download_verifies_and_renames(http_server, tmp_path, caplog):
    base, root, handler = http_server
    (root / "f.bin").write_bytes(PAYLOAD)
    with caplog.at_level(logging.INFO, logger="encircle.data.download"):
        dest = download(base + "f.bin", tmp_path / "out" / "f.bin", sha(PAYLOAD), progress=False)
    assert dest == tmp_path / "out" / "f.bin" and dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "out" / "f.bin.part").exists()
    assert file_sha256(dest) == sha(PAYLOAD) and handler.requests == [""]
    assert "sha256 verified" in caplog.text


def test_checksum_mismatch_removes_the_file(http_server, tmp_path):
    base, root, _ = http_server
    (root / "f.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "f.bin"
    with pytest.raises(
        DownloadError, match=rf"checksum mismatch for {base}f.bin: expected sha256 {'0' * 64}, got {sha(PAYLOAD)}"
    ):
        download(base + "f.bin", dest, "0" * 64)
    assert not dest.exists() and not (tmp_path / "f.bin.part").exists()


def test_partial_file_is_resumed(http_server, tmp_path):
    base, root, handler = http_server
    (root / "f.bin").write_bytes(PAYLOAD)
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:1000])
    download(base + "f.bin", tmp_path / "f.bin", sha(PAYLOAD))
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert handler.requests == ["bytes=1000-"]


def test_connection_dropped_midway_is_resumed(http_server, tmp_path):
    base, root, handler = http_server
    handler.drop_after = 300_000
    (root / "f.bin").write_bytes(PAYLOAD)
    download(base + "f.bin", tmp_path / "f.bin", sha(PAYLOAD), retries=1)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert handler.requests == ["", "bytes=300000-"]


def test_dropped_connection_without_retries_keeps_the_part(http_server, tmp_path):
    base, root, handler = http_server
    handler.drop_after = 1000
    (root / "f.bin").write_bytes(PAYLOAD)
    with pytest.raises(
        DownloadError, match=r"could not download .*f.bin after 1 attempt\(s\): connection closed after"
    ):
        download(base + "f.bin", tmp_path / "f.bin", sha(PAYLOAD), retries=0)
    assert (tmp_path / "f.bin.part").stat().st_size == 1000 and not (tmp_path / "f.bin").exists()


def test_server_ignoring_range_restarts(http_server, tmp_path):
    base, root, handler = http_server
    handler.ignore_range = True
    (root / "f.bin").write_bytes(PAYLOAD)
    (tmp_path / "f.bin.part").write_bytes(b"garbage" * 10)
    download(base + "f.bin", tmp_path / "f.bin", sha(PAYLOAD))
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert handler.requests == ["bytes=70-"]


def test_server_answering_another_range_restarts(http_server, tmp_path):
    base, root, handler = http_server
    handler.wrong_range = True
    (root / "f.bin").write_bytes(PAYLOAD)
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:500])
    download(base + "f.bin", tmp_path / "f.bin", sha(PAYLOAD))
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert handler.requests == ["bytes=500-", ""]


def test_corrupt_part_is_fetched_again_from_the_start(http_server, tmp_path):
    base, root, handler = http_server
    (root / "f.bin").write_bytes(PAYLOAD)
    (tmp_path / "f.bin.part").write_bytes(b"X" * 1000)  # wrong bytes: the resumed file fails the checksum
    download(base + "f.bin", tmp_path / "f.bin", sha(PAYLOAD))
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert handler.requests == ["bytes=1000-", ""]


def test_part_longer_than_the_file_restarts(http_server, tmp_path):
    base, root, handler = http_server
    (root / "f.bin").write_bytes(b"small")
    (tmp_path / "f.bin.part").write_bytes(b"much longer than the file")
    download(base + "f.bin", tmp_path / "f.bin", sha(b"small"))
    assert (tmp_path / "f.bin").read_bytes() == b"small"
    assert handler.requests == ["bytes=25-", ""]


def test_existing_good_file_is_kept(http_server, tmp_path):
    base, _, handler = http_server
    (tmp_path / "f.bin").write_bytes(PAYLOAD)
    download(base + "f.bin", tmp_path / "f.bin", sha(PAYLOAD))  # not served: must not be fetched
    assert handler.requests == []


def test_existing_bad_file_is_replaced(http_server, tmp_path):
    base, root, _ = http_server
    (root / "f.bin").write_bytes(PAYLOAD)
    (tmp_path / "f.bin").write_bytes(b"old")
    download(base + "f.bin", tmp_path / "f.bin", sha(PAYLOAD))
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_gunzipped_digest(http_server, tmp_path):
    base, root, _ = http_server
    (root / "f.gz").write_bytes(gzip.compress(PAYLOAD, mtime=0))
    dest = download(base + "f.gz", tmp_path / "f.gz", sha(PAYLOAD), gunzipped=True)
    assert gzip.decompress(dest.read_bytes()) == PAYLOAD
    assert file_sha256(dest, gunzipped=True) == sha(PAYLOAD)
    (root / "plain.gz").write_bytes(PAYLOAD)  # not gzip at all
    with pytest.raises(DownloadError, match=r"expected sha256 of the decompressed content .*, got \(unreadable"):
        download(base + "plain.gz", tmp_path / "plain.gz", sha(PAYLOAD), gunzipped=True)
    assert not (tmp_path / "plain.gz").exists()


def test_missing_file_on_server_is_not_retried(http_server, tmp_path):
    base, _, handler = http_server
    with pytest.raises(DownloadError, match=r"could not download .*none.bin: HTTP 404"):
        download(base + "none.bin", tmp_path / "x", sha(b""), retries=3)
    assert not (tmp_path / "x").exists() and handler.requests == [""]


def test_unreachable_server_is_retried_then_fails(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DownloadError, match=rf"could not download http://127.0.0.1:{port}/f after 3 attempt\(s\)"):
        download(f"http://127.0.0.1:{port}/f", tmp_path / "f", sha(b""), retries=2, timeout=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sha256": "abc"}, r"sha256 for http://x/f must be 64 hex digits, got 'abc'"),
        ({"sha256": "0" * 64, "retries": -1}, "retries must be >= 0 and timeout > 0, got retries=-1"),
        ({"sha256": "0" * 64, "timeout": 0}, "timeout > 0, got retries=2, timeout=0"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(DownloadError, match=message):
        download("http://x/f", tmp_path / "f", **kwargs)


def test_file_sha256_errors(tmp_path):
    with pytest.raises(DataError, match=r"cannot hash '.*none': the file does not exist"):
        file_sha256(tmp_path / "none")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(PAYLOAD)[:100])
    with pytest.raises(DataError, match=r"cannot hash the content of '.*cut.gz': not a complete gzip file"):
        file_sha256(tmp_path / "cut.gz", gunzipped=True)
