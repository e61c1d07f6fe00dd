"""Protocol mchad-cifar10 (alias seed001) on tiny local copies of its datasets and weights."""

import numpy as np
import pytest
import torch

from encircle.detector import Detector
from encircle.errors import DataError
from encircle.experiments import run_protocol
from encircle.models import create_model
from tests.data._published import cifar_batches, write_cifar_tarball
from tests.data.test_textures import write_dtd_tarball
from tests.data.test_tinyimages import write_npy

pytest.importorskip("PIL.Image")


def test_offline_run_stops_with_the_data_message(isolated_cache, tmp_path):
    with pytest.raises(DataError, match=r"dataset 'cifar10' \(train\) not found.*--set data.root=DIR"):
        run_protocol("mchad-cifar10", out_dir=tmp_path, quick=True, progress=False)


def test_runs_on_local_files_with_pretrained_weights(isolated_cache, tmp_path, monkeypatch):
    root = tmp_path / "data"
    write_cifar_tarball(root / "cifar-10-python.tar.gz", cifar_batches(per_batch=30))
    write_dtd_tarball(root / "dtd-r1.0.1.tar.gz")
    write_npy(root / "300K_random_images.npy", n=200)
    torch.manual_seed(1)
    upstream = create_model("wrn", depth=10, widen_factor=1, out_features=1000)
    weights = tmp_path / "wrn.pt"
    torch.save(upstream.state_dict(), weights)
    overrides = {
        "data.root": str(root),
        "model.pretrained": str(weights),
        "model.depth": 10,
        "model.widen_factor": 1,
        "train.batch_size": 32,
    }
    results = run_protocol("mchad-cifar10", out_dir=tmp_path / "run", quick=True, overrides=overrides, progress=False)
    assert {"accuracy", "auroc", "aupr_in", "aupr_out"} <= set(results["metrics"])
    data = results["data"]
    assert (data["train"]["size"], data["test_in"]["size"], data["test_out"]["size"]) == (150, 30, 5)
    assert data["outliers"]["size"] == 200  # the pool; each epoch draws 150 of them
    detector = Detector.load(tmp_path / "run" / "detector.pt")
    assert detector.method_.net.fc.out_features == 7  # a fresh 7-d head on the pretrained body
    assert detector.preprocess_.kind == "normalize"
    assert not torch.equal(detector.method_.net.stem.weight, upstream.stem.weight)  # fine-tuned from it
    assert np.isfinite(results["metrics"]["auroc"])
