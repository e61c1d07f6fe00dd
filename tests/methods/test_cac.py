import math

import pytest
import torch

from encircle.errors import ConfigError, DataError
from encircle.functional import cac_loss, cac_score, euclidean_distances
from encircle.methods import ClassAnchorClustering, create_method
from encircle.models.base import Backbone


class Identity(Backbone):
    """f(x) = x: the logits are the inputs, so distances can be worked out by hand."""

    def __init__(self, out_features: int = 3) -> None:
        super().__init__()
        self.out_features = out_features
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward_features(self, x):
        return x * self.scale

    def forward_head(self, features):
        return features


def test_euclidean_distances_by_hand():
    z = torch.tensor([[10.0, 0.0], [0.0, 0.0]])
    d = euclidean_distances(z, 10 * torch.eye(2))
    assert torch.allclose(d, torch.tensor([[0.0, 10 * math.sqrt(2)], [10.0, 10.0]]))


def test_cac_loss_by_hand():
    d = torch.tensor([[1.0, 2.0, 3.0], [4.0, 1.0, 0.5]])
    y = torch.tensor([0, 2])
    first = math.log(1 + math.exp(1 - 2) + math.exp(1 - 3)) + 0.1 * 1.0
    second = math.log(1 + math.exp(0.5 - 4) + math.exp(0.5 - 1)) + 0.1 * 0.5
    assert cac_loss(d, y, 0.1).item() == pytest.approx((first + second) / 2, rel=1e-6)


def test_cac_loss_sums_over_non_targets_only():
    # pytorch-ood 0.4.0 builds a non-target mask that is never true; here the target
    # term exp(d_y - d_y) = 1 is the "1 +" and must not be counted twice
    d = torch.tensor([[0.0, 50.0]])  # far from the non-target: tuplet -> log(1 + e^-50) ~ 0
    assert cac_loss(d, torch.tensor([0]), 0.0).item() == pytest.approx(math.log1p(math.exp(-50)), abs=1e-12)


def test_cac_loss_is_finite_for_large_distances():
    d = torch.tensor([[1000.0, 1.0]])
    assert cac_loss(d, torch.tensor([0]), 0.1).item() == pytest.approx(999.0 + 100.0, rel=1e-6)


def test_cac_score_by_hand():
    d = torch.tensor([[1.0, 3.0]])
    softmin = [math.exp(-1) / (math.exp(-1) + math.exp(-3)), math.exp(-3) / (math.exp(-1) + math.exp(-3))]
    expected = min(1.0 * (1 - softmin[0]), 3.0 * (1 - softmin[1]))
    assert cac_score(d).item() == pytest.approx(expected, rel=1e-6)


def test_classify_is_nearest_anchor_and_score_matches():
    method = ClassAnchorClustering(Identity(3), alpha=10.0)
    x = torch.tensor([[9.0, 1.0, 0.0], [0.0, 0.0, 11.0]])
    classes, scores = method.classify(x)
    assert classes.tolist() == [0, 2]
    assert torch.allclose(scores, cac_score(euclidean_distances(x, 10 * torch.eye(3))))


def test_anchor_reestimation_uses_only_correctly_classified_samples():
    method = ClassAnchorClustering(Identity(2), alpha=10.0)
    x = torch.tensor([[8.0, 0.0], [12.0, 2.0], [9.0, 9.5], [1.0, 7.0]])
    y = torch.tensor([0, 0, 0, 1])  # the third sample is nearer anchor 1: misclassified
    method.finalize([(x, y)])
    assert torch.allclose(method.test_anchors, torch.tensor([[10.0, 1.0], [1.0, 7.0]]))
    assert torch.equal(method.anchors, 10 * torch.eye(2))  # the training anchors stay fixed


def test_class_without_correct_samples_keeps_its_anchor():
    method = ClassAnchorClustering(Identity(2), alpha=10.0)
    x = torch.tensor([[8.0, 0.0], [9.0, 1.0]])
    method.finalize([(x, torch.tensor([0, 1]))])  # class 1's only sample is nearer anchor 0
    assert torch.allclose(method.test_anchors[1], torch.tensor([0.0, 10.0]))


def test_reestimation_can_be_switched_off():
    method = ClassAnchorClustering(Identity(2), reestimate_anchors=False)
    method.finalize([(torch.tensor([[8.0, 0.0]]), torch.tensor([0]))])
    assert torch.equal(method.test_anchors, 10 * torch.eye(2))


def test_bad_arguments_and_labels():
    with pytest.raises(ConfigError, match="alpha must be > 0"):
        ClassAnchorClustering(Identity(2), alpha=0.0)
    with pytest.raises(ConfigError, match="lambda_anchor must be >= 0"):
        ClassAnchorClustering(Identity(2), lambda_anchor=-1.0)
    with pytest.raises(ConfigError, match="at least 2 known classes"):
        ClassAnchorClustering(Identity(1))
    method = create_method("cac", Identity(3))
    with pytest.raises(DataError, match=r"labels 0..2 .*got labels in \[0, 3\]"):
        method.setup([(torch.zeros(2, 3), torch.tensor([0, 3]))])
    with pytest.raises(DataError, match="unknown \\(-1\\) samples have no place"):
        method.setup([(torch.zeros(2, 3), torch.tensor([-1, 1]))])


def test_gradient_pulls_towards_the_target_anchor():
    net = Identity(2)
    method = ClassAnchorClustering(net)
    x = torch.tensor([[5.0, 5.0]])
    method.loss(x, torch.tensor([0])).backward()
    # scaling x up moves it along (1, 1); the target anchor (10, 0) is closer when x grows
    assert net.scale.grad is not None and torch.isfinite(net.scale.grad)
