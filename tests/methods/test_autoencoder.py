import pytest
import torch

from encircle.config import RunConfig, TrainConfig, with_overrides
from encircle.detector import Detector
from encircle.engine import fit
from encircle.errors import ConfigError
from encircle.methods import Autoencoder, create_method
from encircle.methods.autoencoder import reconstruction_error
from encircle.models import create_model
from encircle.preprocess import Preprocess


def test_reconstruction_error_by_hand():
    x = torch.zeros(2, 1, 2, 2)
    x_hat = torch.tensor([[[[1.0, 0.0], [0.0, 2.0]]], [[[0.5, 0.5], [0.5, 0.5]]]])
    assert torch.allclose(reconstruction_error(x, x_hat), torch.tensor([5.0, 1.0]))


def test_decoder_output_shape_and_shared_encoder():
    torch.manual_seed(0)
    net = create_model("lenet-mnist")
    ae = create_method("autoencoder", net)
    assert isinstance(ae, Autoencoder) and ae.net is net
    x = torch.rand(4, 1, 28, 28)
    assert ae.reconstruct(x).shape == x.shape
    before = {k: v.clone() for k, v in net.state_dict().items()}
    images = (torch.rand(64, 1, 28, 28) * 255).to(torch.uint8)
    result = fit(
        ae,
        images,
        torch.zeros(64, dtype=torch.int64),
        TrainConfig(epochs=2, batch_size=16, lr=1e-3),
        preprocess=Preprocess(),
        seed=0,
        progress=False,
    )
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    changed = [k for k, v in net.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert "conv1.weight" in changed and "fc1.weight" in changed, "training the AE trains the encoder itself"


def test_network_without_decoder_is_refused():
    with pytest.raises(ConfigError, match="has no decoder for autoencoder pretraining"):
        create_method("autoencoder", create_model("seed000"))
    with pytest.raises(ConfigError, match="divisible by 16"):
        create_method("autoencoder", create_model("lenet-mnist", out_features=20))


def test_detector_pretrains_then_trains(tmp_path):
    images = (torch.rand(80, 1, 28, 28) * 255).to(torch.uint8)
    base = {
        "model.name": "lenet-mnist",
        "model.out_features": 32,
        "train.epochs": 1,
        "train.batch_size": 16,
        "method.pretrain_epochs": 2,
        "calibration.holdout": 0.0,
    }
    plain = Detector(with_overrides(RunConfig(), base)).fit(images, progress=False)
    pre = Detector(with_overrides(RunConfig(), {**base, "method.pretrain": True})).fit(
        images, out_dir=tmp_path, progress=False
    )
    assert plain.fit_result_ is not None and [r["phase"] for r in plain.fit_result_.history] == ["train"]
    assert pre.fit_result_ is not None
    assert [r["phase"] for r in pre.fit_result_.history] == ["pretrain", "pretrain", "train"]
    assert (tmp_path / "history.jsonl").is_file() and (tmp_path / "checkpoint.pt").is_file()
    assert not torch.equal(pre.method_.center, plain.method_.center), "pretraining changed the initial network"


def test_mlp_autoencoder_reconstructs_features():
    net = create_model("mlp", in_features=5, hidden=(8,), out_features=3)
    ae = create_method("autoencoder", net)
    x = torch.randn(4, 5)
    assert ae.reconstruct(x).shape == (4, 5) and ae.score(x).shape == (4,)
