"""Safe extraction of tar (plain, gz, bz2, xz) and zip archives.

Every member is checked before it is written, with rules at least as strict as
``tarfile``'s ``filter="data"`` (PEP 706) and the same rules for zip files:

* no absolute paths (``/x``, ``\\x``, ``C:x``) and no ``..`` components, so nothing can
  land outside the target folder;
* no symbolic or hard links at all (not even ones pointing inside the archive), no
  device files, FIFOs or sockets: only regular files and folders;
* file modes are not taken from the archive: files are created with the process umask,
  so no set-uid bits or odd owners survive;
* the sizes the archive declares are summed against a byte limit before anything is
  written, so an archive cannot fill the disk with more than it announces.

Extraction writes into a temporary folder next to the target and renames it onto the
target only when every member was written (and, for compressed tars, the compressed
stream was read to its end, so its CRC and length were checked). On any error the
temporary folder is removed: a refused member or a truncated archive leaves nothing
behind.
"""

from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO

from encircle.errors import DataError

log = logging.getLogger(__name__)

#: Largest total of member sizes an archive may declare (bytes).
MAX_ARCHIVE_BYTES = 16 * 2**30
_CHUNK = 1 << 20
_ONLY = "only regular files and folders are extracted"
#: Errors that mean the archive itself is truncated or corrupt (``lzma.LZMAError`` is
#: what ``lzma`` raises for a damaged ``.xz`` stream or zip member, where ``gzip`` raises
#: ``BadGzipFile``/``zlib.error``).
_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)
#: Zip compression methods ``zipfile`` reads; it raises ``NotImplementedError`` for others.
_ZIP_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}
#: Zip flag bits ``zipfile`` cannot extract without a password or at all (APPNOTE 4.4.4):
#: encrypted (bit 0: ``RuntimeError``), compressed patched data (bit 5) and strong
#: encryption (bit 6: ``NotImplementedError``).
_ZIP_UNREADABLE_FLAGS = {0x01: "encrypted", 0x20: "compressed patched data", 0x40: "strongly encrypted"}


