"""Hostile inputs that must fail fast and small: ``.npy``/``.npz`` headers that lie about
their size, and servers that send more than a download may hold.

Memory is measured with ``tracemalloc``, which NumPy reports its array buffers to: a
reader that trusted the header would allocate what it declares before reading a byte.
"""

import hashlib
import http.server
import importlib
import inspect
import io
import struct
import threading
import time
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from encircle.data import load_arrays
from encircle.data.download import MAX_DOWNLOAD_BYTES, download
from encircle.data.tabular import MAX_ARRAY_BYTES
from encircle.errors import DataError, DownloadError

SMALL = 8 << 20  # a few read chunks, far below what any of these files declares


def npy_bytes(shape: tuple[int, ...], dtype: str, payload: bytes = b"", version: tuple[int, int] = (1, 0)) -> bytes:
    """A ``.npy`` header declaring ``shape`` and ``dtype``, followed by ``payload``."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    buffer = io.BytesIO()
    writer = np.lib.format.write_array_header_1_0 if version == (1, 0) else np.lib.format.write_array_header_2_0
    writer(buffer, header)
    return buffer.getvalue() + payload


def refuse(path: Path, message: str) -> None:
    """``load_arrays(path)`` raises DataError matching ``message``, quickly and small."""
    started = time.perf_counter()
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=message):
            load_arrays(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < SMALL, f"{peak:,} bytes allocated to refuse {path.name}"
    assert time.perf_counter() - started < 2, "the refusal should not read or allocate much"


def test_npy_header_claiming_terabytes_is_refused_before_allocating(tmp_path):
    (tmp_path / "huge.npy").write_bytes(npy_bytes((10**12, 784), "<f4", b"\0" * 64))
    refuse(
        tmp_path / "huge.npy",
        r"'.*huge.npy': .npy header declares shape \(1000000000000, 784\) float32 "
        r"\(3,136,000,000,000,000 bytes\), more than the limit of 17,179,869,184 bytes; the file is corrupt",
    )


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_npy_header_claiming_more_than_the_file_holds_is_refused(tmp_path, version):
    (tmp_path / "liar.npy").write_bytes(npy_bytes((300_000_000,), "|u1", b"\0" * 100, version))
    refuse(
        tmp_path / "liar.npy",
        r"'.*liar.npy': .npy header declares shape \(300000000,\) uint8 \(300,000,000 bytes of data\) "
        r"but only 100 bytes follow the header; the file is truncated or corrupt",
    )


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_npz_member_claiming_more_than_it_holds_is_refused(tmp_path, compression):
    with zipfile.ZipFile(tmp_path / "liar.npz", "w", compression) as archive:
        archive.writestr("x.npy", npy_bytes((1000, 1000, 784), "<f4", b"\0" * 100))
    refuse(
        tmp_path / "liar.npz",
        r"'.*liar.npz' member 'x.npy': .npy header declares shape \(1000, 1000, 784\) float32 "
        r"\(3,136,000,000 bytes of data\) but only 100 bytes follow the header",
    )


def test_npz_labels_claiming_terabytes_are_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "labels.npz", "w") as archive:
        archive.writestr("x.npy", npy_bytes((2, 3), "<f4", b"\0" * 24))
        archive.writestr("y.npy", npy_bytes((10**13,), "<i8"))
    refuse(tmp_path / "labels.npz", r"member 'y.npy': .npy header declares shape \(10000000000000,\) int64 .* limit")


def test_npz_whose_zip_directory_also_lies_reads_only_what_is_there(tmp_path):
    """The member's sizes in the zip directory claim 3 GB too: the reader reads what is
    there in bounded chunks and fails at its end, never allocating the declared size."""
    real = npy_bytes((1000, 1000, 784), "<f4", b"\0" * 100)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.npy", real)
    raw = bytearray(buffer.getvalue())
    directory = raw.rindex(b"PK\x01\x02")  # the central directory entry: sizes at offsets 20 and 24
    lie = len(real) + 3_136_000_000
    raw[directory + 20 : directory + 28] = struct.pack("<II", lie, lie)
    (tmp_path / "lying-zip.npz").write_bytes(bytes(raw))
    refuse(
        tmp_path / "lying-zip.npz",
        r"'.*lying-zip.npz' member 'x.npy': the data is truncated: it ends before the 3,136,000,000 bytes its header",
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (npy_bytes((-5, 2), "<f4"), r"negative size in shape \(-5, 2\)"),
        (npy_bytes((3,), "V8", b"\0" * 24), r"expected numeric data .* got dtype \|V8"),
        (npy_bytes((3,), "S0"), r"expected numeric data .* got dtype \|S0"),
        (b"\x93NUMPY\x03\x00" + b"\0" * 40, r"format version 3.0 is not supported; expected 1.0 or 2.0"),
        (
            b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f4'}" + b"\0" * 8,
            r"'.*bad.npy' is not a readable .npy file: bad header \(Header does not contain the correct keys",
        ),
        (npy_bytes((4, 4), "<f4", b"\0" * 63), r"\(64 bytes of data\) but only 63 bytes follow the header"),
    ],
    ids=["negative-shape", "void-dtype", "zero-size-dtype", "version-3", "header-without-keys", "one-byte-short"],
)
def test_malformed_npy_headers_are_data_errors(tmp_path, content, message):
    (tmp_path / "bad.npy").write_bytes(content)
    refuse(tmp_path / "bad.npy", message)


def test_well_formed_arrays_still_load(tmp_path):
    """The checked reader gives what ``np.load`` gives: both versions, C and Fortran
    order, big-endian values, and ``.npz`` compressed or not."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3, 4)).astype(">f8")
    for name, array in (("c.npy", x), ("f.npy", np.asfortranarray(x))):
        np.save(tmp_path / name, array)
        assert np.array_equal(load_arrays(tmp_path / name).images.numpy(), x.reshape(5, -1).astype(np.float32))
    (tmp_path / "v2.npy").write_bytes(npy_bytes((2, 3, 2), "|u1", bytes(range(12)), (2, 0)))
    assert load_arrays(tmp_path / "v2.npy").images.flatten().tolist() == list(range(12))
    images, labels = rng.integers(0, 256, (4, 6, 6), dtype=np.uint8), np.array([3, 1, 4, 1])
    np.savez_compressed(tmp_path / "z.npz", images=images, labels=labels)
    ds = load_arrays(tmp_path / "z.npz")
    assert np.array_equal(ds.images.numpy()[:, 0], images) and ds.labels.tolist() == [3, 1, 4, 1]
    assert MAX_ARRAY_BYTES == 16 * 2**30


