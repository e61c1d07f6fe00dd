import importlib
import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from encircle.data.archive import extract_archive, safe_member_path
from encircle.errors import DataError
from tests.data._published import add_bytes

archive_module = importlib.import_module("encircle.data.archive")


def make_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                add_bytes(tar, *member)
    return path


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "a.tar.gz" and p.suffix not in (".zip", ".tar"))


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz", "w"])
def test_tar_is_extracted_atomically(tmp_path, mode):
    archive = make_tar(tmp_path / "a.tar", [("top/x.txt", b"hello"), ("top/sub/y.bin", b"\x00" * 5000)], mode)
    target = extract_archive(archive, tmp_path / "out")
    assert target == tmp_path / "out"
    assert (target / "top" / "x.txt").read_bytes() == b"hello"
    assert (target / "top" / "sub" / "y.bin").stat().st_size == 5000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar", "out"]  # no temp folder left


def test_modes_from_the_archive_are_not_kept(tmp_path):
    info = tarfile.TarInfo("setuid")
    info.size, info.mode = 2, 0o4777
    with tarfile.open(tmp_path / "a.tar.gz", "w:gz") as tar:
        tar.addfile(info, io.BytesIO(b"ab"))
    out = extract_archive(tmp_path / "a.tar.gz", tmp_path / "out")
    assert not (out / "setuid").stat().st_mode & (stat.S_ISUID | stat.S_IXOTH)


def test_zip_is_extracted(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("d/", "")
        zf.writestr("d/f.txt", "zipped")
    out = extract_archive(tmp_path / "a.zip", tmp_path / "out")
    assert (out / "d" / "f.txt").read_text() == "zipped"


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (("../evil.txt", b"x"), r"member '\.\./evil\.txt' has a '\.\.' component \(path traversal\)"),
        (("top/../../evil.txt", b"x"), r"member 'top/\.\./\.\./evil\.txt' has a '\.\.' component"),
        (("/etc/evil.txt", b"x"), r"member '/etc/evil\.txt' has an absolute path"),
        (
            special("top/link", tarfile.SYMTYPE, "/etc/passwd"),
            r"member 'top/link' is a symbolic link \(to '/etc/passwd'\)",
        ),
        (special("top/inside", tarfile.SYMTYPE, "x.txt"), r"member 'top/inside' is a symbolic link"),
        (special("top/hard", tarfile.LNKTYPE, "top/x.txt"), r"member 'top/hard' is a hard link \(to 'top/x.txt'\)"),
        (special("top/dev", tarfile.CHRTYPE), r"member 'top/dev' is a device file"),
        (special("top/blk", tarfile.BLKTYPE), r"member 'top/blk' is a device file"),
        (special("top/fifo", tarfile.FIFOTYPE), r"member 'top/fifo' is a FIFO"),
    ],
)
def test_unsafe_tar_members_are_refused_and_nothing_is_left(tmp_path, member, reason):
    archive = make_tar(tmp_path / "a.tar.gz", [("top/x.txt", b"fine"), member, ("top/z.txt", b"late")])
    with pytest.raises(DataError, match=rf"refusing to extract '.*a\.tar\.gz': {reason}.*nothing was extracted"):
        extract_archive(archive, tmp_path / "out")
    assert leftovers(tmp_path) == []  # neither the target nor a temporary folder
    assert not (tmp_path.parent / "evil.txt").exists()


@pytest.mark.parametrize(
    ("name", "mode", "reason"),
    [
        ("../evil.txt", 0o100644, r"'\.\./evil\.txt' has a '\.\.' component"),
        ("/abs.txt", 0o100644, r"'/abs\.txt' has an absolute path"),
        ("C:/win.txt", 0o100644, r"'C:/win\.txt' has an absolute path"),
        ("dir\\..\\..\\evil.txt", 0o100644, r"'dir.*evil\.txt' has a '\.\.' component"),
        ("link", stat.S_IFLNK | 0o777, r"'link' is a symbolic link"),
        ("pipe", stat.S_IFIFO | 0o644, r"'pipe' is a device file, FIFO or socket"),
    ],
)
def test_unsafe_zip_members_are_refused(tmp_path, name, mode, reason):
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("ok.txt", "fine")
        info = zipfile.ZipInfo(name)
        info.external_attr = mode << 16
        zf.writestr(info, "payload")
    with pytest.raises(DataError, match=rf"refusing to extract '.*a\.zip': member {reason}"):
        extract_archive(tmp_path / "a.zip", tmp_path / "out")
    assert leftovers(tmp_path) == []


