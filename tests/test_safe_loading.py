"""Safe loading of hostile, damaged and mismatched files.

Code hidden in a pickle never runs (a marker file proves it), damaged files are refused
with the reason, and a file for another method, network or format version says which.
Header checks on checkpoints (other method, other kind, newer version, missing, junk) are
in tests/test_engine.py::test_checkpoint_header_checks; resuming with another network in
tests/test_engine.py::test_resume_from_another_architecture_is_refused; hostile IDX, CSV,
.npy and download cases in tests/data/.
"""

import os
import pickle
import struct
import zlib

import numpy as np
import pytest
import torch

from encircle.checkpoint import FORMAT_VERSION, load_file, save_file
from encircle.cli import main
from encircle.config import RunConfig, with_overrides
from encircle.data import load_image_folder
from encircle.detector import Detector
from encircle.errors import CheckpointError, DataError

SYSTEM = f"{os.system.__module__}.system"  # posix.system on Linux and macOS


class RunsCode:
    """Unpickling this runs ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class EvalsCode(RunsCode):
    """Unpickling this runs ``eval`` on Python source that calls ``os.system``."""

    def __reduce__(self):
        return (eval, (f"__import__('os').system({self.command!r})",))


def hostile_detector(path, marker, how):
    """A file with a detector header whose state holds an object that runs ``touch marker``."""
    command = f"touch {marker}"
    header = {"format": "encircle-detector", "format_version": FORMAT_VERSION, "method": "deep-svdd"}
    payload = {
        **header,
        "state": {"evil": EvalsCode(command) if how == "eval" else RunsCode(command)},
    }
    if how == "legacy torch.save":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    elif how.startswith("pickle"):
        with open(path, "wb") as handle:
            pickle.dump(payload, handle, protocol=int(how[-1]))
    else:
        torch.save(payload, path)


@pytest.fixture(scope="module")
def detector_file(tmp_path_factory):
    config = with_overrides(
        RunConfig(),
        {"model.name": "mlp", "model.out_features": 4, "data.preprocess": "standardize", "train.epochs": 1},
    )
    path = tmp_path_factory.mktemp("detector") / "det.pt"
    Detector(config).fit(np.random.default_rng(0).normal(size=(64, 5)).astype(np.float32), progress=False).save(path)
    return path


def test_the_marker_would_show_code_that_ran(tmp_path):
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(RunsCode(f"touch {marker}")))  # an unsafe load, on purpose
    assert marker.exists()


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("torch.save", rf"refused to load '.*evil.pt': it holds an object \({SYSTEM}\) that safe loading"),
        ("legacy torch.save", rf"refused to load .* \({SYSTEM}\) .* since loading it could run code"),
        ("eval", r"refused to load .* it holds an object \(eval\) that safe loading \(weights_only=True\)"),
        ("pickle protocol 2", rf"refused to load .* \({SYSTEM}\)"),
        ("pickle protocol 5", r"is not a readable detector file: safe loading .* cannot read its pickle data"),
    ],
)
def test_a_pickle_that_runs_code_is_refused_and_never_runs(tmp_path, how, message):
    marker = tmp_path / "pwned"
    hostile_detector(tmp_path / "evil.pt", marker, how)
    with pytest.raises(CheckpointError, match=message):
        Detector.load(tmp_path / "evil.pt")
    assert not marker.exists(), "the payload ran"


def test_cli_refuses_a_hostile_detector_in_one_line(tmp_path, capsys):
    marker = tmp_path / "pwned"
    hostile_detector(tmp_path / "evil.pt", marker, "torch.save")
    np.save(tmp_path / "x.npy", np.zeros((2, 5), np.float32))
    code = main(["score", str(tmp_path / "evil.pt"), str(tmp_path / "x.npy"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: refused to load '{tmp_path / 'evil.pt'}': it holds an object ({SYSTEM})")
    assert not marker.exists()


def rewrite(source, target, **changes):
    """Save ``source``'s detector again with some payload entries changed (fresh digest)."""
    state = load_file(source, "detector")
    payload = {k: v for k, v in state.items() if k not in ("format", "format_version", "encircle_version", "method")}
    payload.pop("payload_sha256")
    save_file(target, "detector", changes.pop("method", state["method"]), {**payload, **changes})