def extract_archive(archive: str | Path, target: str | Path, *, max_bytes: int = MAX_ARCHIVE_BYTES) -> Path:
    """Extract ``archive`` into the new folder ``target``, atomically; returns ``target``.

    The archive kind is told from its content (zip, or tar with any compression
    ``tarfile`` reads), not from its name. When ``target`` appears while extracting
    (another process extracted the same archive), that copy is kept and ours discarded.

    Args:
        archive: a ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz`` or ``.zip`` file.
        target: the folder to create; it must not exist yet.
        max_bytes: largest total size the members may declare.

    Raises:
        DataError: the archive is missing, of an unknown kind, truncated or corrupt; a
            member is unsafe or one ``zipfile`` cannot read (unknown compression,
            encrypted, a name that does not decode, a newer zip version): the message
            names the archive, the member and why; the declared sizes exceed ``max_bytes``; or ``target``
            already exists.
    """
    archive, target = Path(archive), Path(target)
    if not archive.is_file():
        raise DataError(f"archive {str(archive)!r} does not exist")
    if target.exists():
        raise DataError(f"cannot extract {str(archive)!r}: the target {str(target)!r} already exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        try:
            extract = _extract_zip if zipfile.is_zipfile(archive) else _extract_tar
            count = extract(archive, tmp, max_bytes)
        except _CORRUPT as exc:
            raise DataError(
                f"cannot extract {str(archive)!r}: the archive is truncated or corrupt ({type(exc).__name__}: {exc}); "
                "nothing was extracted"
            ) from None
        except OSError as exc:
            raise DataError(f"cannot extract {str(archive)!r} into {str(target.parent)!r}: {exc}") from None
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            log.info("%s was extracted into %s meanwhile by someone else; using that copy", archive, target)
            shutil.rmtree(tmp, ignore_errors=True)
            return target
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("extracted %d members of %s into %s", count, archive, target)
    return target


def safe_member_path(archive: Path, name: str) -> PurePosixPath:
    """The relative path of member ``name``, or a :class:`DataError` if it could escape.

    Refused: absolute paths (POSIX, Windows drive or backslash roots) and any ``..``
    component. ``.`` and empty components are dropped; an empty result is the archive
    root (``PurePosixPath(".")``).
    """
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise _unsafe(archive, name, "has an absolute path")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _unsafe(archive, name, "has a '..' component (path traversal)")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _unsafe(archive: Path, name: str, why: str) -> DataError:
    return DataError(f"refusing to extract {str(archive)!r}: member {name!r} {why}; nothing was extracted")


def _check_total(archive: Path, total: int, max_bytes: int) -> None:
    if total > max_bytes:
        raise DataError(
            f"refusing to extract {str(archive)!r}: its members declare {total:,} bytes, "
            f"more than the limit of {max_bytes:,} bytes; nothing was extracted"
        )


def _extract_tar(archive: Path, into: Path, max_bytes: int) -> int:
    count = total = 0
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            kind = _tar_kind(member)
            if kind is not None:
                raise _unsafe(archive, member.name, f"is {kind}; {_ONLY}")
            relative = safe_member_path(archive, member.name)
            total += member.size
            _check_total(archive, total, max_bytes)
            if member.isdir():
                (into / relative).mkdir(parents=True, exist_ok=True)
                continue
            source = tar.extractfile(member)
            if source is None:  # pragma: no cover - regular files always have data
                raise _unsafe(archive, member.name, "has no data")
            _write(source, into, relative)
            count += 1
        _drain(tar.fileobj)
    return count


def _tar_kind(member: tarfile.TarInfo) -> str | None:
    """What makes ``member`` unsafe (a link, a device...), or ``None`` for files and folders."""
    if member.issym():
        return f"a symbolic link (to {member.linkname!r})"
    if member.islnk():
        return f"a hard link (to {member.linkname!r})"
    if member.ischr() or member.isblk():
        return "a device file"
    if member.isfifo():
        return "a FIFO"
    if not (member.isfile() or member.isdir()):
        return f"of tar type {member.type!r}"
    return None


def _drain(stream: object) -> None:
    """Read a compressed tar's stream to its end so that its CRC and length are checked."""
    if isinstance(stream, gzip.GzipFile | bz2.BZ2File | lzma.LZMAFile):
        while stream.read(_CHUNK):
            pass


def _extract_zip(archive: Path, into: Path, max_bytes: int) -> int:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:  # check every member before writing any
                _check_zip_member(archive, info)
            _check_total(archive, sum(i.file_size for i in infos), max_bytes)
            count = 0
            for info in infos:
                relative = safe_member_path(archive, info.filename)
                if info.is_dir():
                    (into / relative).mkdir(parents=True, exist_ok=True)
                    continue
                with zf.open(info) as source:  # reading to the end checks the CRC
                    _write(source, into, relative)
                count += 1
    except UnicodeDecodeError as exc:  # a name flagged UTF-8 (central directory or local header) that is not
        raise DataError(
            f"cannot extract {str(archive)!r}: a member name is flagged as UTF-8 but does not decode ({exc}); "
            "nothing was extracted"
        ) from None
    except NotImplementedError as exc:  # how zipfile refuses what it lacks, e.g. a newer "version needed"
        raise DataError(
            f"cannot extract {str(archive)!r}: zipfile cannot read it ({exc}); nothing was extracted"
        ) from None
    return count


def _check_zip_member(archive: Path, info: zipfile.ZipInfo) -> None:
    """Refuse a member that is unsafe, or that ``zipfile`` could not read, before anything is written."""
    if not info.filename or "\0" in info.orig_filename:  # zipfile cuts a name at its first NUL byte
        raise _unsafe(archive, info.orig_filename, "has an empty name or a NUL byte in its name")
    kind = stat.S_IFMT(info.external_attr >> 16)  # Unix file type, where the archiver stored one
    if kind == stat.S_IFLNK:
        raise _unsafe(archive, info.filename, f"is a symbolic link; {_ONLY}")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise _unsafe(archive, info.filename, f"is a device file, FIFO or socket; {_ONLY}")
    safe_member_path(archive, info.filename)
    if info.compress_type not in _ZIP_METHODS:
        raise DataError(
            f"cannot extract {str(archive)!r}: member {info.filename!r} uses compression method "
            f"{info.compress_type}, which is not supported (expected one of {', '.join(_ZIP_METHODS.values())}); "
            "nothing was extracted"
        )
    for bit, what in _ZIP_UNREADABLE_FLAGS.items():
        if info.flag_bits & bit:
            raise DataError(
                f"cannot extract {str(archive)!r}: member {info.filename!r} is {what}, which is not supported; "
                "nothing was extracted"
            )


def _write(source: IO[bytes], into: Path, relative: PurePosixPath) -> None:
    path = into / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        shutil.copyfileobj(source, out, _CHUNK)
