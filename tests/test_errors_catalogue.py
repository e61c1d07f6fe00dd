"""The bad inputs of docs/errors.md that no other test file covers, and the catalogue itself.

The CLI turns every failure into one ``error:`` line: status 2 for a checked input,
status 1 (with a ``--debug`` hint) for anything else; ``--debug`` shows the traceback.
Deep SVDD's collapse and NaN/inf inputs stop training with a TrainingError.
"""

import errno
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from encircle import cli
from encircle.config import RunConfig, TrainConfig, with_overrides
from encircle.detector import Detector
from encircle.engine import fit
from encircle.errors import ConfigError, DataError, TrainingError
from encircle.methods import create_method
from encircle.models import create_model
from encircle.preprocess import Preprocess

ROOT = Path(__file__).resolve().parents[1]


def enospc() -> OSError:
    """A full disk, as the write would report it."""
    return OSError(errno.ENOSPC, "No space left on device")


def run_cli(capsys, *argv):
    code = cli.main([*map(str, argv), "--quiet"])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    """The CLI's whole standard error, checked to be one ``error:`` line."""
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err.rstrip("\n")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A folder with normal.npy (60 x 5 features) and det.pt, a detector fitted on it."""
    folder = tmp_path_factory.mktemp("files")
    x = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)
    np.save(folder / "normal.npy", x)
    config = with_overrides(
        RunConfig(),
        {"model.name": "mlp", "model.out_features": 4, "data.preprocess": "standardize", "train.epochs": 1},
    )
    Detector(config).fit(x, progress=False).save(folder / "det.pt")
    return folder


# -- the command line -----------------------------------------------------------------


def test_full_disk_on_fit_leaves_no_partial_file(capsys, files, tmp_path, monkeypatch):
    real_save = torch.save

    def save_then_fail(obj, handle):
        handle.write(b"half a detector")
        raise enospc()

    monkeypatch.setattr(torch, "save", save_then_fail)
    code, _, err = run_cli(capsys, "fit", files / "normal.npy", "--out", tmp_path / "d.pt", "--set", "train.epochs=1")
    monkeypatch.setattr(torch, "save", real_save)
    assert code == 2
    assert one_line(err) == f"error: [Errno 28] No space left on device: '{tmp_path / 'd.pt'}'"
    assert list(tmp_path.iterdir()) == [], "neither the detector nor its temporary file is left"


def test_full_disk_on_score_keeps_the_previous_csv(capsys, files, tmp_path, monkeypatch):
    (tmp_path / "s.csv").write_text("previous\n")

    def fail(fd):
        raise enospc()

    monkeypatch.setattr("encircle._io.os.fsync", fail)
    code, _, err = run_cli(capsys, "score", files / "det.pt", files / "normal.npy", "--out", tmp_path / "s.csv")
    assert code == 2
    assert one_line(err) == f"error: [Errno 28] No space left on device: '{tmp_path / 's.csv'}'"
    assert [p.name for p in tmp_path.iterdir()] == ["s.csv"] and (tmp_path / "s.csv").read_text() == "previous\n"


def test_output_that_is_a_folder_or_under_a_file(capsys, files, tmp_path):
    (tmp_path / "taken").write_text("")
    code, _, err = run_cli(capsys, "score", files / "det.pt", files / "normal.npy", "--out", tmp_path)
    assert code == 2 and one_line(err) == f"error: [Errno 21] Is a directory: '{tmp_path}'"
    code, _, err = run_cli(
        capsys, "score", files / "det.pt", files / "normal.npy", "--out", tmp_path / "taken" / "s.csv"
    )
    assert code == 2 and one_line(err) == f"error: [Errno 20] Not a directory: '{tmp_path / 'taken'}'"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (lambda good: b"this is not a detector", "it is truncated or corrupt (pop from empty list)"),
        (lambda good: pickle.dumps({}, protocol=2), "it is truncated or corrupt (Invalid magic number; corrupt file?)"),
        (lambda good: good[:-300], "it is truncated or corrupt ("),
    ],
)
def test_corrupt_detector_files(capsys, files, tmp_path, content, message):
    (tmp_path / "bad.pt").write_bytes(content((files / "det.pt").read_bytes()))
    code, _, err = run_cli(capsys, "score", tmp_path / "bad.pt", files / "normal.npy")
    assert code == 2
    assert one_line(err).startswith(f"error: '{tmp_path / 'bad.pt'}' is not a readable detector file: {message}")


def test_a_data_file_given_as_the_detector(capsys, files):
    code, _, err = run_cli(capsys, "score", files / "normal.npy", files / "normal.npy")
    assert code == 2 and "normal.npy' is not a readable detector file: safe loading" in one_line(err)


def test_a_checkpoint_given_as_the_detector(capsys, tmp_path):
    from encircle.checkpoint import save_file

    save_file(tmp_path / "checkpoint.pt", "checkpoint", "deep-svdd", {"epoch": 1})
    code, _, err = run_cli(capsys, "score", tmp_path / "checkpoint.pt", tmp_path / "x.npy")
    assert code == 2
    assert one_line(err) == (
        f"error: '{tmp_path / 'checkpoint.pt'}' is not an encircle-detector file (format: 'encircle-checkpoint')"
    )


def test_a_multi_line_library_message_stays_one_line(capsys, files, tmp_path):
    from encircle.checkpoint import load_file, save_file

    state = load_file(files / "det.pt", "detector")
    header = ("format", "format_version", "encircle_version", "method", "payload_sha256")
    payload = {k: v for k, v in state.items() if k not in header}
    save_file(
        tmp_path / "d.pt", "detector", "deep-svdd", {**payload, "model_kwargs": {"in_features": 5, "out_features": 8}}
    )
    code, _, err = run_cli(capsys, "score", tmp_path / "d.pt", files / "normal.npy")
    assert code == 2
    line = one_line(err)
    assert "does not fit this encircle's networks: Error(s) in loading state_dict for DeepSVDD: size mismatch" in line


def test_score_data_of_another_shape(capsys, files, tmp_path):
    np.save(tmp_path / "four.npy", np.zeros((3, 4), np.float32))
    code, _, err = run_cli(capsys, "score", files / "det.pt", tmp_path / "four.npy")
    assert code == 2
    assert one_line(err) == "error: data has samples of shape (4,), but this detector was trained on shape (5,)"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tpr", "1.5"], "error: calibration.tpr must be in (0, 1], got 1.5"),
        (["--set", "calibration.tpr=high"], "error: calibration.tpr must be a number, got 'high'"),
        (["--set", "train.amp=fp8"], "error: train.amp must be one of ("),
        (["--set", "method.nu=0"], "error: method.nu must be in (0, 1], got 0.0"),
        (["--set", "data.preprocess=zca"], "error: unknown data.preprocess 'zca'; expected one of unit, gcn-minmax,"),
        (["--model", "resnet"], "error: unknown model 'resnet'; expected one of"),
        (["--method", "svm"], "error: unknown method 'svm'; expected one of"),
        (["--config", "{tmp}/c.toml"], "error: unknown config key 'train.epoch'; train keys are"),
    ],
)
def test_bad_settings_for_fit(capsys, files, tmp_path, extra, message):
    (tmp_path / "c.toml").write_text("[train]\nepoch = 3\n")
    extra = [arg.format(tmp=tmp_path) for arg in extra]
    code, _, err = run_cli(capsys, "fit", files / "normal.npy", "--out", tmp_path / "d.pt", *extra)
    assert code == 2 and one_line(err).startswith(message)
    assert not (tmp_path / "d.pt").exists()


def test_an_unexpected_exception_is_one_line_with_a_hint(capsys, files, tmp_path, monkeypatch):
    def broken_fit(self, data, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x16)\nmore torch detail")

    monkeypatch.setattr(Detector, "fit", broken_fit)
    argv = ["fit", files / "normal.npy", "--out", tmp_path / "d.pt"]
    code, _, err = run_cli(capsys, *argv)
    assert code == 1
    assert one_line(err) == (
        "error: unexpected RuntimeError: mat1 and mat2 shapes cannot be multiplied (4x3 and 5x16) "
        "(run again with --debug for the traceback)"
    )
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        run_cli(capsys, *argv, "--debug")


def test_a_setting_encircle_does_not_check_is_still_one_line(capsys, files, tmp_path):
    code, _, err = run_cli(
        capsys, "fit", files / "normal.npy", "--out", tmp_path / "d.pt", "--set", "train.optimizer=sgd",
        "--set", "train.momentum=-1",
    )  # fmt: skip
    assert code in (1, 2) and "momentum" in one_line(err) and "-1" in err


def test_a_npy_header_declaring_an_absurd_size_is_one_line(capsys, tmp_path):
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 28, 28), np.uint8))
    header["shape"] = (10**12, 28, 28)
    with open(tmp_path / "huge.npy", "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        handle.write(b"\x00" * 100)
    code, _, err = run_cli(capsys, "fit", tmp_path / "huge.npy", "--out", tmp_path / "d.pt")
    line = one_line(err)
    assert code in (1, 2) and ("huge.npy" in line or "Unable to allocate" in line), line


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(capsys, tmp_path, monkeypatch, where):
    monkeypatch.chdir(tmp_path)  # `run` creates runs/PROTOCOL for its log
    argv = ["--debug", "run", "nope"] if where == "before" else ["run", "nope", "--debug"]
    with pytest.raises(ConfigError, match="unknown protocol 'nope'"):
        cli.main(argv)


def test_interrupt_is_one_line_and_status_130(capsys, files, monkeypatch):
    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(Detector, "load", interrupted)
    code, _, err = run_cli(capsys, "score", files / "det.pt", files / "normal.npy")
    assert code == 130 and err == "interrupted\n"


def test_python_m_encircle_prints_one_line_and_debug_the_traceback(tmp_path):
    argv = [sys.executable, "-m", "encircle", "score", str(tmp_path / "missing.pt"), str(tmp_path / "x.npy")]
    plain = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert plain.returncode == 2 and plain.stdout == ""
    assert plain.stderr == f"error: detector file '{tmp_path / 'missing.pt'}' does not exist\n"
    debug = subprocess.run([*argv, "--debug"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.rstrip().endswith(f"CheckpointError: detector file '{tmp_path / 'missing.pt'}' does not exist")


# -- the library ----------------------------------------------------------------------


def test_scoring_an_empty_set(files):
    detector = Detector.load(files / "det.pt")
    with pytest.raises(DataError, match=r"^cannot score an empty set of samples$"):
        detector.score(np.zeros((0, 5), np.float32))


def mlp_method(**kwargs):
    return create_method("deep-svdd", create_model("mlp", in_features=6, hidden=(8,), out_features=4), **kwargs)


def train(method, x, **settings):
    config = TrainConfig(**{"epochs": 3, "batch_size": 16, "device": "cpu", **settings})
    labels = torch.zeros(len(x), dtype=torch.int64)
    return fit(method, x, labels, config, preprocess=Preprocess("standardize").fit(x), seed=0, progress=False)


X = torch.randn(64, 6, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(("eps", "gap"), [(0.0, "0"), (0.1, "0.04")])
def test_deep_svdd_collapse_stops_training(eps, gap):
    method = mlp_method(eps=eps)
    with torch.no_grad():
        for weight in method.parameters():
            weight.zero_()  # every output is 0: with eps = 0 that is the center itself
    with pytest.raises(
        TrainingError,
        match=re.escape(
            "Deep SVDD collapsed in epoch 1: the network maps all 64 training samples to one point "
            f"(output spread 0, squared distance to the center {gap}), so its scores cannot tell them apart; "
            "check that the training samples differ, and try method.eps > 0, a lower train.lr or method.pretrain=true"
        ),
    ):
        train(method, X)


def test_identical_training_samples_are_reported_as_a_collapse():
    with pytest.raises(TrainingError, match=r"collapsed in epoch 1: .* check that the training samples differ"):
        train(mlp_method(), torch.ones(64, 6))


def test_a_working_network_is_not_taken_for_collapsed():
    method = mlp_method()
    result = train(method, X, epochs=5, lr=1e-2)
    assert len(result.history) == 5 and result.history[-1]["loss"] < result.history[0]["loss"]
    assert method._spread is None, "the spread is measured per epoch"


def test_nan_in_one_input_sample_stops_training():
    x = X.clone()
    x[37, 2] = float("nan")
    with pytest.raises(
        TrainingError,
        match=r"loss is nan in phase 'train', epoch 1, batch 1 \(learning rate 0.001\); .* or check the input data",
    ):
        train(mlp_method(), x)


def test_a_network_whose_outputs_are_nan_stops_training():
    method = mlp_method()
    with torch.no_grad():
        method.net.head.weight[0, 0] = float("nan")
    with pytest.raises(TrainingError, match=r"the deep-svdd loss is nan in phase 'train', epoch 1, batch 1"):
        train(method, X)


def test_a_diverging_run_stops_with_the_epoch_and_batch():
    with pytest.raises(
        TrainingError,
        match=r"loss diverged in phase 'train', epoch 1, batch 2: .* the learning rate 1e\+06 is too high",
    ):
        train(mlp_method(), X, epochs=30, lr=1e6, optimizer="sgd", momentum=0.0)


# -- the catalogue --------------------------------------------------------------------


def test_every_test_the_catalogue_names_exists():
    text = (ROOT / "docs" / "errors.md").read_text()
    references = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", text)
    assert len(references) >= 30
    for file, name in references:
        source = (ROOT / file).read_text()
        assert re.search(rf"^def {name}\(", source, re.MULTILINE), f"{file}::{name} is not a test there"
    rows = [line for line in text.splitlines() if line.startswith("| ") and "::" in line]
    assert len(rows) >= 30, "at least 30 bad inputs"