def hostile_zip(kind: str) -> bytes:
    """A one-member zip (``x.npy``, a valid array) with one field of its central directory
    entry changed so that ``zipfile`` fails in its own way: ``compression`` (method 99:
    NotImplementedError), ``encrypted`` (flag bit 0: RuntimeError), ``empty-name`` (a NUL
    name, which zipfile cuts to ``''``: IndexError in ``is_dir``) or ``bad-utf8-name``
    (a UTF-8 flagged name that does not decode: UnicodeDecodeError)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("\u00e9.npy" if kind == "bad-utf8-name" else "x.npy", npy_bytes((2, 3), "<f4", b"\0" * 24))
    raw = bytearray(buffer.getvalue())
    entry = raw.rindex(b"PK\x01\x02")  # flags at +8, method at +10, the name from +46
    if kind == "compression":
        raw[entry + 10 : entry + 12] = struct.pack("<H", 99)
    elif kind == "encrypted":
        raw[entry + 8 : entry + 10] = struct.pack("<H", 1)
    elif kind == "empty-name":
        raw[entry + 46] = 0
    else:
        raw[entry + 46 : entry + 48] = b"\xff\xfe"
    return bytes(raw)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("compression", r"'.*h.npz' is not a readable .npy/.npz file: That compression method is not supported"),
        ("encrypted", r"'.*h.npz' is not a readable .npy/.npz file: File .* is encrypted, password required"),
        ("empty-name", r"'.*h.npz': expected an array named 'x' or 'images', found \[''\]"),
        ("bad-utf8-name", r"'.*h.npz' is not a readable .npy/.npz file: 'utf-8' codec can't decode byte 0xff"),
    ],
)
def test_npz_that_zipfile_cannot_read_is_a_data_error(tmp_path, kind, message):
    (tmp_path / "h.npz").write_bytes(hostile_zip(kind))
    refuse(tmp_path / "h.npz", message)


# -- downloads larger than allowed -----------------------------------------------------------
class StreamingHandler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.0 answers that declare no size: ``size`` bytes of zeros, then the connection
    closes (the only end of the body the client sees). ``requests`` counts the GETs."""

    size = 0
    requests: list[str] = []

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self.requests.append(self.path)
        self.send_response(200)
        self.end_headers()
        try:
            for sent in range(0, self.size, 1 << 16):
                self.wfile.write(b"\0" * min(1 << 16, self.size - sent))
        except (BrokenPipeError, ConnectionResetError):  # the client gave up at its limit
            pass


