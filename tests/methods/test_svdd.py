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
