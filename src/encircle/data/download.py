"""Downloads with a checksum: nothing unverified ever lands under the final name.

The file streams into ``DEST.part``. An existing ``.part`` is resumed with an HTTP
``Range`` request; a server that ignores the range (status 200 instead of 206) or answers
with another range gets a fresh download. Only when the whole file's sha256 matches is it
renamed to ``DEST`` (atomically, after an fsync); a mismatch removes it and raises
:class:`~encircle.errors.DownloadError`. A download is never larger than ``max_bytes``
(:data:`MAX_DOWNLOAD_BYTES` by default): a server that sends no ``Content-Length`` is
cut off at the limit and the partial file removed, so a broken or hostile server cannot
fill the disk. Only ``urllib`` is used, so proxies set in the usual environment
variables apply.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import re
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import IO, Any

from encircle.errors import DataError, DownloadError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
#: Largest file :func:`download` accepts (bytes), declared or not. The largest file
#: encircle fetches (the 300K random images, about 0.9 GB) is well below it.
MAX_DOWNLOAD_BYTES = 4 * 2**30
#: Seconds to wait before retry ``k`` (doubled each time, at most 8 s).
RETRY_WAIT = 0.5
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MD5 = re.compile(r"[0-9a-f]{32}")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
#: HTTP status codes worth retrying; any other 4xx is final.
_TRANSIENT_HTTP = frozenset({408, 425, 429})


class _Incomplete(ConnectionError):
    """The connection ended before ``Content-Length`` bytes arrived (resumable)."""


def file_sha256(path: str | Path, *, gunzipped: bool = False) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks.

    Args:
        path: the file.
        gunzipped: digest the gzip-decompressed content instead of the file's bytes.

    Raises:
        DataError: the file does not exist, or ``gunzipped`` and it is not valid gzip.
    """
    return file_digests(path, ("sha256",), gunzipped=gunzipped)["sha256"]