@pytest.fixture
def streaming_server() -> Iterator[tuple[str, type[StreamingHandler]]]:
    """(URL, handler class) of a server on 127.0.0.1 that never sends Content-Length."""
    handler: type[StreamingHandler] = type("Handler", (StreamingHandler,), {"requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/f.bin", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def _no_retry_wait(monkeypatch):
    monkeypatch.setattr(importlib.import_module("encircle.data.download"), "RETRY_WAIT", 0.0)


def test_download_without_content_length_is_cut_off_at_max_bytes(streaming_server, tmp_path):
    url, handler = streaming_server
    handler.size = 8 << 20
    with pytest.raises(
        DownloadError, match=rf"{url} sent more than the limit of 1,048,576 bytes \(max_bytes\); the partial download"
    ):
        download(url, tmp_path / "f.bin", "0" * 64, max_bytes=1 << 20, retries=2)
    assert list(tmp_path.iterdir()) == [], "the partial file is removed and nothing else written"
    assert handler.requests == ["/f.bin"], "a file over the limit is not fetched again"


def test_download_without_content_length_within_the_limit_succeeds(streaming_server, tmp_path):
    url, handler = streaming_server
    handler.size = 300_000
    digest = hashlib.sha256(b"\0" * 300_000).hexdigest()
    dest = download(url, tmp_path / "f.bin", digest, max_bytes=300_000)
    assert dest.stat().st_size == 300_000


def test_download_declaring_more_than_max_bytes_is_refused_before_writing(http_server, tmp_path):
    base, root, handler = http_server
    (root / "big.bin").write_bytes(b"\1" * 5000)
    out = tmp_path / "out"
    out.mkdir()
    (out / "big.bin.part").write_bytes(b"\1" * 1000)  # a resumed part is removed too
    with pytest.raises(
        DownloadError,
        match=rf"{base}big.bin is 5,000 bytes \(Content-Length\), more than the limit of 4,096 bytes \(max_bytes\)",
    ):
        download(base + "big.bin", out / "big.bin", "0" * 64, max_bytes=4096)
    assert list(out.iterdir()) == [] and handler.requests == ["bytes=1000-"]


def test_download_limit_default_and_bad_value(tmp_path):
    assert MAX_DOWNLOAD_BYTES == 4 * 2**30 == inspect.signature(download).parameters["max_bytes"].default
    with pytest.raises(DownloadError, match="max_bytes must be > 0, got 0"):
        download("http://x/f", tmp_path / "f", "0" * 64, max_bytes=0)
