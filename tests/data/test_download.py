import hashlib

import pytest

from encircle.data.download import download, file_sha256
from encircle.errors import DownloadError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_verifies_and_renames(http_server, tmp_path):
    base, root, _ = http_server
    (root / "f.bin").write_bytes(PAYLOAD)
    dest = download(base + "f.bin", tmp_path / "out" / "f.bin", sha(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "out" / "f.bin.part").exists()
    assert file_sha256(dest) == sha(PAYLOAD)


def test_checksum_mismatch_removes_the_file(http_server, tmp_path):
    base, root, _ = http_server
    (root / "f.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match=f"expected sha256 {'0' * 64}, got {sha(PAYLOAD)}"):
        download(base + "f.bin", dest, "0" * 64)
    assert not dest.exists() and not (tmp_path / "f.bin.part").exists()


def test_partial_file_is_resumed(http_server, tmp_path):
    base, root, handler = http_server
    (root / "f.bin").write_bytes(PAYLOAD)
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:1000])
    download(base + "f.bin", tmp_path / "f.bin", sha(PAYLOAD))
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert handler.requests == ["bytes=1000-"]


def test_server_ignoring_range_restarts(http_server, tmp_path):
    base, root, handler = http_server
    handler.ignore_range = True
    (root / "f.bin").write_bytes(PAYLOAD)
    (tmp_path / "f.bin.part").write_bytes(b"garbage" * 10)
    download(base + "f.bin", tmp_path / "f.bin", sha(PAYLOAD))
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_existing_good_file_is_kept(http_server, tmp_path):
    base, _, handler = http_server
    (tmp_path / "f.bin").write_bytes(PAYLOAD)
    download(base + "f.bin", tmp_path / "f.bin", sha(PAYLOAD))  # not served: must not be fetched
    assert handler.requests == []


def test_missing_file_on_server(http_server, tmp_path):
    base, _, _ = http_server
    with pytest.raises(DownloadError, match="could not download .*404"):
        download(base + "none.bin", tmp_path / "x", sha(b""), retries=0)
    assert not (tmp_path / "x").exists()
