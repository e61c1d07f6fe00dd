import pytest
import torch
from torch import nn

from encircle.errors import ConfigError, DataError
from encircle.methods import DeepSVDD, create_method, list_methods
from encircle.models.base import Backbone


class Linear2(Backbone):
    """f(x) = W x with a fixed W, so outputs can be worked out by hand."""

    out_features = 2

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.01]]))

    def forward_features(self, x):
        return x

    def forward_head(self, features):
        return self.fc(features)


def batches(x):
    return [(x, torch.zeros(len(x), dtype=torch.int64))]


def test_center_is_mean_output_with_eps_rule():
    method = DeepSVDD(Linear2(), eps=0.1)
    x = torch.tensor([[1.0, 1.0], [3.0, 3.0]])  # outputs (1, .01), (3, .03): mean (2, .02)
    method.setup(batches(x))
    assert torch.allclose(method.center, torch.tensor([2.0, 0.1]))


def test_loss_and_score_by_hand():
    method = DeepSVDD(Linear2(), eps=0.1)
    method.setup(batches(torch.tensor([[1.0, 1.0], [3.0, 3.0]])))  # center (2, 0.1)
    x = torch.tensor([[2.0, 10.0], [0.0, 0.0]])  # outputs (2, 0.1) and (0, 0)
    assert torch.allclose(method.score(x), torch.tensor([0.0, 4.01]))
    assert method.loss(x, torch.zeros(2, dtype=torch.int64)).item() == pytest.approx(4.01 / 2)


def test_method_errors():
    with pytest.raises(ConfigError, match="center is not set"):
        DeepSVDD(Linear2()).score(torch.zeros(1, 2))
    with pytest.raises(ConfigError, match="method.eps must be >= 0"):
        DeepSVDD(Linear2(), eps=-1)
    with pytest.raises(DataError, match="at least one training sample"):
        DeepSVDD(Linear2()).setup([])
    with pytest.raises(ConfigError, match="unknown method 'svm'"):
        create_method("svm", Linear2())
    assert "deep-svdd" in list_methods()


def test_center_survives_state_dict():
    method = DeepSVDD(Linear2())
    method.setup(batches(torch.tensor([[1.0, 1.0], [3.0, 3.0]])))
    other = DeepSVDD(Linear2())
    other.load_state_dict(method.state_dict())
    assert torch.equal(other.center, method.center)
    assert bool(other.center_ready)


def test_soft_boundary_loss_score_and_radius_update_by_hand():
    method = DeepSVDD(Linear2(), objective="soft-boundary", nu=0.5, warm_up_epochs=1)
    method.setup(batches(torch.tensor([[1.0, 1.0], [3.0, 3.0]])))  # center (2, 0.1), R = 0
    x = torch.tensor([[2.0, 10.0], [0.0, 0.0], [4.0, 10.0]])  # distances 0, 4.01, 4
    y = torch.zeros(3, dtype=torch.int64)
    # R = 0: 0 + mean(0, 4.01, 4) / 0.5
    assert method.loss(x, y).item() == pytest.approx((4.01 + 4) / 3 / 0.5)
    method.after_step(epoch=0)  # still warming up: R unchanged
    assert method.radius.item() == 0.0
    method.after_step(epoch=1)  # R = 0.5 quantile of sqrt(0, 4.01, 4) = 2
    assert method.radius.item() == pytest.approx(2.0)
    assert torch.allclose(method.score(x), torch.tensor([-4.0, 0.01, 0.0]), atol=1e-5)


def test_soft_boundary_errors():
    with pytest.raises(ConfigError, match=r"method.nu must be in \(0, 1\], got 0"):
        DeepSVDD(Linear2(), objective="soft-boundary", nu=0)
    with pytest.raises(ConfigError, match=r"method.nu must be in \(0, 1\], got 1.5"):
        DeepSVDD(Linear2(), nu=1.5)
    with pytest.raises(ConfigError, match="method.objective must be one of"):
        DeepSVDD(Linear2(), objective="hard")
    with pytest.raises(ConfigError, match="method.radius_update must be one of"):
        DeepSVDD(Linear2(), radius_update="never")


@pytest.mark.parametrize("radius_update", ["batch", "epoch"])
def test_nu_property_on_real_digits(radius_update):
    """After training, about a fraction nu of the training points lies outside the sphere."""
    from sklearn.datasets import load_digits

    from encircle.config import RunConfig, with_overrides
    from encircle.detector import Detector

    x, y = load_digits(return_X_y=True)
    normal = torch.from_numpy(x[y == 0]).float()  # 178 real 8x8 digits
    config = with_overrides(
        RunConfig(),
        {
            "model.name": "mlp",
            "model.out_features": 8,
            "data.preprocess": "standardize",
            "method.objective": "soft-boundary",
            "method.nu": 0.2,
            "method.warm_up_epochs": 3,
            "method.radius_update": radius_update,
            "train.epochs": 15,
            "train.batch_size": 32,
            "train.lr": 1e-3,
            "calibration.holdout": 0.0,
        },
    )
    detector = Detector(config).fit(normal, progress=False)
    outside = (detector.score(normal) > 0).float().mean().item()
    assert detector.method_.radius.item() > 0
    assert 0.1 <= outside <= 0.3, outside