def file_digests(path: str | Path, algorithms: tuple[str, ...], *, gunzipped: bool = False) -> dict[str, str]:
    """Hex digests of a file under several ``hashlib`` algorithms, in one pass.

    Raises:
        DataError: as :func:`file_sha256`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"cannot hash {str(path)!r}: the file does not exist")
    digests = {name: hashlib.new(name) for name in algorithms}
    try:
        with gzip.open(path, "rb") if gunzipped else open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK), b""):
                for digest in digests.values():
                    digest.update(chunk)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"cannot hash the content of {str(path)!r}: not a complete gzip file ({exc})") from None
    return {name: digest.hexdigest() for name, digest in digests.items()}


def download(
    url: str,
    dest: str | Path,
    sha256: str | None,
    *,
    timeout: float = 60.0,
    retries: int = 2,
    gunzipped: bool = False,
    progress: bool | None = None,
    md5: str | None = None,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
) -> Path:
    """Fetch ``url`` to ``dest`` and verify its sha256; returns ``dest``.

    An existing ``dest`` with the right checksum is kept as is (nothing is fetched).
    Network errors are retried ``retries`` times, each resuming the partial file; a
    resumed file whose checksum fails is fetched once more from the start before giving
    up. HTTP client errors (404, 403, ...) are not retried.

    Args:
        url: ``http(s)://`` (or any scheme ``urllib`` opens).
        dest: the final path; the download goes to ``dest`` + ``.part`` first.
        sha256: expected hex digest (64 hex digits); ``None`` only for a file whose
            publisher lists no sha256, and then ``md5`` is required.
        timeout: seconds to wait for the connection and for each read.
        retries: further attempts after a network error.
        gunzipped: ``sha256`` is the digest of the gzip-decompressed content (for
            archives whose mirrors compress them differently).
        progress: show a tqdm bar; ``None`` shows one when stderr is a terminal.
            Progress is also logged at INFO level.
        md5: expected md5 hex digest (32 hex digits), checked as well when given (for
            files whose publisher lists only an md5).
        max_bytes: largest file accepted. A ``Content-Length`` above it is refused
            before anything is written; a body without one is cut off once it passes
            the limit. Either way the partial file is removed and nothing is retried.

    Raises:
        DownloadError: a malformed or missing checksum; the server could not be reached or
            answered with an error after every retry; the file is larger than
            ``max_bytes``; or the checksum does not match (the file is then removed).
            The message names the URL.
    """
    expected = _expected(url, sha256, md5)
    if retries < 0 or timeout <= 0:
        raise DownloadError(f"retries must be >= 0 and timeout > 0, got retries={retries}, timeout={timeout}")
    if max_bytes <= 0:
        raise DownloadError(f"max_bytes must be > 0, got {max_bytes}")
    dest = Path(dest)
    if dest.is_file():
        if _digests(dest, gunzipped, expected) == expected:
            log.debug("%s is already there with the right checksum", dest)
            return dest
        log.warning("%s exists but its checksum differs; downloading it again from %s", dest, url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    fresh_restart_done = False
    attempt = 0
    while True:
        try:
            resumed = _fetch(url, part, timeout, progress, max_bytes)
        except urllib.error.HTTPError as exc:
            if exc.code < 500 and exc.code not in _TRANSIENT_HTTP:
                raise DownloadError(f"could not download {url}: HTTP {exc.code} {exc.reason}") from None
            error: Exception = exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            error = exc
        else:
            got = _digests(part, gunzipped, expected)
            if got == expected:
                os.replace(part, dest)
                log.info("downloaded %s -> %s (%s verified)", url, dest, " and ".join(expected))
                return dest
            part.unlink(missing_ok=True)
            if resumed and not fresh_restart_done:
                fresh_restart_done = True
                log.warning("checksum of the resumed download of %s does not match; fetching it from the start", url)
                continue
            of = " of the decompressed content" if gunzipped else ""
            what = " and ".join(f"{name}{of} {digest}" for name, digest in expected.items())
            raise DownloadError(
                f"checksum mismatch for {url}: expected {what}, got {' and '.join(got.values())}; the file was removed"
            )
        attempt += 1
        if attempt > retries:
            raise DownloadError(f"could not download {url} after {attempt} attempt(s): {error}")
        wait = min(RETRY_WAIT * 2 ** (attempt - 1), 8.0)
        log.warning(
            "download of %s failed (attempt %d of %d): %s; retrying in %.1f s", url, attempt, retries + 1, error, wait
        )
        time.sleep(wait)


def _expected(url: str, sha256: str | None, md5: str | None) -> dict[str, str]:
    """The digests to check, by algorithm, validated."""
    expected = {}
    for name, value, pattern, digits in (("sha256", sha256, _SHA256, 64), ("md5", md5, _MD5, 32)):
        if value is not None:
            if not pattern.fullmatch(value.lower()):
                raise DownloadError(f"{name} for {url} must be {digits} hex digits, got {value!r}")
            expected[name] = value.lower()
    if not expected:
        raise DownloadError(f"a checksum for {url} is required: give sha256 (or md5 where none is published)")
    return expected


def _digests(path: Path, gunzipped: bool, expected: dict[str, str]) -> dict[str, str]:
    try:
        return file_digests(path, tuple(expected), gunzipped=gunzipped)
    except DataError as exc:  # not gzip at all: certainly not the expected content
        return dict.fromkeys(expected, f"(unreadable: {exc})")


def _fetch(url: str, part: Path, timeout: float, progress: bool | None, max_bytes: int) -> bool:
    """Fetch the rest of ``url`` into ``part``; returns whether an existing part was resumed.

    Raises:
        DownloadError: the file is larger than ``max_bytes`` (``part`` is removed).
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "encircle (python urllib)"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the part is as long as the file or longer: start again
            log.info("server refused to resume %s at byte %d; downloading from the start", url, offset)
            part.unlink()
            return _fetch(url, part, timeout, progress, max_bytes)
        raise
    with response:
        status = getattr(response, "status", None) or 200
        resumed = False
        if offset and status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
            if match is None or int(match.group(1)) != offset:
                log.info("server answered %s with another range than asked for; downloading from the start", url)
                response.close()
                part.unlink()
                return _fetch(url, part, timeout, progress, max_bytes)
            resumed = True
            log.info("resuming %s at byte %d", url, offset)
        elif offset:
            log.info("server ignored the range request for %s; downloading from the start", url)
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        start = offset if resumed else 0
        if expected is not None and start + expected > max_bytes:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"{url} is {start + expected:,} bytes (Content-Length), more than the limit of {max_bytes:,} bytes "
                "(max_bytes); nothing was kept"
            )
        try:
            with open(part, "ab" if resumed else "wb") as handle:
                received = _stream(response, handle, url, start, expected, progress, max_bytes)
                handle.flush()
                os.fsync(handle.fileno())
        except DownloadError:
            part.unlink(missing_ok=True)
            raise
        if expected is not None and received < expected:
            raise _Incomplete(f"connection closed after {received:,} of {expected:,} bytes")
    return resumed


def _stream(
    response: Any,
    handle: IO[bytes],
    url: str,
    start: int,
    expected: int | None,
    progress: bool | None,
    max_bytes: int,
) -> int:
    """Copy the body to ``handle``; log every quarter, and show a bar on a terminal.

    Raises:
        DownloadError: the file would pass ``max_bytes`` (checked before each write, so
            at most ``max_bytes`` reach the disk).
    """
    total = start + expected if expected is not None else None
    log.info("downloading %s (%s)", url, f"{total:,} bytes" if total else "size unknown")
    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], leave=False)
    received = 0
    next_log = 0.25
    try:
        for chunk in iter(lambda: response.read(CHUNK), b""):
            if start + received + len(chunk) > max_bytes:
                raise DownloadError(
                    f"{url} sent more than the limit of {max_bytes:,} bytes (max_bytes); "
                    "the partial download was removed"
                )
            handle.write(chunk)
            received += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
            if total and total >= 4 * CHUNK and (start + received) / total >= next_log:
                log.info("%s: %d%% of %s bytes", url, int(100 * (start + received) / total), f"{total:,}")
                next_log += 0.25
    finally:
        if bar is not None:
            bar.close()
    return received
