import numpy as np
import pytest
import torch
from torch import nn

from encircle.errors import ConfigError, DataError, TrainingError
from encircle.methods import SoftmaxClassifier
from encircle.methods.softmax import logit_score, shared_covariance_precision
from encircle.models.base import Backbone


class Features2(Backbone):
    """Features are the inputs; logits = W h with a fixed W."""

    out_features = 2

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(2))

    def forward_features(self, x):
        return x

    def forward_head(self, features):
        return self.fc(features)


def test_logit_scores_by_hand():
    logits = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    e = float(np.exp(2.0))
    assert torch.allclose(logit_score(logits, "msp"), torch.tensor([-e / (e + 1), -0.5]))
    assert torch.allclose(logit_score(logits, "max-logit"), torch.tensor([-2.0, -1.0]))
    assert torch.allclose(logit_score(logits, "energy"), torch.tensor([-float(np.log(e + 1)), -(1 + float(np.log(2)))]))


def test_mahalanobis_against_numpy():
    g = np.random.default_rng(0)
    h = g.normal(size=(200, 3)) + np.repeat(np.eye(3) * 4, [70, 70, 60], axis=0)
    y = np.repeat([0, 1, 2], [70, 70, 60])
    means, precision = shared_covariance_precision(torch.from_numpy(h), torch.from_numpy(y), 3, 0.0)
    mu = np.stack([h[y == k].mean(0) for k in range(3)])
    centered = h - mu[y]
    cov = centered.T @ centered / len(h)
    np.testing.assert_allclose(means.numpy(), mu, rtol=1e-12)
    np.testing.assert_allclose(precision.numpy(), np.linalg.inv(cov), rtol=1e-9)


def test_singular_covariance_is_an_error_and_shrinkage_fixes_it():
    h = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [5.0, 0.0]])  # no variance in dim 2
    y = torch.tensor([0, 0, 1, 1])
    with pytest.raises(TrainingError, match=r"singular \(rank 1 of 2 .*method.shrinkage"):
        shared_covariance_precision(h, y, 2, 0.0)
    _, precision = shared_covariance_precision(h, y, 2, 0.1)
    # within-class deviations +-0.5 (class 0) and +-1 (class 1): variance (2 * 0.25 + 2 * 1) / 4
    cov = torch.tensor([[0.625, 0.0], [0.0, 0.0]], dtype=torch.float64)
    shrunk = 0.9 * cov + 0.1 * (0.625 / 2) * torch.eye(2, dtype=torch.float64)
    assert torch.allclose(precision, torch.linalg.inv(shrunk))


def test_mahalanobis_score_after_finalize_and_state_round_trip():
    method = SoftmaxClassifier(Features2(), score_rule="mahalanobis")
    x = torch.tensor([[0.0, 1.0], [0.0, -1.0], [4.0, 1.0], [4.0, -1.0], [0.5, 0.0], [3.5, 0.0]])
    y = torch.tensor([0, 0, 1, 1, 0, 1])
    with pytest.raises(ConfigError, match="call finalize"):
        method.score(x)
    method.finalize([(x, y)])
    means, precision = shared_covariance_precision(x, y, 2, 0.0)
    probe = torch.tensor([[2.0, 0.0]])
    diff = probe.double() - means
    expected = torch.einsum("kd,de,ke->k", diff, precision, diff).min()
    assert method.score(probe).item() == pytest.approx(float(expected), rel=1e-6)
    copy = SoftmaxClassifier(Features2(), score_rule="mahalanobis")
    copy.load_state_dict(method.state_dict())
    assert torch.equal(copy.score(probe), method.score(probe))


def test_classify_predicts_argmax():
    method = SoftmaxClassifier(Features2(), score_rule="energy")
    classes, scores = method.classify(torch.tensor([[3.0, 1.0], [0.0, 2.0]]))
    assert classes.tolist() == [0, 1]
    assert scores.shape == (2,)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="score_rule must be one of"):
        SoftmaxClassifier(Features2(), score_rule="odin")
    with pytest.raises(ConfigError, match=r"shrinkage must be in \[0, 1\]"):
        SoftmaxClassifier(Features2(), shrinkage=2.0)
    with pytest.raises(DataError, match="got labels in"):
        SoftmaxClassifier(Features2()).setup([(torch.zeros(1, 2), torch.tensor([5]))])
