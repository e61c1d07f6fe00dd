"""Downloads with a checksum: nothing unverified ever lands under the final name.

The file streams into ``DEST.part``. An existing ``.part`` is resumed with an HTTP
``Range`` request; a server that ignores the range (status 200 instead of 206) gets a
fresh download. Only when the whole file's sha256 matches is it renamed to ``DEST``;
a mismatch removes it and raises :class:`~encircle.errors.DownloadError`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from encircle.errors import DownloadError

log = logging.getLogger(__name__)

CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: str | Path, sha256: str, *, timeout: float = 30.0, retries: int = 2) -> Path:
    """Fetch ``url`` to ``dest`` and verify its sha256; returns ``dest``.

    An existing ``dest`` with the right checksum is kept as is. Network errors are retried
    ``retries`` times, resuming the partial file each time.

    Raises:
        DownloadError: the server could not be reached or answered with an error after
            every retry, or the checksum does not match (the file is then removed).
    """
    dest = Path(dest)
    if dest.is_file() and file_sha256(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, timeout)
            break
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            last_error = exc
            log.info("download of %s failed (attempt %d/%d): %s", url, attempt + 1, retries + 1, exc)
    else:
        raise DownloadError(f"could not download {url}: {last_error}")
    got = file_sha256(part)
    if got != sha256:
        part.unlink(missing_ok=True)
        raise DownloadError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {got}; the file was removed")
    os.replace(part, dest)
    log.info("downloaded %s -> %s", url, dest)
    return dest


def _fetch(url: str, part: Path, timeout: float) -> None:
    """Append the rest of ``url`` to ``part`` (or restart it when the server can't resume)."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # range not satisfiable: the part is complete or bad
            return
        raise
    with response:
        resumed = offset > 0 and response.status == 206
        if offset and not resumed:
            log.info("server ignored the range request for %s; downloading from the start", url)
        with open(part, "ab" if resumed else "wb") as handle:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