def test_truncated_tar_gz_is_reported_and_leaves_nothing(tmp_path):
    archive = make_tar(tmp_path / "a.tar.gz", [("top/big.bin", os.urandom(200_000)), ("top/small", b"s")])
    data = archive.read_bytes()
    for cut in (len(data) // 2, len(data) - 4):  # mid-member, and only the gzip trailer missing
        archive.write_bytes(data[:cut])
        with pytest.raises(DataError, match=r"cannot extract '.*a\.tar\.gz': the archive is truncated or corrupt"):
            extract_archive(archive, tmp_path / "out")
        assert leftovers(tmp_path) == []


def test_corrupt_gzip_crc_is_detected(tmp_path):
    archive = make_tar(tmp_path / "a.tar.gz", [("f", b"content" * 100)])
    data = bytearray(archive.read_bytes())
    data[-8] ^= 0xFF  # the CRC32 of the trailer
    archive.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"truncated or corrupt \(BadGzipFile: CRC check failed"):
        extract_archive(archive, tmp_path / "out")
    assert leftovers(tmp_path) == []


def test_truncated_zip_is_reported(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("f.bin", os.urandom(10_000))
    data = (tmp_path / "a.zip").read_bytes()
    (tmp_path / "a.zip").write_bytes(data[: len(data) - 30])
    with pytest.raises(DataError, match=r"cannot extract '.*a\.zip': the archive is truncated or corrupt"):
        extract_archive(tmp_path / "a.zip", tmp_path / "out")
    assert leftovers(tmp_path) == []


def test_zip_of_a_newer_version_is_a_data_error(tmp_path):
    """zipfile refuses a "version needed to extract" above 6.3 with NotImplementedError (found by fuzzing)."""
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("f.txt", "x")
    raw = bytearray((tmp_path / "a.zip").read_bytes())
    entry = raw.rindex(b"PK\x01\x02")  # the central directory entry: "version needed" at +6
    raw[entry + 6] = 64
    (tmp_path / "a.zip").write_bytes(bytes(raw))
    with pytest.raises(
        DataError, match=r"cannot extract '.*a\.zip': zipfile cannot read it \(zip file version 6\.4\); nothing was"
    ):
        extract_archive(tmp_path / "a.zip", tmp_path / "out")
    assert leftovers(tmp_path) == []


def test_bad_arguments(tmp_path):
    with pytest.raises(DataError, match=r"archive '.*none\.tar\.gz' does not exist"):
        extract_archive(tmp_path / "none.tar.gz", tmp_path / "out")
    (tmp_path / "plain.txt").write_text("not an archive")
    with pytest.raises(DataError, match=r"cannot extract '.*plain\.txt': the archive is truncated or corrupt"):
        extract_archive(tmp_path / "plain.txt", tmp_path / "out")
    archive = make_tar(tmp_path / "a.tar.gz", [("f", b"x")])
    (tmp_path / "out").mkdir()
    with pytest.raises(DataError, match=r"the target '.*out' already exists"):
        extract_archive(archive, tmp_path / "out")


def test_declared_size_limit(tmp_path):
    archive = make_tar(tmp_path / "a.tar.gz", [("a", b"x" * 600), ("b", b"y" * 600)])
    with pytest.raises(DataError, match=r"its members declare 1,200 bytes, more than the limit of 1,000 bytes"):
        extract_archive(archive, tmp_path / "out", max_bytes=1000)
    assert leftovers(tmp_path) == []


def test_a_concurrent_extraction_wins(tmp_path, monkeypatch):
    archive = make_tar(tmp_path / "a.tar.gz", [("f", b"ours")])

    def racing(src, dst):  # someone else renamed their copy into place first
        Path(dst).mkdir()
        (Path(dst) / "f").write_bytes(b"theirs")
        raise OSError(39, "Directory not empty")

    monkeypatch.setattr(archive_module.os, "rename", racing)
    out = extract_archive(archive, tmp_path / "out")
    assert (out / "f").read_bytes() == b"theirs" and leftovers(tmp_path) == ["out"]


def test_safe_member_path():
    assert str(safe_member_path(Path("a"), "./x//y/./z")) == "x/y/z"
    assert str(safe_member_path(Path("a"), "./")) == "."
    with pytest.raises(DataError, match=r"member '\\\\x' has an absolute path"):
        safe_member_path(Path("a"), "\\x")
