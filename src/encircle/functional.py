"""Pure tensor math shared by the methods: distances, losses and scores.

Everything here is a function of tensors only (no state, no modules), so it can be
tested against values worked out by hand and reused by every method.
"""

from __future__ import annotations

import torch


def squared_distances(z: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between embeddings and centers.

    ``d[i, k] = ||z_i - c_k||^2``, computed as a broadcast difference rather than the
    ``||z||^2 - 2 z.c + ||c||^2`` expansion: the expansion loses precision exactly where
    center-based methods live (points very close to a center), and the embeddings here
    are small (tens of dimensions), so the difference costs nothing.

    Args:
        z: ``(N, D)`` embeddings.
        centers: ``(K, D)`` centers, or ``(D,)`` for a single center.

    Returns:
        ``(N, K)`` distances, or ``(N,)`` when ``centers`` is 1-D.
    """
    if centers.ndim == 1:
        return (z - centers).pow(2).sum(dim=-1)
    return (z.unsqueeze(1) - centers.unsqueeze(0)).pow(2).sum(dim=-1)


def svdd_center(mean_output: torch.Tensor, eps: float = 0.1) -> torch.Tensor:
    """The Deep SVDD center from the mean of the network's initial outputs.

    Coordinates closer than ``eps`` to zero are pushed to ``+-eps`` (their sign kept;
    an exact zero goes to ``+eps``): a center coordinate at zero lets a bias-free network
    reach it trivially with zero weights (Ruff et al., ICML 2018, Sec. 3.3; the authors'
    code ``init_center_c``, which leaves an exact zero unchanged).

    Args:
        mean_output: ``(D,)`` mean of the network's outputs over the training data.
        eps: the smallest absolute value a coordinate may take.

    Returns:
        ``(D,)`` center.
    """
    c = mean_output.clone()
    small = c.abs() < eps
    c[small & (c < 0)] = -eps
    c[small & (c >= 0)] = eps
    return c


def one_class_svdd_loss(dist: torch.Tensor) -> torch.Tensor:
    """One-class Deep SVDD objective on squared distances: ``mean_i ||f(x_i) - c||^2``.

    Ruff et al., "Deep One-Class Classification", ICML 2018, Eq. (4), without the weight
    decay term, which the optimiser applies.
    """
    return dist.mean()


def soft_boundary_svdd_loss(dist: torch.Tensor, radius: torch.Tensor, nu: float) -> torch.Tensor:
    """Soft-boundary Deep SVDD objective on squared distances ``dist``.

    ``R^2 + (1 / nu) * mean_i max(0, ||f(x_i) - c||^2 - R^2)`` (Ruff et al., ICML 2018,
    Eq. 3, weight decay left to the optimiser). ``R`` is not optimised by gradient: the
    authors' code re-sets it from the distances (:func:`svdd_radius`).
    """
    r2 = radius.pow(2)
    return r2 + torch.clamp(dist - r2, min=0).mean() / nu


def svdd_radius(dist: torch.Tensor, nu: float) -> torch.Tensor:
    """The radius ``R`` that leaves a fraction ``nu`` of the points outside the sphere.

    ``R`` = the ``(1 - nu)`` quantile (linear interpolation, as ``np.quantile``) of the
    distances ``||f(x) - c||`` (not squared), as ``get_radius`` in the authors' code.
    """
    return torch.quantile(dist.detach().double().sqrt(), 1.0 - nu).to(dist.dtype)


def euclidean_distances(z: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Euclidean (not squared) distances ``d[i, k] = ||z_i - a_k||`` (CAC's anchors, MCHAD's centers).

    ``torch.linalg.vector_norm`` of the broadcast difference: its gradient at a zero
    distance is 0 rather than the NaN of ``sqrt(sum(...))``.
    """
    return torch.linalg.vector_norm(z.unsqueeze(1) - anchors.unsqueeze(0), dim=-1)


def cac_loss(distances: torch.Tensor, labels: torch.Tensor, lambda_anchor: float = 0.1) -> torch.Tensor:
    """Class Anchor Clustering loss (Miller et al., WACV 2021, Eq. 5-7), batch mean of

    ``log(1 + sum_{j != y} exp(d_y - d_j)) + lambda * d_y``

    with ``d`` the Euclidean distances to the fixed anchors. The tuplet term is computed
    as ``logsumexp_j (d_y - d_j)`` over *all* ``j``: the ``j = y`` term is ``exp(0) = 1``,
    the "1 +" of the formula, so only the ``K - 1`` non-target classes enter the sum -
    the mask that pytorch-ood 0.4.0 gets wrong - and large distances cannot overflow.

    Args:
        distances: ``(N, K)`` distances to the class anchors.
        labels: ``(N,)`` target classes in ``0..K-1``.
        lambda_anchor: weight of the anchor (pull) term.
    """
    target = distances.gather(1, labels.unsqueeze(1))
    tuplet = torch.logsumexp(target - distances, dim=1)
    return (tuplet + lambda_anchor * target.squeeze(1)).mean()


def cac_score(distances: torch.Tensor) -> torch.Tensor:
    """Class Anchor Clustering's open-set score ``min_k d_k * (1 - softmin(d)_k)``.

    Higher = more likely unknown (Miller et al., WACV 2021, Eq. 8): a sample must be
    close to one anchor *and* relatively far from the others to score low.
    """
    return (distances * (1 - torch.softmax(-distances, dim=1))).min(dim=1).values


def mchad_loss(
    distances: torch.Tensor,
    labels: torch.Tensor,
    *,
    weight_ce: float = 1.0,
    weight_center: float = 1.0,
    weight_oe: float = 1.0,
    margin: float = 0.0,
) -> torch.Tensor:
    """MCHAD loss (Kirchheim et al., ICPR 2022) on Euclidean distances to the class centers.

    With ``s_k = d_k^2`` the squared distances:

    ``L = w_ce * mean_known CE(-s, y) + w_center * mean_known s_y
    + w_oe * sum_outliers sum_k max(0, m^2 - s_k)``

    The classification term is the paper's ``L_Delta = log(1 + sum_{i != y} exp(s_y - s_i))``,
    a softmax over the *negative squared* distances (the authors' code feeds its squared
    distance matrix to the cross-entropy); the center term is the paper's ``L_Lambda``
    with radius 0; the outlier term is the paper's ``L_Theta`` (``(r + m)^2 - s_k`` with
    ``r = 0``). Known samples have labels ``0..K-1``, outliers ``-1``. The first two terms
    average over the known samples of the batch and the outlier term *sums* over its
    outliers (as the authors' code and pytorch-ood's ``MCHADLoss``, so ``w_oe`` keeps its
    scale there); a term without samples in the batch is 0. ``docs/mchad.md`` lists where
    the authors' code differs from the paper and which one this follows.

    Args:
        distances: ``(N, K)`` distances ``||f(x) - mu_k||``.
        labels: ``(N,)`` classes ``0..K-1`` or ``-1``.
        weight_ce, weight_center, weight_oe: the three weights.
        margin: outliers are pushed at least ``margin`` away from every center.
    """
    known = labels >= 0
    zero = distances.new_zeros(())
    squared = distances.pow(2)
    if bool(known.any()):
        s_known, y = squared[known], labels[known]
        ce = torch.nn.functional.cross_entropy(-s_known, y)
        center = s_known.gather(1, y.unsqueeze(1)).mean()
    else:
        ce = center = zero
    outlier = (margin**2 - squared[~known]).clamp(min=0).sum() if bool((~known).any()) else zero
    return weight_ce * ce + weight_center * center + weight_oe * outlier
