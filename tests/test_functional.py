import pytest
import torch

from encircle.functional import (
    one_class_svdd_loss,
    soft_boundary_svdd_loss,
    squared_distances,
    svdd_center,
    svdd_radius,
)


def test_squared_distances_by_hand():
    z = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    centers = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    expected = torch.tensor([[0.0, 2.0], [25.0, 13.0]])  # (3-1)^2 + (4-1)^2 = 13
    assert torch.equal(squared_distances(z, centers), expected)
    assert torch.equal(squared_distances(z, centers[1]), expected[:, 1])


def test_squared_distances_keep_precision_near_the_center():
    # The expansion ||z||^2 - 2 z.c + ||c||^2 would cancel catastrophically here.
    c = torch.full((8,), 1000.0)
    z = c + 2.0**-10  # exactly representable in float32
    assert squared_distances(z.unsqueeze(0), c).item() == 8 * 2.0**-20


def test_svdd_center_eps_rule():
    mean = torch.tensor([0.05, -0.05, 0.0, 0.5, -0.2, 0.1])
    center = svdd_center(mean, eps=0.1)
    assert torch.allclose(center, torch.tensor([0.1, -0.1, 0.1, 0.5, -0.2, 0.1]))
    assert torch.equal(mean, torch.tensor([0.05, -0.05, 0.0, 0.5, -0.2, 0.1])), "input unchanged"


def test_one_class_loss_by_hand():
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    # ((1-0)^2 + 0) and (0 + (2-0)^2): mean of 1 and 4
    assert one_class_svdd_loss(squared_distances(z, torch.zeros(2))).item() == pytest.approx(2.5)
    # center (1, 1): distances 1 and 2 -> mean 1.5
    assert one_class_svdd_loss(squared_distances(z, torch.ones(2))).item() == pytest.approx(1.5)


def test_soft_boundary_loss_by_hand():
    dist = torch.tensor([0.5, 1.0, 3.0, 5.0])
    # R = 1: R^2 + 1/nu * mean(max(0, d - 1)) = 1 + (0 + 0 + 2 + 4) / 4 / 0.5 = 4
    assert soft_boundary_svdd_loss(dist, torch.tensor(1.0), nu=0.5).item() == pytest.approx(4.0)
    # R = 0: everything outside: 0 + mean(d) / 1
    assert soft_boundary_svdd_loss(dist, torch.tensor(0.0), nu=1.0).item() == pytest.approx(2.375)


def test_radius_is_the_quantile_of_distances():
    dist = torch.tensor([1.0, 4.0, 9.0, 16.0, 25.0])  # sqrt: 1..5
    # (1 - nu) = 0.75 quantile of 1,2,3,4,5 with linear interpolation: 4
    assert svdd_radius(dist, 0.25).item() == pytest.approx(4.0)
    # 0.9 quantile: 4 + 0.6 * (5 - 4) = 4.6
    assert svdd_radius(dist, 0.1).item() == pytest.approx(4.6)
