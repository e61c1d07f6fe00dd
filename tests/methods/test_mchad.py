import math

import pytest
import torch

from encircle.errors import ConfigError, DataError
from encircle.functional import mchad_loss
from encircle.methods import MCHAD, hyperparameters
from tests.methods.test_cac import Identity


def test_loss_by_hand_mixed_batch():
    d = torch.tensor([[1.0, 3.0], [2.0, 0.5], [1.0, 2.0]])
    y = torch.tensor([0, 1, -1])
    # softmax over the negative *squared* distances (the paper's L_Delta)
    ce = (
        -math.log(math.exp(-1) / (math.exp(-1) + math.exp(-9)))
        - math.log(math.exp(-0.25) / (math.exp(-4) + math.exp(-0.25)))
    ) / 2
    center = (1.0**2 + 0.5**2) / 2
    outlier = max(0.0, 4.0 - 1.0) + max(0.0, 4.0 - 4.0)  # margin 2: only the first center is too close
    loss = mchad_loss(d, y, weight_ce=0.5, weight_center=2.0, weight_oe=0.1, margin=2.0)
    assert loss.item() == pytest.approx(0.5 * ce + 2.0 * center + 0.1 * outlier, rel=1e-6)


def test_classification_term_is_the_papers_l_delta():
    """``log(1 + sum_{i != y} exp(s_y - s_i))`` with squared distances ``s``, by hand."""
    d = torch.tensor([[1.0, 2.0, 3.0]])
    expected = math.log(1 + math.exp(1 - 4) + math.exp(1 - 9))
    assert mchad_loss(d, torch.tensor([0]), weight_ce=1.0, weight_center=0.0, weight_oe=0.0).item() == pytest.approx(
        expected, rel=1e-6
    )


def test_outlier_only_batch_has_only_the_outlier_term():
    d = torch.tensor([[1.0, 3.0], [0.5, 0.5]])
    y = torch.tensor([-1, -1])
    expected = (9 - 1) + 0 + (9 - 0.25) * 2  # sum over outliers and centers of max(0, 3^2 - d^2)
    assert mchad_loss(d, y, weight_ce=7.0, weight_center=7.0, weight_oe=1.0, margin=3.0).item() == pytest.approx(
        expected
    )


def test_batch_without_outliers_has_no_outlier_term():
    d = torch.tensor([[0.0, 1.0]])
    with_oe = mchad_loss(d, torch.tensor([0]), weight_oe=100.0, margin=10.0)
    without = mchad_loss(d, torch.tensor([0]), weight_oe=0.0, margin=10.0)
    assert with_oe.item() == pytest.approx(without.item())


def test_centers_receive_gradients_and_outliers_touch_only_their_term():
    torch.manual_seed(0)
    method = MCHAD(Identity(2), num_classes=3, weight_ce=1.0, weight_center=1.0, weight_oe=1.0, margin=5.0)
    x = torch.tensor([[0.1, 0.2], [1.0, -1.0]])
    method.loss(x, torch.tensor([0, 2])).backward()
    grad = method.centers.grad
    assert grad is not None and bool(grad.abs().sum() > 0)
    method.zero_grad()
    # with only outliers, the loss is exactly the outlier term
    outlier_batch = torch.tensor([[0.3, 0.3]])
    d = torch.linalg.vector_norm(outlier_batch - method.centers.detach(), dim=1)
    expected = (25 - d.pow(2)).clamp(min=0).sum()
    assert method.loss(outlier_batch, torch.tensor([-1])).item() == pytest.approx(expected.item(), rel=1e-5)


def test_score_is_nearest_center_distance_and_class_its_index():
    method = MCHAD(Identity(2), num_classes=2)
    with torch.no_grad():
        method.centers.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0]]))
    classes, scores = method.classify(torch.tensor([[1.0, 0.0], [9.0, 0.0], [5.0, 5.0]]))
    assert classes.tolist() == [0, 1, 0]
    assert torch.allclose(scores, torch.tensor([1.0, 1.0, math.sqrt(50)]))


def test_bad_arguments():
    with pytest.raises(ConfigError, match="at least 2 known classes"):
        MCHAD(Identity(2), num_classes=1)
    with pytest.raises(ConfigError, match="method.margin must be >= 0"):
        MCHAD(Identity(2), num_classes=2, margin=-1.0)
    with pytest.raises(DataError, match="got labels in \\[-1, 4\\]"):
        MCHAD(Identity(2), num_classes=3).setup([(torch.zeros(2, 2), torch.tensor([-1, 4]))])


def test_defaults_are_the_authors_config():
    """kkirchheim/mchad, configs/experiment/cifar10-gmchad.yaml: w_ce 1.5, w_center 1.0,
    w_oe 1e-5, margin 4 (docs/mchad.md)."""
    defaults = {h.name: h.default for h in hyperparameters(MCHAD)}
    assert defaults == {"weight_ce": 1.5, "weight_center": 1.0, "weight_oe": 1e-5, "margin": 4.0}