def test_a_detector_for_another_network_is_refused(detector_file, tmp_path):
    rewrite(detector_file, tmp_path / "d.pt", model_kwargs={"in_features": 5, "out_features": 8})
    with pytest.raises(
        CheckpointError, match=r"(?s)does not fit this encircle's networks: .*size mismatch for net.head.weight"
    ):
        Detector.load(tmp_path / "d.pt")


def test_a_newer_format_version_is_refused(detector_file, tmp_path):
    state = load_file(detector_file, "detector")
    torch.save({**state, "format_version": FORMAT_VERSION + 1}, tmp_path / "new.pt")
    with pytest.raises(
        CheckpointError,
        match=rf"has format version {FORMAT_VERSION + 1}; this encircle \(.*\) reads versions up to "
        rf"{FORMAT_VERSION}: upgrade encircle",
    ):
        Detector.load(tmp_path / "new.pt")


def test_resuming_from_another_methods_checkpoint_is_refused(tmp_path):
    # e.g. the autoencoder's pretrain.pt copied over checkpoint.pt
    save_file(tmp_path / "checkpoint.pt", "checkpoint", "autoencoder", {"epoch": 1})
    config = with_overrides(RunConfig(), {"model.name": "mlp", "data.preprocess": "standardize", "train.epochs": 2})
    with pytest.raises(
        CheckpointError, match=r"checkpoint.pt' was written by method 'autoencoder', expected 'deep-svdd'"
    ):
        Detector(config).fit(np.zeros((20, 3), np.float32), out_dir=tmp_path, resume=True, progress=False)


def test_a_flipped_bit_in_the_weights_is_detected(detector_file, tmp_path):
    weight = load_file(detector_file, "detector")["state"]["net.head.weight"]
    data = bytearray(detector_file.read_bytes())
    at = data.find(weight.numpy().tobytes())
    assert at > 0
    data[at] ^= 0x01
    (tmp_path / "rot.pt").write_bytes(bytes(data))
    assert not torch.equal(torch.load(tmp_path / "rot.pt", weights_only=True)["state"]["net.head.weight"], weight)
    with pytest.raises(CheckpointError, match=r"'.*rot.pt' is corrupt: its content does not match the sha256 recorded"):
        Detector.load(tmp_path / "rot.pt")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[: len(b) // 2], r"is not a readable detector file: it is truncated or corrupt \("),
        (lambda b: b"", r"truncated or corrupt \(no data where data was expected\)"),
        (lambda b: b"PK\x03\x04" + b"\x00" * 60, r"truncated or corrupt \(PytorchStreamReader failed reading zip"),
    ],
)
def test_damaged_detector_files_are_refused(detector_file, tmp_path, damage, message):
    (tmp_path / "bad.pt").write_bytes(damage(detector_file.read_bytes()))
    with pytest.raises(CheckpointError, match=message):
        Detector.load(tmp_path / "bad.pt")


def test_a_folder_is_not_a_detector(tmp_path):
    with pytest.raises(CheckpointError, match=r"detector file '.*' is a folder, expected a file"):
        Detector.load(tmp_path)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width x height`` grayscale pixels but carries almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_a_decompression_bomb_image_is_refused_before_decoding(tmp_path):
    pytest.importorskip("PIL.Image", reason="Pillow is not installed")
    (tmp_path / "bomb.png").write_bytes(png_header_only(30_000, 30_000))  # 900 M pixels declared
    with pytest.raises(DataError, match=r"cannot read image '.*bomb.png': Image size \(900000000 pixels\) exceeds"):
        load_image_folder(tmp_path)


def test_random_damage_loads_the_same_content_or_is_refused(detector_file, tmp_path):
    good = detector_file.read_bytes()
    original = load_file(detector_file, "detector")
    rng = np.random.default_rng(0)
    refused = 0
    for trial in range(60):
        data = bytearray(good[: rng.integers(0, len(good))] if trial % 2 else good)
        if trial % 2 == 0:
            for at in rng.integers(0, len(data), size=rng.integers(1, 6)):
                data[at] = int(rng.integers(0, 256))
        (tmp_path / "d.pt").write_bytes(bytes(data))
        try:
            state = load_file(tmp_path / "d.pt", "detector")
        except CheckpointError:
            refused += 1
            continue
        for name, tensor in original["state"].items():  # what loads is exactly what was saved
            assert torch.equal(state["state"][name], tensor), (trial, name)
    assert refused >= 30, "every truncation is refused"
